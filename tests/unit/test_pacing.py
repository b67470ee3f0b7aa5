"""Pacing of hot-path work: at most once per interval."""

from __future__ import annotations

from services.orchestrator.pacing import Every


def test_due_at_first_then_not_again_within_the_interval() -> None:
    hourly = Every(3600)
    assert hourly.due()
    assert not hourly.due()


def test_an_interval_of_zero_is_always_due() -> None:
    always = Every(0)
    assert always.due() and always.due()
