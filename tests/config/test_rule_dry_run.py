"""POST /v1/rules/{key}/test: the orchestrator's engine on a given event and profile."""

from __future__ import annotations

from typing import Any

import pytest

from tests.config.conftest import Api

pytestmark = pytest.mark.timeout(60)

THANK_YOU: dict[str, Any] = {
    "key": "thank-you",
    "trigger": {"event": "Order Completed"},
    "if": "double(event.properties.revenue) >= 20.0",
    "action": {
        "channel": "email",
        "to": "{{ customer.traits.email }}",
        "subject": "Thank you, {{ customer.traits.name }}!",
        "body": "Your order {{ trigger.properties.order_id }} is on its way.",
    },
}
NUDGE: dict[str, Any] = {
    "key": "nudge",
    "trigger": {"event": "Product Added"},
    "wait": {"for": "30m", "key": "event.properties.cart_id"},
    "action": {
        "channel": "webhook",
        "url": "https://crm.example/n",
        "payload": {"cart": "{{ trigger.properties.cart_id }}"},
    },
}
LOYAL: dict[str, Any] = {
    "key": "loyal",
    "trigger": {"stage_entered": {"journey": "purchase", "stage": "loyalty"}},
    "action": {"channel": "log", "message": "welcome to loyalty, {{ customer.id }}"},
}


def order(revenue: float) -> dict[str, Any]:
    return {
        "event": {
            "event": "Order Completed",
            "properties": {"revenue": revenue, "order_id": "o-17"},
            "timestamp": "2026-11-25T10:00:00Z",
        },
        "profile": {"id": "ada", "traits": {"email": "ada@example.com", "name": "Ada"}},
    }


async def test_a_send_shows_the_condition_and_the_rendered_message(api: Api) -> None:
    await api.ok("POST", "/v1/rules", json=THANK_YOU)
    result = await api.ok("POST", "/v1/rules/thank-you/test", json=order(40), headers=api.viewer)
    assert result["triggered"] is True
    assert result["conditions"] == [
        {"field": "if", "source": THANK_YOU["if"], "result": True, "error": None}
    ]
    assert [d["outcome"] for d in result["decisions"]] == ["triggered", "fired"]
    assert result["stages_entered"] == ["purchase.purchase"]
    assert result["action"]["channel"] == "email"
    assert result["action"]["rendered"] == {
        "to": "ada@example.com",
        "subject": "Thank you, Ada!",
        "body": "Your order o-17 is on its way.",
    }


async def test_a_false_condition_sends_nothing(api: Api) -> None:
    await api.ok("POST", "/v1/rules", json=THANK_YOU)
    result = await api.ok("POST", "/v1/rules/thank-you/test", json=order(5), headers=api.viewer)
    assert result["conditions"][0]["result"] is False
    assert result["decisions"] == [] and result["action"] is None


async def test_a_wait_shows_what_would_be_scheduled(api: Api) -> None:
    await api.ok("POST", "/v1/rules", json=NUDGE)
    body = {
        "event": {
            "event": "Product Added",
            "properties": {"cart_id": "c9"},
            "timestamp": "2026-11-25T10:00:00Z",
        }
    }
    result = await api.ok("POST", "/v1/rules/nudge/test", json=body)
    assert result["scheduled"] == [{"key": "c9", "due": "2026-11-25T10:30:00Z"}]
    assert result["action"] is None


async def test_stage_entry_triggers_and_the_profile_counts(api: Api) -> None:
    await api.ok("POST", "/v1/rules", json=LOYAL)
    body = {
        "event": {"event": "Order Completed"},
        "profile": {
            "id": "bo",
            "counts": {"Order Completed": 2},
            "stages": {"purchase": "retention"},
        },
    }
    result = await api.ok("POST", "/v1/rules/loyal/test", json=body)
    assert result["triggered"] is True
    assert result["stages_entered"] == ["purchase.loyalty"]
    assert result["action"]["rendered"] == {"message": "welcome to loyalty, bo"}
    other = await api.ok("POST", "/v1/rules/loyal/test", json={"event": {"event": "Page Seen"}})
    assert other["triggered"] is False and other["action"] is None


async def test_unknown_rule_and_bad_body(api: Api) -> None:
    missing = await api.client.post("/v1/rules/nope/test", json=order(1), headers=api.viewer)
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    await api.ok("POST", "/v1/rules", json=THANK_YOU)
    bad = await api.client.post("/v1/rules/thank-you/test", json={"event": 3}, headers=api.viewer)
    assert bad.status_code == 422 and set(bad.json()) == {"code", "message"}
    early = {"event": {"event": "Order Completed", "timestamp": "0001-01-01T00:00:00+01:00"}}
    bad = await api.client.post("/v1/rules/thank-you/test", json=early, headers=api.viewer)
    assert bad.status_code == 422 and bad.json()["message"] == "event.timestamp is out of range"
    anonymous = await api.client.post("/v1/rules/thank-you/test", json=order(1))
    assert anonymous.status_code == 401
