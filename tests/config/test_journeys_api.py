"""Journeys over HTTP: CRUD, versions, references from rules, published snapshots."""

from __future__ import annotations

from typing import Any

import pytest

from tests.config.conftest import Api

pytestmark = pytest.mark.timeout(60)

SIGNUP: dict[str, Any] = {
    "key": "signup",
    "name": "Sign-up",
    "stages": [
        {"key": "visited", "when": "true"},
        {"key": "registered", "when": 'event.name == "Signed Up"'},
        {"key": "activated", "when": 'count("Project Created") >= 1'},
    ],
}
STAGE_RULE: dict[str, Any] = {
    "key": "welcome",
    "trigger": {"stage_entered": {"journey": "signup", "stage": "registered"}},
    "action": {"channel": "log", "message": "welcome {{ customer.id }}"},
}


async def test_the_default_journey_is_listed_and_readable(api: Api) -> None:
    journeys = await api.ok("GET", "/v1/journeys", headers=api.viewer)
    assert [j["key"] for j in journeys] == ["purchase"]
    one = await api.ok("GET", "/v1/journeys/purchase", headers=api.viewer)
    assert [s["key"] for s in one["definition"]["stages"]][-1] == "loyalty"
    assert one["version"] == 1
    missing = await api.client.get("/v1/journeys/nope", headers=api.viewer)
    assert missing.status_code == 404
    assert missing.json() == {"code": "not_found", "message": "no journey 'nope'"}


async def test_create_then_conflict_and_the_snapshot_has_it(api: Api) -> None:
    before = await api.snapshots()
    created = await api.client.post("/v1/journeys", json=SIGNUP, headers=api.editor)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["version"] == 1
    assert body["definition"]["stages"][1] == SIGNUP["stages"][1]
    again = await api.client.post("/v1/journeys", json=SIGNUP, headers=api.editor)
    assert again.status_code == 409
    assert again.json()["code"] == "conflict"

    after = await api.snapshots()
    assert len(after) == len(before) + 1
    latest = after[-1]
    assert latest.version == before[-1].version + 1
    assert [j.key for j in latest.bundle.journeys] == ["purchase", "signup"]


async def test_put_replaces_creates_and_ignores_no_change(api: Api) -> None:
    await api.ok("POST", "/v1/journeys", json=SIGNUP)
    changed = {**SIGNUP, "allow_backward": True}
    replaced = await api.client.put("/v1/journeys/signup", json=changed, headers=api.editor)
    assert replaced.status_code == 200
    assert replaced.json()["version"] == 2
    assert replaced.json()["definition"]["allow_backward"] is True

    published = len(await api.snapshots())
    same = await api.client.put("/v1/journeys/signup", json=changed, headers=api.editor)
    assert same.status_code == 200
    assert same.json()["version"] == 2
    assert len(await api.snapshots()) == published  # nothing changed, nothing published

    fresh = await api.client.put(
        "/v1/journeys/trial", json={**SIGNUP, "key": "trial"}, headers=api.editor
    )
    assert fresh.status_code == 201

    mismatch = await api.client.put("/v1/journeys/other", json=SIGNUP, headers=api.editor)
    assert mismatch.status_code == 422
    assert mismatch.json()["code"] == "invalid"
    assert "differs" in mismatch.json()["message"]


async def test_delete_and_404s(api: Api) -> None:
    await api.ok("POST", "/v1/journeys", json=SIGNUP)
    await api.ok("DELETE", "/v1/journeys/signup")
    assert (await api.client.get("/v1/journeys/signup", headers=api.viewer)).status_code == 404
    again = await api.client.delete("/v1/journeys/signup", headers=api.editor)
    assert again.status_code == 404
    assert again.json()["code"] == "not_found"
    latest = (await api.snapshots())[-1]
    assert [j.key for j in latest.bundle.journeys] == ["purchase"]


async def test_a_journey_rules_use_cannot_lose_their_stage_or_go(api: Api) -> None:
    await api.ok("POST", "/v1/journeys", json=SIGNUP)
    await api.ok("POST", "/v1/rules", json=STAGE_RULE)

    gone = await api.client.delete("/v1/journeys/signup", headers=api.editor)
    assert gone.status_code == 409
    assert gone.json() == {
        "code": "conflict",
        "message": "journey 'signup' triggers rules welcome; change or delete those rules first",
    }
    without_stage = {**SIGNUP, "stages": [SIGNUP["stages"][0], SIGNUP["stages"][2]]}
    narrowed = await api.client.put("/v1/journeys/signup", json=without_stage, headers=api.editor)
    assert narrowed.status_code == 409
    assert "registered" in narrowed.json()["message"]
    assert "welcome" in narrowed.json()["message"]
    # Removing a stage no rule uses is fine.
    without_other = {**SIGNUP, "stages": SIGNUP["stages"][:2]}
    assert (
        await api.client.put("/v1/journeys/signup", json=without_other, headers=api.editor)
    ).status_code == 200

    await api.ok("DELETE", "/v1/rules/welcome")
    await api.ok("DELETE", "/v1/journeys/signup")
