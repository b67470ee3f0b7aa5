"""The example bundles apply cleanly, compile for the orchestrator and cover DESIGN §1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shared.engine.compiled import CompiledConfig
from tests.config.conftest import Api

pytestmark = pytest.mark.timeout(60)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize(
    ("name", "stages", "rules"),
    [
        (
            "online-shop",
            {
                "purchase": [
                    "awareness",
                    "consideration",
                    "decision",
                    "purchase",
                    "retention",
                    "loyalty",
                ]
            },
            {"thank-you", "abandoned-cart", "loyalty-offer", "delivery-follow-up"},
        ),
        (
            "clothing-store",
            {
                "fashion": [
                    "awareness",
                    "comparison",
                    "decision",
                    "purchase",
                    "returns",
                    "regular",
                ]
            },
            {"return-label", "exchange-offer", "regular-customer-perk"},
        ),
        (
            "bank",
            {
                "banking": [
                    "awareness",
                    "comparison",
                    "account",
                    "transacting",
                    "regular",
                    "advocate",
                ],
                "account-opening": ["started", "documents", "verified", "rejected", "opened"],
            },
            {"application-reminder", "welcome", "savings-offer", "referral-invite"},
        ),
    ],
)
async def test_an_example_applies_and_compiles(
    api: Api, name: str, stages: dict[str, list[str]], rules: set[str]
) -> None:
    body = (EXAMPLES / f"{name}.yaml").read_bytes()
    result = await api.ok("POST", "/v1/config/apply", content=body)
    assert result["config_version"] is not None
    snapshot = (await api.snapshots())[-1]
    assert snapshot.version == result["config_version"]
    assert {j.key: [s.key for s in j.stages] for j in snapshot.bundle.journeys} == stages
    assert rules <= {r.key for r in snapshot.bundle.rules}
    compiled = CompiledConfig.compile(snapshot)
    assert [j.key for j in compiled.journeys] == list(stages)

    again = await api.ok("POST", "/v1/config/apply", content=body)
    assert again["changes"] == []
    assert again["unchanged"] == len(stages) + len(snapshot.bundle.rules)


ADA = {"id": "ada", "traits": {"email": "ada@example.com", "first_name": "Ada"}}
AT = "2026-11-25T10:00:00Z"  # 11:00 in Berlin and Paris, 10:00 in London: no quiet hours


@pytest.mark.parametrize(
    ("name", "rule", "body", "decisions", "entered", "scheduled", "action"),
    [
        (
            "online-shop",
            "thank-you",
            {
                "event": {
                    "event": "Order Completed",
                    "properties": {"order_id": "o-42", "revenue": 60},
                    "timestamp": AT,
                },
                "profile": {**ADA, "stages": {"purchase": "decision"}},
            },
            ["triggered", "fired"],
            ["purchase.purchase"],
            [],
            {
                "channel": "email",
                "rendered": {
                    "to": "ada@example.com",
                    "subject": "Thank you for your order o-42!",
                    "body": "Hi Ada,\n\nthank you for shopping with us. We will let you know as "
                    "soon as your order ships.\n",
                },
            },
        ),
        (
            "online-shop",
            "abandoned-cart",
            {
                "event": {
                    "event": "Product Added",
                    "properties": {"cart_id": "k-7", "price": 25.0, "name": "Boots"},
                    "timestamp": AT,
                },
                "profile": {**ADA, "stages": {"purchase": "consideration"}},
            },
            ["triggered", "scheduled"],
            ["purchase.decision"],
            [{"key": "k-7", "due": "2026-11-25T10:32:00Z"}],  # 30m, and 2m of grace
            None,
        ),
        (
            "clothing-store",
            "return-label",
            {
                "event": {
                    "event": "Return Requested",
                    "properties": {"order_id": "o-9", "skus": ["tee-m", "jeans-32"]},
                    "timestamp": AT,
                },
                "profile": {**ADA, "stages": {"fashion": "purchase"}},
            },
            ["triggered", "fired"],
            ["fashion.returns"],
            [],
            {
                "channel": "webhook",
                "rendered": {
                    "url": "https://returns.example/labels",
                    "headers": {},
                    "payload": {"order_id": "o-9", "items": "tee-m,jeans-32"},
                },
            },
        ),
        (
            "bank",
            "welcome",
            {
                "event": {"event": "Account Opened", "timestamp": AT},
                "profile": {
                    **ADA,
                    "stages": {"banking": "comparison", "account-opening": "verified"},
                },
            },
            ["triggered", "fired"],
            ["banking.account", "account-opening.opened"],
            [],
            {
                "channel": "email",
                "rendered": {
                    "to": "ada@example.com",
                    "subject": "Welcome, Ada",
                    "body": "Your account is open. Your card is on its way.",
                },
            },
        ),
    ],
)
async def test_an_example_rule_decides_a_sample_event(
    api: Api,
    name: str,
    rule: str,
    body: dict[str, Any],
    decisions: list[str],
    entered: list[str],
    scheduled: list[dict[str, str]],
    action: dict[str, Any] | None,
) -> None:
    await api.ok("POST", "/v1/config/apply", content=(EXAMPLES / f"{name}.yaml").read_bytes())
    result = await api.ok("POST", f"/v1/rules/{rule}/test", json=body, headers=api.viewer)
    assert result["triggered"] is True
    assert [d["outcome"] for d in result["decisions"]] == decisions
    assert all(c["result"] is True for c in result["conditions"]), result["conditions"]
    assert sorted(result["stages_entered"]) == sorted(entered)
    assert result["scheduled"] == scheduled
    if action is None:
        assert result["action"] is None
    else:
        assert {k: result["action"][k] for k in ("channel", "rendered", "error")} == {
            **action,
            "error": None,
        }
