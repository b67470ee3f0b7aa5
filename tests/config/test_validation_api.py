"""Every validation error over HTTP: 422 ``{"code","message"}`` naming the field and, for
expressions and templates, the position. Nothing invalid is stored or published."""

from __future__ import annotations

from typing import Any

import pytest

from tests.config.conftest import Api

pytestmark = pytest.mark.timeout(60)

RULE: dict[str, Any] = {
    "key": "thank-you",
    "trigger": {"event": "Order Completed"},
    "action": {
        "channel": "email",
        "to": "{{ customer.traits.email }}",
        "subject": "Thank you!",
        "body": "Hi {{ customer.traits.first_name }}",
    },
}
JOURNEY: dict[str, Any] = {
    "key": "signup",
    "stages": [{"key": "visited"}, {"key": "registered", "when": 'event.name == "Signed Up"'}],
}
WEBHOOK = {"channel": "webhook", "url": "https://crm.example/hook"}


def rule(**changes: Any) -> dict[str, Any]:
    return {**RULE, **changes}


def _nested(levels: int) -> dict[str, Any]:
    value: Any = "{{"
    for _ in range(levels):
        value = {"a": value}
    return value


CEL_AND_TEMPLATE_ERRORS = [
    # (rule changes, code, the message's start, the position it names)
    ({"if": "event.name =="}, "invalid_expression", "if: Syntax error", "line 1, column 14"),
    (
        {"if": 'event.name == "Order Completed" &&\n  order.total > 10'},
        "invalid_expression",
        "if: unknown name 'order'",
        "line 2, column 3",
    ),
    (
        {"wait": {"for": "30m", "key": "event.properties.cart_id +"}},
        "invalid_expression",
        "wait.key: Syntax error",
        "line 1, column 27",
    ),
    (
        {"wait": {"for": "30m", "unless": {"event": "X", "match": "cart_id == trigger.id"}}},
        "invalid_expression",
        "wait.unless.match: unknown name 'cart_id'",
        "line 1, column 1",
    ),
    (
        {"goal": {"event": "Order Completed", "within": "14d", "match": "event.revenue >"}},
        "invalid_expression",
        "goal.match: Syntax error",
        "line 1, column 16",
    ),
    (
        {"action": {**RULE["action"], "subject": "Hi {{ customer.traits.name }"}},
        "invalid_template",
        "action.subject: unexpected '}'",
        "at line 1",
    ),
    (
        {"action": {**RULE["action"], "body": "Hello,\n\n{% if customer.traits.vip %}VIP"}},
        "invalid_template",
        "action.body: Unexpected end of template",
        "at line 3",
    ),
    (
        {"action": {**RULE["action"], "html": "<p>{{ customer.id | shout }}</p>"}},
        "invalid_template",
        "action.html: No filter named 'shout'",
        "at line 1",
    ),
    (
        {"action": {**RULE["action"], "to": "{{ customer.traits.email"}},
        "invalid_template",
        "action.to: ",
        "at line 1",
    ),
    (
        {"action": {**WEBHOOK, "url": "https://crm.example/{{ customer.id }/x"}},
        "invalid_template",
        "action.url: ",
        "at line 1",
    ),
    (
        {"action": {**WEBHOOK, "headers": {"X-Customer": "{{ customer.id"}}},
        "invalid_template",
        "action.headers.X-Customer: ",
        "at line 1",
    ),
    (
        {"action": {**WEBHOOK, "payload": {"lines": [{"sku": "A"}, {"sku": "{% for %}"}]}}},
        "invalid_template",
        "action.payload.lines[1].sku: ",
        "at line 1",
    ),
    (
        {"action": {"channel": "kafka", "topic": "crm.{{ x", "payload": {}}},
        "invalid_template",
        "action.topic: ",
        "at line 1",
    ),
    (
        {"action": {"channel": "log", "message": "a\nb\n{{ }}"}},
        "invalid_template",
        "action.message: ",
        "at line 3",
    ),
    (
        {"action": {**WEBHOOK, "secret": "whsec_c2hvcnRrZXk="}},  # 8 bytes
        "invalid",
        "action.secret: ",
        "at least 16 bytes",
    ),
    (
        {
            "action": {
                **WEBHOOK,
                "url": "https://{{ customer.traits.host }}/h",
                "headers": {"A": "b"},
            }
        },
        "invalid",
        "action.headers: ",
        "host comes from a template",
    ),
]


