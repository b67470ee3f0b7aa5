"""Every endpoint of this issue against every role: 401 without a valid key, 403 below the
role it needs, success at it. Denied calls change nothing."""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import pytest

from services.api.access import service as access
from services.api.access.service import hash_secret
from services.api.bootstrap import bootstrap
from services.api.db.base import make_engine, make_sessions
from shared.http import ApiError
from shared.settings import Settings
from tests.config.conftest import ADMIN_NAME, Api, bearer

pytestmark = pytest.mark.timeout(60)

RULE = {
    "key": "thank-you",
    "trigger": {"event": "Order Completed"},
    "action": {"channel": "log", "message": "thanks {{ customer.id }}"},
}
JOURNEY = {"key": "signup", "stages": [{"key": "visited"}]}
BUNDLE_YAML = b"""
journeys:
  - key: purchase
    stages:
      - {key: awareness}
      - {key: purchase, when: 'event.name == "Order Completed"'}
rules:
  - key: thank-you
    trigger: {event: Order Completed}
    action: {channel: log, message: 'thanks {{ customer.id }}'}
"""

# (method, path, the role it needs, request options), in an order that works when allowed;
# ``{source_id}`` is the source the allowed POST /v1/sources created.
STEPS: list[tuple[str, str, str, dict[str, Any]]] = [
    ("GET", "/v1/journeys", "viewer", {}),
    ("GET", "/v1/journeys/purchase", "viewer", {}),
    ("POST", "/v1/journeys", "editor", {"json": JOURNEY}),
    ("PUT", "/v1/journeys/signup", "editor", {"json": {**JOURNEY, "name": "Sign-up"}}),
    ("DELETE", "/v1/journeys/signup", "editor", {}),
    ("POST", "/v1/rules", "editor", {"json": RULE}),
    ("GET", "/v1/rules", "viewer", {}),
    ("GET", "/v1/rules/thank-you", "viewer", {}),
    ("PUT", "/v1/rules/thank-you", "editor", {"json": {**RULE, "priority": 5}}),
    ("POST", "/v1/rules/thank-you/disable", "editor", {}),
    ("POST", "/v1/rules/thank-you/enable", "editor", {}),
    ("GET", "/v1/rules/thank-you/versions", "viewer", {}),
    ("DELETE", "/v1/rules/thank-you", "editor", {}),
    (
        "POST",
        "/v1/config/apply",
        "editor",
        {"content": BUNDLE_YAML, "params": {"dry_run": "true"}},
    ),
    ("POST", "/v1/config/apply", "editor", {"content": BUNDLE_YAML}),
    ("GET", "/v1/config/export", "viewer", {}),
    ("GET", "/v1/config/versions", "viewer", {}),
    ("GET", "/v1/audit", "viewer", {}),
    ("GET", "/v1/sources", "admin", {}),
    ("POST", "/v1/sources", "admin", {"json": {"name": "website"}}),
    ("DELETE", "/v1/sources/{source_id}", "admin", {}),
    ("GET", "/v1/api-keys", "admin", {}),
    ("POST", "/v1/api-keys", "admin", {"json": {"name": "ci", "role": "viewer"}}),
]
BELOW = {"viewer": [], "editor": ["viewer"], "admin": ["viewer", "editor"]}


