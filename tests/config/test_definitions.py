"""The canonical definition model and its checks, with plain data (no services)."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from services.api.config.diff import FieldChange, field_changes
from shared.definition_checks import (
    DefinitionError,
    TemplateError,
    check_bundle,
    check_bundle_policy,
    check_rule,
)
from shared.definitions import Bundle, ConfigSnapshot, QuietHours, Rule
from shared.durations import format_duration, parse_duration
from shared.expressions import ExpressionError

THANK_YOU: dict[str, Any] = {
    "key": "thank-you",
    "trigger": {"event": "Order Completed"},
    "action": {
        "channel": "email",
        "to": "{{ customer.traits.email }}",
        "subject": "Thank you!",
        "body": "Hi {{ customer.traits.first_name | default('there') }}",
    },
}


def rule(**changes: Any) -> dict[str, Any]:
    return {**THANK_YOU, **changes}


def _nested(levels: int) -> dict[str, Any]:
    value: Any = "{{ customer.id }}"
    for _ in range(levels):
        value = {"a": value}
    return value


def test_a_payload_may_nest_sixteen_levels() -> None:
    check_rule(
        Rule.model_validate(rule(action={"channel": "kafka", "topic": "t", "payload": _nested(16)}))
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("30m", timedelta(minutes=30)),
        ("24h", timedelta(hours=24)),
        ("14d", timedelta(days=14)),
        ("2w", timedelta(weeks=2)),
        ("1.5h", timedelta(minutes=90)),
        ("500ms", timedelta(milliseconds=500)),
        (45, timedelta(seconds=45)),
    ],
)
def test_durations_parse(text: object, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["30", "30 minutes", "-5m", "m", "", "1d2h", True])
def test_durations_refuse_what_is_not_one(text: object) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_an_absurd_duration_is_a_value_error_not_an_overflow() -> None:
    with pytest.raises(ValueError, match="far too long"):
        parse_duration("99999999999999999d")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(seconds=90), "90s"),
        (timedelta(minutes=30), "30m"),
        (timedelta(days=14), "14d"),
        (timedelta(hours=24), "1d"),
        (timedelta(days=3), "3d"),
        (timedelta(0), "0s"),
        (timedelta(milliseconds=1500), "1500ms"),
    ],
)
def test_durations_format_shortest_exact(value: timedelta, text: str) -> None:
    assert format_duration(value) == text
    assert parse_duration(text) == value


def test_a_rule_round_trips_through_its_json_form() -> None:
    source = rule(
        priority=50,
        wait={
            "for": "30m",
            "grace": "2m",
            "key": "event.properties.cart_id",
            "unless": {"event": "Order Completed", "match": "true"},
        },
        limits={"max": 1, "per": "24h"},
        quiet_hours={"start": "21:00", "end": "08:00", "timezone": "Europe/Berlin"},
        goal={"event": "Order Completed", "within": "14d"},
        holdout=0.1,
        **{"if": "count('Order Completed') == 1"},
    )
    parsed = Rule.model_validate(source)
    assert parsed.wait is not None and parsed.wait.for_ == timedelta(minutes=30)
    document = parsed.document()
    assert document["wait"]["for"] == "30m"
    assert document["if"] == "count('Order Completed') == 1"
    assert Rule.model_validate(document) == parsed
    assert "enabled" not in parsed.content()


def test_yaml_base_60_clock_times_are_taken_back() -> None:
    # PyYAML reads an unquoted 21:00 as 1260.
    hours = QuietHours.model_validate({"start": 1260, "end": "08:00"})
    assert (hours.start, hours.end) == ("21:00", "08:00")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"holdout": 1.0}, "less than 1"),
        ({"holdout": -0.1}, "greater than or equal to 0"),
        ({"wait": {"for": "0s"}}, "must be positive"),
        ({"wait": {"for": "400d"}}, "longer than a year"),
        ({"limits": {"max": 0, "per": "1d"}}, "greater than or equal to 1"),
        ({"goal": {"event": "Order Completed", "within": "0m"}}, "must be positive"),
        ({"quiet_hours": {"start": "25:00", "end": "08:00"}}, "not a time of day"),
        ({"quiet_hours": {"start": "21:00", "end": "21:00"}}, "different times"),
        ({"quiet_hours": {"start": "21:00", "end": "08:00", "timezone": "Mars/Olympus"}}, "zone"),
        ({"trigger": {}}, "exactly one"),
        (
            {"trigger": {"event": "A", "stage_entered": {"journey": "j", "stage": "s"}}},
            "exactly one",
        ),
        ({"key": "Thank You"}, "should match pattern"),
        ({"iff": "true"}, "Extra inputs are not permitted"),
        ({"action": {"channel": "webhook"}}, "needs url"),
        ({"action": {"channel": "webhook", "url": "ftp://x"}}, "http:// or https://"),
        ({"action": {"channel": "email", "to": "a", "subject": "b"}}, "body or html"),
        ({"action": {"channel": "log", "message": "m", "url": "https://x"}}, "has no url"),
        ({"action": {"channel": "sms", "message": "m"}}, "channel"),
        (
            {"action": {"channel": "kafka", "topic": "t", "payload": _nested(17)}},
            "at most 16 levels",
        ),
    ],
)
def test_shape_errors(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Rule.model_validate(rule(**changes))


@pytest.mark.parametrize(
    ("changes", "field", "position"),
    [
        ({"if": "event.name =="}, "if", "line 1, column 14"),
        ({"if": "customer.traits.vip &&\n  order.total > 1"}, "if", "line 2, column 3"),
        ({"wait": {"for": "1h", "key": "event.properties["}}, "wait.key", "line 1"),
        (
            {"wait": {"for": "1h", "unless": {"event": "X", "match": "cart == 1"}}},
            "wait.unless.match",
            "line 1, column 1",
        ),
        ({"goal": {"event": "X", "within": "1d", "match": "1 +"}}, "goal.match", "line 1"),
    ],
)
def test_expression_errors_name_the_field_and_position(
    changes: dict[str, Any], field: str, position: str
) -> None:
    with pytest.raises(ExpressionError) as caught:
        check_rule(Rule.model_validate(rule(**changes)))
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")
    assert position in str(caught.value)


@pytest.mark.parametrize(
    ("action", "field", "line"),
    [
        ({"channel": "log", "message": "hi {{ customer.id }"}, "action.message", 1),
        ({"channel": "log", "message": "a\n{% if x %}b"}, "action.message", 2),
        ({"channel": "log", "message": "{{ x | no_such_filter }}"}, "action.message", 1),
        (
            {"channel": "webhook", "url": "https://x/{{ customer.id", "payload": {}},
            "action.url",
            1,
        ),
        (
            {"channel": "webhook", "url": "https://x", "headers": {"X-Id": "{% end %}"}},
            "action.headers.X-Id",
            1,
        ),
        (
            {
                "channel": "webhook",
                "url": "https://x",
                "payload": {"items": [{"sku": "ok"}, {"sku": "{{ trigger.properties.sku"}]},
            },
            "action.payload.items[1].sku",
            1,
        ),
        (
            {"channel": "kafka", "topic": "t", "payload": {"a": {"b": "{{"}}},
            "action.payload.a.b",
            1,
        ),
        (
            {"channel": "email", "to": "x", "subject": "s", "html": "<p>\n\n{{ }}</p>"},
            "action.html",
            3,
        ),
    ],
)
def test_template_errors_name_the_field_and_line(
    action: dict[str, Any], field: str, line: int
) -> None:
    with pytest.raises(TemplateError) as caught:
        check_rule(Rule.model_validate(rule(action=action)))
    assert caught.value.field == field
    assert caught.value.line == line
    assert str(caught.value).startswith(f"{field}: ")
    assert str(caught.value).endswith(f"at line {line}")


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("whsec_{{ customer.id }}", "must be whsec_ followed by base64"),
        ("whsec_", "is empty"),
        ("whsec_" + base64.b64encode(b"k" * 15).decode(), "at least 16 bytes"),
    ],
)
def test_a_webhook_secret_is_a_key_of_16_bytes_or_more(secret: str, message: str) -> None:
    action = {"channel": "webhook", "url": "https://x", "secret": secret}
    parsed = Rule.model_validate(rule(action=action))  # a stored rule still loads...
    with pytest.raises(DefinitionError, match=message) as caught:
        check_rule(parsed)  # ...but cannot be saved
    assert caught.value.field == "action.secret"
    assert secret not in str(caught.value)
    good = "whsec_" + base64.b64encode(b"k" * 16).decode()
    check_rule(Rule.model_validate(rule(action=action | {"secret": good})))


def test_an_unreadable_snapshot_error_does_not_quote_header_values() -> None:
    action = {"channel": "webhook", "url": "https://x", "headers": {"A": "Bearer tok-1"}}
    bad = {"version": 1, "bundle": {"rules": [rule(action=action, holdout=2)]}}
    with pytest.raises(ValidationError) as caught:
        ConfigSnapshot.model_validate(bad)
    assert "tok-1" not in str(caught.value)


def test_bundle_checks_prefix_the_item() -> None:
    bundle = Bundle.model_validate(
        {
            "journeys": [{"key": "j", "stages": [{"key": "a"}, {"key": "b", "when": "x == 1"}]}],
            "rules": [THANK_YOU],
        }
    )
    with pytest.raises(ExpressionError, match=r"^journeys\[0\]\.stages\[1\]\.when: unknown"):
        check_bundle(bundle)
    bundle = Bundle.model_validate({"rules": [THANK_YOU, rule(key="other", **{"if": "("})]})
    with pytest.raises(ExpressionError, match=r"^rules\[1\]\.if: "):
        check_bundle(bundle)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"rules": [THANK_YOU, THANK_YOU]}, "rule keys must be unique: thank-you"),
        (
            {"rules": [rule(trigger={"stage_entered": {"journey": "nope", "stage": "a"}})]},
            "unknown journey 'nope'",
        ),
        (
            {
                "journeys": [{"key": "j", "stages": [{"key": "a"}]}],
                "rules": [rule(trigger={"stage_entered": {"journey": "j", "stage": "b"}})],
            },
            "unknown stage 'b' of 'j'",
        ),
        ({"journeys": [{"key": "j", "stages": [{"key": "a"}, {"key": "a"}]}]}, "appears twice"),
        ({"journeys": [{"key": "j", "stages": []}]}, "at least 1 item"),
    ],
)
def test_bundle_references_and_keys(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Bundle.model_validate(data)


def test_snapshot_carries_rule_versions() -> None:
    bundle = Bundle.model_validate({"rules": [THANK_YOU]})
    snapshot = ConfigSnapshot(version=3, bundle=bundle, rule_versions={"thank-you": 4})
    again = ConfigSnapshot.model_validate_json(snapshot.to_json())
    assert again.rule_version("thank-you") == 4
    assert again.rule_version("older") == 1
    assert again.bundle == bundle


def test_field_changes_point_at_leaves() -> None:
    before = {"wait": {"for": "30m"}, "stages": [{"key": "a"}, {"key": "b"}], "name": "x"}
    after = {"wait": {"for": "45m"}, "stages": [{"key": "a"}], "holdout": 0.1, "name": "x"}
    assert field_changes(before, after) == [
        FieldChange("wait.for", "30m", "45m"),
        FieldChange("stages[1]", {"key": "b"}, None),
        FieldChange("holdout", None, 0.1),
    ]
    assert field_changes(before, before) == []


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("{{ customer.traits.hook }}", True),
        ("https://{{ customer.traits.host }}/hook", True),
        ("https://crm.example{% if true %}.evil{% endif %}/hook", True),
        ("https://{{ customer.traits.tenant }}.crm.example/hook", True),
        ("https://crm.example{#x#}{{ trigger.properties.h }}/hook", True),  # a comment cut
        ("https://crm.example/hooks/{{ customer.id }}?c={{ trigger.name }}", False),
        ("https://crm.example:8443/hook#{{ rule.key }}", False),
    ],
)
def test_headers_never_go_to_a_host_a_template_chooses(url: str, refused: bool) -> None:
    action = {"channel": "webhook", "url": url, "headers": {"Authorization": "Bearer t"}}
    parsed = Rule.model_validate(rule(action=action))
    if refused:
        with pytest.raises(DefinitionError, match="host comes from a template"):
            check_rule(parsed)
    else:
        check_rule(parsed)
    check_rule(Rule.model_validate(rule(action={"channel": "webhook", "url": url})))


def test_an_unchanged_rule_saved_before_the_policy_checks_still_applies() -> None:
    short = "whsec_" + base64.b64encode(b"k" * 8).decode()
    legacy = rule(action={"channel": "webhook", "url": "https://x", "secret": short})
    bundle = Bundle.model_validate({"rules": [legacy]})
    check_bundle(bundle)  # expressions and templates: yes; the secret's length: not here
    check_bundle_policy(bundle, keys=set())  # applied again as it is
    with pytest.raises(DefinitionError, match=r"^rules\[0\]\.action\.secret: "):
        check_bundle_policy(bundle, keys={legacy["key"]})  # created or changed now