@pytest.mark.parametrize(("changes", "code", "start", "position"), CEL_AND_TEMPLATE_ERRORS)
async def test_expression_and_template_errors_name_field_and_position(
    api: Api, changes: dict[str, Any], code: str, start: str, position: str
) -> None:
    published = len(await api.snapshots())
    for method, path in (("POST", "/v1/rules"), ("PUT", "/v1/rules/thank-you")):
        response = await api.client.request(method, path, json=rule(**changes), headers=api.editor)
        assert response.status_code == 422, response.text
        body = response.json()
        assert set(body) == {"code", "message"}
        assert body["code"] == code
        assert body["message"].startswith(start), body["message"]
        assert position in body["message"], body["message"]
    assert await api.ok("GET", "/v1/rules", headers=api.viewer) == []
    assert len(await api.snapshots()) == published


SHAPE_ERRORS = [
    # (rule changes, what the message must contain)
    ({"holdout": 1.0}, "holdout: Input should be less than 1"),
    ({"holdout": -0.5}, "holdout: Input should be greater than or equal to 0"),
    ({"wait": {"for": "0s"}}, "wait.for: Value error, the duration must be positive"),
    ({"wait": {"for": "30 minutes"}}, "wait.for: Value error, '30 minutes' is not a duration"),
    ({"wait": {"for": "99999999999999d"}}, "wait.for: Value error, '99999999999999d' is far too"),
    ({"wait": {"for": "400d"}}, "wait.for: Value error, 400d is longer than a year"),
    ({"wait": {"for": "1h", "grace": "-1m"}}, "wait.grace: Value error, '-1m' is not a duration"),
    ({"limits": {"max": 0, "per": "1d"}}, "limits.max: Input should be greater than or equal"),
    ({"limits": {"max": 1, "per": "0m"}}, "limits.per: Value error, the duration must be pos"),
    ({"goal": {"event": "Order Completed", "within": "soon"}}, "goal.within: Value error"),
    ({"quiet_hours": {"start": "9pm", "end": "08:00"}}, "quiet_hours.start: Value error, '9pm'"),
    ({"quiet_hours": {"start": "21:00", "end": "08:00", "timezone": "Moon/Base"}}, "time zone"),
    ({"trigger": {}}, "trigger: Value error, a trigger names exactly one"),
    ({"trigger": {"event": ""}}, "trigger.event: String should have at least 1 character"),
    ({"key": "Thank You"}, "key: String should match pattern"),
    ({"priority": -1}, "priority: Input should be greater than or equal to 0"),
    ({"iff": "true"}, "iff: Extra inputs are not permitted"),
    ({"if": ""}, "if: String should have at least 1 character"),
    ({"action": {"channel": "webhook"}}, "action: Value error, a webhook action needs url"),
    ({"action": {**WEBHOOK, "url": "ftp://x"}}, "must start with http:// or https://"),
    ({"action": {"channel": "email", "to": "x", "subject": "y"}}, "needs body or html"),
    ({"action": {"channel": "log", "message": "m", "to": "x"}}, "a log action has no to"),
    ({"action": {"channel": "sms", "message": "m"}}, "action.channel: Input should be"),
    ({"action": {"channel": "kafka", "topic": "safar.config"}}, "one of Safar's own topics"),
    (
        {"action": {"channel": "kafka", "topic": "t", "payload": _nested(200)}},
        "action.payload: Value error, a payload nests at most 16 levels deep",
    ),
]


