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
from shared.engine.expression_context import Expression, ExpressionFailed, Scope, evaluate
from shared.engine.native import compile_native
from shared.profile import Profile

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
NAMES = ["Order Completed", "Product Viewed", "A"]
KEYS = ["price", "cart_id", "flag", "missing"]
# Values a field may hold, the awkward ones included: CEL decides those (and errors).
FIELD_VALUES = [25.0, 20, 0, -1, 2.5, "cart-1", "", "2.5", "A", True, False, None, [1], {"a": 1}]
# Beyond 2**53 an int and a double differ in Python and are equal in CEL (compared as doubles).
FIELD_VALUES += [2**53 + 1, 2.0**53, 2**63 - 1, 9.223372036854776e18]

literals = st.one_of(
    st.sampled_from(["true", "false", "null", "0", "2", "-1", "2.0", "0.5", "1e3", "2u"]),
    st.sampled_from(["9007199254740993", "9007199254740992.0", "9223372036854775807"]),
    st.sampled_from([*NAMES, "", "b'", 'x\\"y']).map(lambda s: f'"{s}"'),
    st.sampled_from(NAMES).map(lambda s: f"'{s}'"),
)
operands = st.one_of(
    literals,
    st.sampled_from(["event.name", "event.type", "now", "customer.id"]),
    st.tuples(
        st.sampled_from(
            ["event.properties", "event.traits", "trigger.properties", "customer.traits"]
        ),
        st.sampled_from(KEYS),
    ).map(".".join),
    st.sampled_from(KEYS).map(lambda k: f"has(event.properties.{k})"),
    st.sampled_from(KEYS).map(lambda k: f"has(trigger.properties.{k})"),
    st.sampled_from([*KEYS, "count('A')", "2", "'2'"]).map(
        lambda k: f"double({k if '(' in k or not k.isalpha() else 'event.properties.' + k})"
    ),
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
fields = st.dictionaries(st.sampled_from(KEYS[:-1]), st.sampled_from(FIELD_VALUES))
scopes = st.builds(
    lambda name, kind, counts, days, properties, traits, trigger: Scope(
        {"name": name, "type": kind, "properties": properties, "traits": traits},
        Profile(
            id="c1",
            traits=traits,
            counts=counts,
            last_at={n: int(NOW.timestamp()) - d * 86400 for n, d in days.items()},
        ),
        NOW,
        trigger=None if trigger is None else {"properties": trigger},
    ),
    st.sampled_from([None, *NAMES]),
    st.sampled_from(["track", "identify"]),
    st.dictionaries(st.sampled_from(NAMES), st.integers(0, 4)),
    st.dictionaries(st.sampled_from(NAMES), st.integers(0, 3)),
    fields,
    fields,
    st.one_of(st.none(), fields),
)


def _cel(source: str, scope: Scope) -> tuple[str, Any]:
    try:
        value = cel.compile(source).execute(scope.context)
    except Exception:  # noqa: BLE001 - any CEL failure is an outcome to compare
        return ("error", None)
    return (type(value).__name__, value)


def _ours(source: str, scope: Scope) -> tuple[str, Any]:
    """The engine's evaluation: native where it decides, CEL where it falls back."""
    try:
        value = evaluate(Expression(source, cel.compile(source), compile_native(source)), scope)
    except ExpressionFailed:
        return ("error", None)
    return (type(value).__name__, value)


@settings(max_examples=3000, deadline=None)
@given(expressions, scopes)
def test_native_results_equal_cel(source: str, scope: Scope) -> None:
    try:
        cel.compile(source)
    except ValueError:
        return  # rejected when the configuration is applied, never evaluated
    if compile_native(source) is None:
        return
    assert _ours(source, scope) == _cel(source, scope), source


@pytest.mark.parametrize(
    ("source", "taken"),
    [
        ("true", True),
        ('event.name in ["Product Viewed", "Products Searched"]', True),
        ('count("Order Completed") >= 3 || event.name == "Referral Sent"', True),
        ("!(days_since('Order Completed') < 30) && event.type == 'track'", True),
        ("double(event.properties.price) >= 20.0", True),
        ("event.properties.cart_id == trigger.properties.cart_id", True),
        ("has(event.properties.revenue) && double(event.properties.revenue) > 100.0", True),
        ("event.properties.cart_id", True),
        ("event.properties.price > 20.0", False),  # ordering of a field: use double()
        ("event.properties.a.b == 1", False),
        ("event.context.page == 'x'", False),
        ('event.name == "a" == true', False),  # chained relations are CEL type errors
        ("event.name || true", False),  # not a boolean: CEL's error, not ours
        ("count('A') == true", False),
    ],
)
def test_the_subset_is_what_the_module_says(source: str, taken: bool) -> None:
    assert (compile_native(source) is not None) is taken


def test_every_expression_of_the_demo_bundle_is_evaluated_natively() -> None:
    bundle = Bundle.model_validate(
        yaml.safe_load((ROOT / "bench" / "demo_bundle.yaml").read_text(encoding="utf-8"))
    )
    sources = [stage.when for journey in bundle.journeys for stage in journey.stages]
    for rule in bundle.rules:
        sources.append(rule.if_)
        if rule.wait is not None:
            sources += [rule.wait.key, rule.wait.unless and rule.wait.unless.match]
    found = [source for source in sources if source]
    assert len(found) > 10 and all(compile_native(source) is not None for source in found)


@pytest.mark.parametrize(
    ("source", "properties"),
    [
        ("event.properties.x == 9007199254740992.0", {"x": 2**53 + 1}),
        ("event.properties.x == event.properties.y", {"x": 2**63 - 1, "y": 9.223372036854776e18}),
        ("event.properties.x in [9007199254740993]", {"x": 2.0**53}),
        ("double(event.properties.x) < 9007199254740993", {"x": 2**53}),
        ("double(event.properties.x) == event.properties.x", {"x": 2**53 + 1}),
        ("count('A') in [1.0, 2.0]", {}),
    ],
)
def test_an_int_meets_a_double_as_a_double(source: str, properties: dict[str, Any]) -> None:
    scope = Scope(
        {"name": "A", "type": "track", "properties": properties, "traits": {}},
        Profile(id="c1", counts={"A": 2}),
        NOW,
    )
    assert compile_native(source) is not None
    assert _ours(source, scope) == _cel(source, scope), source