async def test_every_endpoint_checks_the_role(api: Api) -> None:
    headers = {"viewer": api.viewer, "editor": api.editor, "admin": api.admin}
    # A revoked key is as good as none.
    revoked = await api.ok(
        "POST", "/v1/api-keys", json={"name": "old", "role": "admin"}, headers=api.admin
    )
    await api.ok("DELETE", f"/v1/api-keys/{revoked['id']}", headers=api.admin)
    strangers = [{}, bearer("sk_not_a_key"), bearer(revoked["api_key"]), {"Authorization": "x"}]
    sources = len(await api.ok("GET", "/v1/sources", headers=api.admin))

    created: dict[str, str] = {}
    write_key = ""
    for method, template, role, options in STEPS:
        path = template.format(**created)
        for stranger in strangers:
            response = await api.client.request(method, path, headers=stranger, **options)
            assert response.status_code == 401, (method, path, stranger, response.text)
            body = response.json()
            assert set(body) == {"code", "message"} and body["code"] == "unauthorized"
        for lower in BELOW[role]:
            response = await api.client.request(method, path, headers=headers[lower], **options)
            assert response.status_code == 403, (method, path, lower, response.text)
            assert response.json() == {
                "code": "forbidden",
                "message": f"this needs the {role} role; the key is {lower}",
            }
        # Higher roles include lower ones; the step runs once, at the role it needs.
        allowed = await api.client.request(method, path, headers=headers[role], **options)
        assert allowed.is_success, (method, path, role, allowed.status_code, allowed.text)
        if (method, path) == ("POST", "/v1/sources"):
            created["source_id"] = allowed.json()["id"]
            write_key = allowed.json()["write_key"]
            assert hash_secret(write_key) in (await api.snapshots())[-1].write_keys

    # Denied calls changed nothing: only the allowed calls are in the audit log.
    listed = await api.ok("GET", "/v1/sources", headers=api.admin)
    assert len(listed) == sources + 1
    revoked_source = next(s for s in listed if s["id"] == created["source_id"])
    assert revoked_source["name"] == "website" and revoked_source["revoked_at"] is not None
    assert hash_secret(write_key) not in (await api.snapshots())[-1].write_keys  # ingest refuses it
    audit = await api.ok("GET", "/v1/audit", params={"limit": 1000}, headers=api.viewer)
    assert [(e["actor"], e["action"], e["target_kind"]) for e in reversed(audit)] == [
        (ADMIN_NAME, "create", "api_key"),
        (ADMIN_NAME, "revoke", "api_key"),
        ("editor key", "create", "journey"),
        ("editor key", "update", "journey"),
        ("editor key", "delete", "journey"),
        ("editor key", "create", "rule"),
        ("editor key", "update", "rule"),
        ("editor key", "disable", "rule"),
        ("editor key", "enable", "rule"),
        ("editor key", "delete", "rule"),
        ("editor key", "update", "journey"),  # the applied bundle: purchase changed...
        ("editor key", "create", "rule"),  # ...thank-you created...
        ("editor key", "apply", "bundle"),  # ...in one configuration version
        (ADMIN_NAME, "create", "source"),
        (ADMIN_NAME, "revoke", "source"),  # once: the denied DELETEs revoked nothing
        (ADMIN_NAME, "create", "api_key"),
    ]


async def test_an_admin_may_edit_and_key_routes_refuse_editors(api: Api) -> None:
    response = await api.client.post("/v1/rules", json=RULE, headers=api.admin)
    assert response.status_code == 201
    entry = (await api.ok("GET", "/v1/audit", headers=api.viewer))[0]
    assert (entry["actor"], entry["action"], entry["target_key"]) == (
        ADMIN_NAME,
        "create",
        "thank-you",
    )
    unknown = "00000000-0000-0000-0000-000000000000"
    for path in (f"/v1/api-keys/{unknown}", f"/v1/sources/{unknown}"):
        assert (await api.client.delete(path)).status_code == 401
        for lower in (api.viewer, api.editor):
            refused = await api.client.delete(path, headers=lower)
            assert refused.status_code == 403, (path, refused.text)
            assert refused.json()["code"] == "forbidden"
        missing = await api.client.delete(path, headers=api.admin)
        assert missing.status_code == 404, (path, missing.text)
        assert missing.json()["code"] == "not_found" and unknown in missing.json()["message"]


async def test_revoking_twice_answers_204_and_changes_nothing_more(api: Api) -> None:
    source = await api.ok("POST", "/v1/sources", json={"name": "shop"}, headers=api.admin)
    key = await api.ok(
        "POST", "/v1/api-keys", json={"name": "ci", "role": "viewer"}, headers=api.admin
    )
    for path in (f"/v1/sources/{source['id']}", f"/v1/api-keys/{key['id']}"):
        await api.ok("DELETE", path, headers=api.admin)
        snapshots = len(await api.snapshots())
        again = await api.client.delete(path, headers=api.admin)
        assert again.status_code == 204, (path, again.text)
        assert len(await api.snapshots()) == snapshots, "revoking again published a configuration"
    audit = await api.ok("GET", "/v1/audit", params={"limit": 1000}, headers=api.viewer)
    revokes = [(e["target_kind"], e["action"]) for e in audit if e["action"] == "revoke"]
    assert sorted(revokes) == [("api_key", "revoke"), ("source", "revoke")]


async def test_the_last_active_admin_key_cannot_be_revoked(settings: Settings) -> None:
    """On a database of its own: the package's shared api keeps its admin key."""
    engine = make_engine(settings.require("database_url"))
    sessions = make_sessions(engine)

    async def revoke(key_id: uuid.UUID) -> bool:
        async with sessions() as session, session.begin():
            return (await access.revoke_api_key(session=session, key_id=key_id))[1]

    try:
        await bootstrap(engine, admin_key="sk_test_" + secrets.token_hex(8))
        async with sessions() as session:
            [first] = [k for k in await access.list_api_keys(session=session) if k.role == "admin"]
        with pytest.raises(ApiError) as refused:
            await revoke(first.id)
        assert (refused.value.status, refused.value.code) == (409, "conflict")
        # With a second admin key, the first one can go; then the second is the last.
        async with sessions() as session, session.begin():
            second, _ = await access.create_api_key(session=session, name="ops", role="admin")
        assert await revoke(first.id)
        with pytest.raises(ApiError):
            await revoke(second.id)
    finally:
        await engine.dispose()