@pytest.mark.parametrize(("changes", "message"), SHAPE_ERRORS)
async def test_shape_and_bound_errors_name_the_field(
    api: Api, changes: dict[str, Any], message: str
) -> None:
    response = await api.client.post("/v1/rules", json=rule(**changes), headers=api.editor)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid"
    assert message in response.json()["message"]
    assert await api.ok("GET", "/v1/rules", headers=api.viewer) == []


@pytest.mark.parametrize(
    ("journey", "code", "message"),
    [
        (
            {**JOURNEY, "stages": [{"key": "a"}, {"key": "b", "when": "event.name = 'x'"}]},
            "invalid_expression",
            "stages[1].when: Syntax error",
        ),
        (
            {**JOURNEY, "stages": [{"key": "a", "when": "\n  visits > 2"}]},
            "invalid_expression",
            "stages[0].when: unknown name 'visits'; use one of customer, event, now, trigger at "
            "line 2, column 3",
        ),
        ({**JOURNEY, "stages": []}, "invalid", "stages: List should have at least 1 item"),
        ({**JOURNEY, "stages": [{"key": "a"}, {"key": "a"}]}, "invalid", "'a' appears twice"),
        ({**JOURNEY, "key": "Sign Up"}, "invalid", "key: String should match pattern"),
        ({**JOURNEY, "allow_backwards": True}, "invalid", "allow_backwards: Extra inputs"),
    ],
)
async def test_journey_errors(api: Api, journey: dict[str, Any], code: str, message: str) -> None:
    for method, path in (("POST", "/v1/journeys"), ("PUT", "/v1/journeys/signup")):
        response = await api.client.request(method, path, json=journey, headers=api.editor)
        assert response.status_code == 422, response.text
        assert response.json()["code"] == code
        assert message in response.json()["message"]
    assert (await api.client.get("/v1/journeys/signup", headers=api.viewer)).status_code == 404


async def test_a_body_that_is_not_json_is_a_422_with_the_json_shape(api: Api) -> None:
    response = await api.client.post(
        "/v1/rules",
        content=b"{not json",
        headers={**api.editor, "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert set(response.json()) == {"code", "message"}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        # PostgreSQL text holds no NUL character.
        ("GET", "/v1/journeys/a%00b", None),
        ("GET", "/v1/rules/a%00b/versions", None),
        ("GET", "/v1/actions?customer_id=a%00b", None),
        ("GET", "/v1/audit?actor=%00", None),
        ("GET", "/v1/customers/a%00b/timeline", None),
        ("POST", "/v1/rules", rule(key="other", name="a\x00b")),
        ("POST", "/v1/api-keys", {"name": "a\x00b", "role": "viewer"}),
        # Numbers and times PostgreSQL cannot hold.
        ("GET", "/v1/actions?offset=99999999999999999999", None),
        ("GET", "/v1/audit?before=-99999999999999999999", None),
        ("GET", "/v1/customers/x/timeline?since=0001-01-01T00:00:00%2B01:00", None),
        ("GET", "/v1/rules/thank-you/stats?until=9999-12-31T23:59:59-10:00", None),
    ],
)
async def test_values_postgresql_cannot_hold_are_a_422(
    api: Api, method: str, path: str, body: dict[str, Any] | None
) -> None:
    await api.ok("POST", "/v1/rules", json=RULE)
    headers = api.admin if "api-keys" in path else api.editor
    response = await api.client.request(method, path, json=body, headers=headers)
    assert response.status_code == 422, response.text
    assert set(response.json()) == {"code", "message"}
    assert response.json()["code"] == "invalid"


async def test_a_payload_number_json_has_not_is_a_422(api: Api) -> None:
    body = '{"key": "r", "trigger": {"event": "E"}, "action": %s}'
    for number in ("NaN", "Infinity", "-Infinity"):
        action = '{"channel": "webhook", "url": "https://x.example", "payload": {"n": %s}}'
        response = await api.client.post(
            "/v1/rules",
            content=body % (action % number),
            headers={**api.editor, "Content-Type": "application/json"},
        )
        assert response.status_code == 422, response.text
        assert "a payload number must be finite" in response.json()["message"]
