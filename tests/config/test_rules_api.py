"""Rules over HTTP: CRUD, versions, enable/disable, references, snapshots, audit log."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from shared.engine.compiled import CompiledConfig
from tests.config.conftest import ADMIN_NAME, Api

pytestmark = pytest.mark.timeout(60)

ABANDONED_CART: dict[str, Any] = {
    "key": "abandoned-cart",
    "priority": 50,
    "trigger": {"event": "Product Added"},
    "if": "double(event.properties.price) >= 20.0",
    "wait": {
        "for": "30m",
        "key": "event.properties.cart_id",
        "grace": "2m",
        "unless": {
            "event": "Order Completed",
            "match": "event.properties.cart_id == trigger.properties.cart_id",
        },
    },
    "limits": {"max": 1, "per": "24h"},
    "quiet_hours": {"start": "21:00", "end": "08:00"},
    "action": {
        "channel": "webhook",
        "url": "https://crm.example/nudge",
        "payload": {
            "cart": "{{ trigger.properties.cart_id }}",
            "email": "{{ customer.traits.email }}",
        },
    },
}
LOYALTY: dict[str, Any] = {
    "key": "loyalty-offer",
    "trigger": {"stage_entered": {"journey": "purchase", "stage": "loyalty"}},
    "holdout": 0.1,
    "goal": {"event": "Order Completed", "within": "14d"},
    "action": {"channel": "webhook", "url": "https://crm.example/loyalty"},
}


async def test_create_read_list_and_conflict(api: Api) -> None:
    created = await api.client.post("/v1/rules", json=ABANDONED_CART, headers=api.editor)
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["key"], body["version"], body["enabled"]) == ("abandoned-cart", 1, True)
    definition = body["definition"]
    assert definition["if"] == ABANDONED_CART["if"]
    assert definition["wait"]["for"] == "30m"
    assert definition["wait"]["grace"] == "2m"
    assert definition["limits"] == {"max": 1, "per": "1d"}  # the shortest exact spelling
    assert definition["action"]["payload"] == ABANDONED_CART["action"]["payload"]
    assert "html" not in definition["action"]  # nulls are left out

    assert await api.ok("GET", "/v1/rules/abandoned-cart", headers=api.viewer) == body
    listed = await api.ok("GET", "/v1/rules", headers=api.viewer)
    assert [r["key"] for r in listed] == ["abandoned-cart"]

    again = await api.client.post("/v1/rules", json=ABANDONED_CART, headers=api.editor)
    assert again.status_code == 409
    assert again.json() == {
        "code": "conflict",
        "message": "rule 'abandoned-cart' exists; PUT replaces it",
    }
    missing = await api.client.get("/v1/rules/nope", headers=api.viewer)
    assert missing.status_code == 404
    assert missing.json() == {"code": "not_found", "message": "no rule 'nope'"}


async def test_every_change_is_a_version_and_the_same_rule_is_not(api: Api) -> None:
    await api.ok("POST", "/v1/rules", json=ABANDONED_CART)
    longer = {**ABANDONED_CART, "wait": {**ABANDONED_CART["wait"], "for": "45m"}}
    replaced = await api.ok("PUT", "/v1/rules/abandoned-cart", json=longer)
    assert replaced["version"] == 2
    same = await api.client.put("/v1/rules/abandoned-cart", json=longer, headers=api.editor)
    assert same.status_code == 200
    assert same.json()["version"] == 2

    versions = await api.ok("GET", "/v1/rules/abandoned-cart/versions", headers=api.viewer)
    assert [v["version"] for v in versions] == [1, 2]
    assert [v["definition"]["wait"]["for"] for v in versions] == ["30m", "45m"]
    assert {v["actor"] for v in versions} == {"editor key"}
    assert "enabled" not in versions[0]["definition"]

    created = await api.client.put(
        "/v1/rules/second", json={**ABANDONED_CART, "key": "second"}, headers=api.editor
    )
    assert created.status_code == 201
    mismatch = await api.client.put("/v1/rules/other", json=ABANDONED_CART, headers=api.editor)
    assert mismatch.status_code == 422
    assert mismatch.json()["code"] == "invalid"


async def test_deleted_rules_keep_their_versions_and_numbering_continues(api: Api) -> None:
    await api.ok("POST", "/v1/rules", json=ABANDONED_CART)
    await api.ok("PUT", "/v1/rules/abandoned-cart", json={**ABANDONED_CART, "priority": 10})
    await api.ok("DELETE", "/v1/rules/abandoned-cart")
    assert (await api.client.get("/v1/rules/abandoned-cart", headers=api.viewer)).status_code == 404
    gone = await api.client.delete("/v1/rules/abandoned-cart", headers=api.editor)
    assert gone.status_code == 404

    history = await api.ok("GET", "/v1/rules/abandoned-cart/versions", headers=api.viewer)
    assert [v["version"] for v in history] == [1, 2]
    # Created again: version 3, so its action ids cannot collide with the old rule's.
    again = await api.ok("POST", "/v1/rules", json=ABANDONED_CART)
    assert again["version"] == 3
    never = await api.client.get("/v1/rules/never/versions", headers=api.viewer)
    assert never.status_code == 404


async def test_disable_and_enable_switch_the_snapshot_not_the_version(api: Api) -> None:
    await api.ok("POST", "/v1/rules", json=ABANDONED_CART)
    await api.ok("POST", "/v1/rules", json=LOYALTY)
    snapshot = (await api.snapshots())[-1]
    assert [r.key for r in snapshot.bundle.rules] == ["abandoned-cart", "loyalty-offer"]

    off = await api.ok("POST", "/v1/rules/loyalty-offer/disable")
    assert (off["enabled"], off["version"], off["definition"]["enabled"]) == (False, 1, False)
    snapshots = await api.snapshots()
    assert [r.key for r in snapshots[-1].bundle.rules] == ["abandoned-cart"]
    assert snapshots[-1].version == snapshot.version + 1

    # Disabling a disabled rule changes nothing and publishes nothing.
    await api.ok("POST", "/v1/rules/loyalty-offer/disable")
    assert len(await api.snapshots()) == len(snapshots)
    listed = await api.ok("GET", "/v1/rules", headers=api.viewer)
    assert [r["enabled"] for r in listed] == [True, False]

    on = await api.ok("POST", "/v1/rules/loyalty-offer/enable")
    assert (on["enabled"], on["version"]) == (True, 1)
    assert [r.key for r in (await api.snapshots())[-1].bundle.rules] == [
        "abandoned-cart",
        "loyalty-offer",
    ]
    versions = await api.ok("GET", "/v1/rules/loyalty-offer/versions", headers=api.viewer)
    assert len(versions) == 1
    missing = await api.client.post("/v1/rules/nope/enable", headers=api.editor)
    assert missing.status_code == 404


async def test_the_snapshot_carries_versions_and_compiles(api: Api) -> None:
    await api.ok("POST", "/v1/rules", json=ABANDONED_CART)
    await api.ok("PUT", "/v1/rules/abandoned-cart", json={**ABANDONED_CART, "priority": 40})
    await api.ok("POST", "/v1/rules", json=LOYALTY)
    snapshot = (await api.snapshots())[-1]
    assert snapshot.rule_versions == {"abandoned-cart": 2, "loyalty-offer": 1}
    assert snapshot.rule_version("abandoned-cart") == 2
    cart = next(r for r in snapshot.bundle.rules if r.key == "abandoned-cart")
    assert cart.priority == 40
    assert cart.wait is not None and cart.wait.unless is not None
    assert cart.wait.unless.match == ABANDONED_CART["wait"]["unless"]["match"]
    # What the orchestrator does with it: compile once, and it must not refuse it.
    assert CompiledConfig.compile(snapshot).version == snapshot.version


@pytest.mark.parametrize(
    ("stage_ref", "message"),
    [
        (
            {"journey": "nope", "stage": "loyalty"},
            "trigger.stage_entered.journey: there is no journey 'nope'",
        ),
        (
            {"journey": "purchase", "stage": "vip"},
            "trigger.stage_entered.stage: journey 'purchase' has no stage 'vip'; its stages are "
            "awareness, consideration, decision, purchase, retention, loyalty",
        ),
    ],
)
async def test_a_rule_names_only_existing_journeys_and_stages(
    api: Api, stage_ref: dict[str, str], message: str
) -> None:
    rule = {**LOYALTY, "trigger": {"stage_entered": stage_ref}}
    for method, path in (("POST", "/v1/rules"), ("PUT", "/v1/rules/loyalty-offer")):
        response = await api.client.request(method, path, json=rule, headers=api.editor)
        assert response.status_code == 422
        assert response.json() == {"code": "unknown_reference", "message": message}
    assert await api.ok("GET", "/v1/rules", headers=api.viewer) == []


async def test_the_audit_log_says_who_changed_what(api: Api) -> None:
    await api.ok("POST", "/v1/rules", json=ABANDONED_CART)
    await api.ok("PUT", "/v1/rules/abandoned-cart", json={**ABANDONED_CART, "priority": 10})
    await api.ok("POST", "/v1/rules/abandoned-cart/disable")
    await api.ok("DELETE", "/v1/rules/abandoned-cart")

    entries = await api.ok(
        "GET",
        "/v1/audit",
        params={"target_kind": "rule", "target_key": "abandoned-cart"},
        headers=api.viewer,
    )
    assert [e["action"] for e in entries] == ["delete", "disable", "update", "create"]
    assert {e["actor"] for e in entries} == {"editor key"}
    delete, disable, update, create = entries
    assert create["before"] is None and create["after"]["priority"] == 50
    assert (update["before"]["priority"], update["after"]["priority"]) == (50, 10)
    assert (disable["before"]["enabled"], disable["after"]["enabled"]) == (True, False)
    assert delete["after"] is None and delete["before"]["key"] == "abandoned-cart"
    versions = [e["config_version"] for e in reversed(entries)]
    assert versions == sorted(versions) and len(set(versions)) == 4
    config_versions = await api.ok("GET", "/v1/config/versions", headers=api.viewer)
    assert config_versions[0]["version"] == versions[-1]
    assert config_versions[0]["actor"] == "editor key"
    assert config_versions[0]["summary"] == "delete rule abandoned-cart"

    # API keys are audited too, by the admin who made or revoked them.
    made = await api.ok(
        "POST", "/v1/api-keys", json={"name": "ci", "role": "viewer"}, headers=api.admin
    )
    await api.ok("DELETE", f"/v1/api-keys/{made['id']}", headers=api.admin)
    keys = await api.ok("GET", "/v1/audit", params={"target_kind": "api_key"}, headers=api.viewer)
    assert [(e["action"], e["actor"], e["target_key"]) for e in keys] == [
        ("revoke", ADMIN_NAME, made["id"]),
        ("create", ADMIN_NAME, made["id"]),
    ]
    assert keys[1]["after"] == {"name": "ci", "role": "viewer"}  # no part of the key
    assert keys[0]["config_version"] is None  # keys are not part of the configuration
    page = await api.ok(
        "GET", "/v1/audit", params={"limit": 1, "before": keys[0]["id"]}, headers=api.viewer
    )
    assert [e["id"] for e in page] == [keys[1]["id"]]


async def test_viewers_never_see_webhook_secrets_or_header_values(api: Api) -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    action = {
        **ABANDONED_CART["action"],
        "secret": secret,
        "headers": {"Authorization": "Bearer crm-token-123"},
    }
    await api.ok("POST", "/v1/rules", json={**ABANDONED_CART, "action": action})
    test_body = {"event": {"event": "Product Added", "properties": {"price": 25, "cart_id": "c"}}}
    reads = [
        ("GET", "/v1/rules", None),
        ("GET", "/v1/rules/abandoned-cart", None),
        ("GET", "/v1/rules/abandoned-cart/versions", None),
        ("GET", "/v1/config/export", None),
        ("GET", "/v1/audit", None),
        ("POST", "/v1/rules/abandoned-cart/test", test_body),
    ]
    for method, path, body in reads:
        seen = await api.ok(method, path, json=body, headers=api.viewer)
        text = orjson.dumps(seen).decode()
        assert "crm-token-123" not in text and secret not in text, path
        if path != "/v1/audit" and not path.endswith("/test"):
            assert "[redacted]" in text, path
    # Editors set them, and see them: an export they apply again changes nothing.
    as_editor = orjson.dumps(await api.ok("GET", "/v1/config/export")).decode()
    assert secret in as_editor and "crm-token-123" in as_editor
