"""The native fast path gives CEL's answer on every expression it takes, and leaves the rest
to CEL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cel
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.definitions import Bundle
from shared.engine.expression_context import Scope
from shared.engine.native import compile_native
from shared.profile import Profile

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
NAMES = ["Order Completed", "Product Viewed", "A"]

literals = st.one_of(
    st.sampled_from(["true", "false", "null", "0", "2", "-1", "2.0", "0.5", "1e3", "2u"]),
    st.sampled_from([*NAMES, "", "b'", 'x\\"y']).map(lambda s: f'"{s}"'),
    st.sampled_from(NAMES).map(lambda s: f"'{s}'"),
)
operands = st.one_of(
    literals,
    st.sampled_from(["event.name", "event.type", "event.properties.price", "now", "customer.id"]),
    st.sampled_from(NAMES).map(lambda n: f'count("{n}")'),
    st.sampled_from(NAMES).map(lambda n: f"days_since('{n}')"),
)
lists = st.lists(literals, max_size=3).map(lambda items: f"[{', '.join(items)}]")
relations = st.one_of(
    operands,
    st.tuples(operands, st.sampled_from(["==", "!=", "<", "<=", ">", ">="]), operands).map(
        " ".join
    ),
    st.tuples(operands, lists).map(lambda t: f"{t[0]} in {t[1]}"),
)
expressions = st.recursive(
    relations,
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["&&", "||"]), inner).map(" ".join),
        inner.map(lambda e: f"!({e})"),
        inner.map(lambda e: f"({e})"),
        inner.map(lambda e: f"!{e}"),
    ),
    max_leaves=6,
)
scopes = st.builds(
    lambda name, kind, counts, days: Scope(
        {"name": name, "type": kind, "properties": {"price": 25.0}},
        Profile(
            id="c1",
            counts=counts,
            last_at={n: int(NOW.timestamp()) - d * 86400 for n, d in days.items()},
        ),
        NOW,
    ),
    st.sampled_from([None, *NAMES]),
    st.sampled_from(["track", "identify"]),
    st.dictionaries(st.sampled_from(NAMES), st.integers(0, 4)),
    st.dictionaries(st.sampled_from(NAMES), st.integers(0, 3)),
)


def _cel(source: str, scope: Scope) -> tuple[str, Any]:
    try:
        value = cel.compile(source).execute(scope.context)
    except Exception as exc:  # noqa: BLE001 - any CEL failure is an outcome to compare
        return ("error", type(exc).__name__)
    return (type(value).__name__, value)


@settings(max_examples=1500, deadline=None)
@given(expressions, scopes)
def test_native_results_equal_cel(source: str, scope: Scope) -> None:
    try:
        cel.compile(source)
    except ValueError:
        return  # rejected when the configuration is applied, never evaluated
    native = compile_native(source)
    if native is None:
        return
    value = native(scope)
    assert (type(value).__name__, value) == _cel(source, scope), source


@pytest.mark.parametrize(
    ("source", "taken"),
    [
        ("true", True),
        ('event.name in ["Product Viewed", "Products Searched"]', True),
        ('count("Order Completed") >= 3 || event.name == "Referral Sent"', True),
        ("!(days_since('Order Completed') < 30) && event.type == 'track'", True),
        ("double(event.properties.price) >= 20.0", False),
        ("event.properties.cart_id == trigger.properties.cart_id", False),
        ('event.name == "a" == true', False),  # chained relations are CEL type errors
        ("event.name || true", False),  # not a boolean: CEL's error, not ours
        ("count('A') == true", False),
    ],
)
def test_the_subset_is_what_the_module_says(source: str, taken: bool) -> None:
    assert (compile_native(source) is not None) is taken


def test_every_stage_of_the_demo_journey_is_evaluated_natively() -> None:
    bundle = Bundle.model_validate(
        yaml.safe_load((ROOT / "bench" / "demo_bundle.yaml").read_text(encoding="utf-8"))
    )
    whens = [stage.when for journey in bundle.journeys for stage in journey.stages]
    assert whens and all(compile_native(when) is not None for when in whens)
