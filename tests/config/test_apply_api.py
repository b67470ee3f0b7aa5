"""POST /v1/config/apply: a whole bundle, checked first, applied in one transaction as one
configuration version and one published snapshot; ``?dry_run=true`` only diffs."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
import yaml

from shared.engine.compiled import CompiledConfig
from tests.config.conftest import Api

pytestmark = pytest.mark.timeout(60)

BUNDLE_V1 = """
journeys:
  - key: purchase
    name: Purchase journey
    stages:
      - {key: awareness,     when: 'true'}
      - {key: consideration, when: 'event.name in ["Product Viewed", "Products Searched"]'}
      - {key: decision,      when: 'event.name in ["Product Added", "Checkout Started"]'}
      - {key: purchase,      when: 'event.name == "Order Completed"'}
      - {key: retention,     when: 'count("Order Completed") >= 2'}
      - {key: loyalty,       when: 'count("Order Completed") >= 3 || event.name == "Referral Sent"'}
  - key: onboarding
    stages:
      - {key: signed-up, when: 'event.name == "Signed Up"'}
      - {key: activated, when: 'count("Project Created") >= 1'}
rules:
  - key: thank-you
    trigger: {event: Order Completed}
    action: {channel: email, to: '{{ customer.traits.email }}', subject: 'Thank you!', body: '...'}
  - key: abandoned-cart
    priority: 50
    trigger: {event: Product Added}
    if: 'double(event.properties.price) >= 20.0'
    wait:
      for: 30m
      key: 'event.properties.cart_id'
      grace: 2m
      unless:
        event: Order Completed
        match: 'event.properties.cart_id == trigger.properties.cart_id'
    limits: {max: 1, per: 24h}
    quiet_hours: {start: 21:00, end: '08:00'}
    action:
      channel: webhook
      url: 'https://crm.example/nudge'
      payload: {cart: '{{ trigger.properties.cart_id }}'}
  - key: loyalty-offer
    trigger: {stage_entered: {journey: purchase, stage: loyalty}}
    holdout: 0.1
    goal: {event: Order Completed, within: 14d}
    action: {channel: webhook, url: 'https://crm.example/loyalty'}
  - key: activation-nudge
    trigger: {stage_entered: {journey: onboarding, stage: signed-up}}
    wait: {for: 3d, unless: {event: Project Created}}
    action: {channel: log, message: 'nudge {{ customer.id }}'}
"""


def _changed_bundle() -> str:
    """v2: the cart wait is longer, thank-you is switched off, onboarding and its rule are
    gone, a referral rule is new, and the loyalty stage is renamed with its rule."""
    data = yaml.safe_load(BUNDLE_V1)
    data["journeys"] = [data["journeys"][0]]
    data["journeys"][0]["stages"][5]["key"] = "advocate"
    rules = {rule["key"]: rule for rule in data["rules"]}
    rules["abandoned-cart"]["wait"]["for"] = "45m"
    rules["thank-you"]["enabled"] = False
    rules["loyalty-offer"]["trigger"]["stage_entered"]["stage"] = "advocate"
    del rules["activation-nudge"]
    rules["referral-thanks"] = {
        "key": "referral-thanks",
        "trigger": {"event": "Referral Sent"},
        "action": {"channel": "kafka", "topic": "crm.referrals", "payload": {"who": "{{ x }}"}},
    }
    data["rules"] = list(rules.values())
    return yaml.safe_dump(data, sort_keys=False)


async def _apply(api: Api, body: str | bytes, dry_run: bool = False, **headers: str) -> Any:
    response = await api.client.post(
        "/v1/config/apply",
        content=body,
        params={"dry_run": str(dry_run).lower()},
        headers={**api.editor, **headers},
    )
    assert response.status_code == 200, response.text
    return response.json()


def _summary(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(c["change"], c["kind"], c["key"]) for c in result["changes"]]


async def test_apply_dry_run_then_for_real(api: Api) -> None:
    published = await api.snapshots()

    first = await _apply(api, BUNDLE_V1)
    assert first["dry_run"] is False
    assert _summary(first) == [
        ("update", "journey", "purchase"),
        ("create", "journey", "onboarding"),
        ("create", "rule", "thank-you"),
        ("create", "rule", "abandoned-cart"),
        ("create", "rule", "loyalty-offer"),
        ("create", "rule", "activation-nudge"),
    ]
    # The default journey differs from v1's only in the events of two stages.
    assert [f["path"] for f in first["changes"][0]["fields"]] == [
        "stages[1].when",
        "stages[2].when",
    ]
    v1 = first["config_version"]
    snapshots = await api.snapshots()
    assert len(snapshots) == len(published) + 1  # one apply, one snapshot
    assert snapshots[-1].version == v1
    assert [r.key for r in snapshots[-1].bundle.rules] == [
        "abandoned-cart",
        "activation-nudge",
        "loyalty-offer",
        "thank-you",
    ]
    assert set(snapshots[-1].rule_versions.values()) == {1}
    CompiledConfig.compile(snapshots[-1])

    # Dry run of v2: the whole diff, and nothing changes or is published.
    preview = await _apply(api, _changed_bundle(), dry_run=True)
    assert preview["dry_run"] is True
    assert preview["config_version"] is None
    assert sorted(_summary(preview)) == [
        ("create", "rule", "referral-thanks"),
        ("delete", "journey", "onboarding"),
        ("delete", "rule", "activation-nudge"),
        ("update", "journey", "purchase"),
        ("update", "rule", "abandoned-cart"),
        ("update", "rule", "loyalty-offer"),
        ("update", "rule", "thank-you"),
    ]
    fields = {c["key"]: c["fields"] for c in preview["changes"]}
    assert fields["abandoned-cart"] == [{"path": "wait.for", "before": "30m", "after": "45m"}]
    assert fields["thank-you"] == [{"path": "enabled", "before": True, "after": False}]
    assert fields["purchase"] == [
        {"path": "stages[5].key", "before": "loyalty", "after": "advocate"}
    ]
    assert preview["unchanged"] == 0
    assert len(await api.snapshots()) == len(snapshots)
    assert (await api.ok("GET", "/v1/rules/activation-nudge", headers=api.viewer))["version"] == 1
    cart = await api.ok("GET", "/v1/rules/abandoned-cart", headers=api.viewer)
    assert cart["definition"]["wait"]["for"] == "30m"
    assert (await api.ok("GET", "/v1/config/versions", headers=api.viewer))[0]["version"] == v1

    # For real: the same diff, one new configuration version, one snapshot.
    applied = await _apply(api, _changed_bundle())
    assert sorted(_summary(applied)) == sorted(_summary(preview))
    v2 = applied["config_version"]
    assert v2 == v1 + 1
    snapshots_after = await api.snapshots()
    assert len(snapshots_after) == len(snapshots) + 1
    latest = snapshots_after[-1]
    assert latest.version == v2
    assert [j.key for j in latest.bundle.journeys] == ["purchase"]
    # thank-you is disabled, so the orchestrator does not get it.
    assert [r.key for r in latest.bundle.rules] == [
        "abandoned-cart",
        "loyalty-offer",
        "referral-thanks",
    ]
    assert latest.rule_versions == {"abandoned-cart": 2, "loyalty-offer": 2, "referral-thanks": 1}
    CompiledConfig.compile(latest)

    # Versions: content changes are versions, switching off is not.
    versions = await api.ok("GET", "/v1/rules/abandoned-cart/versions", headers=api.viewer)
    assert [(v["version"], v["definition"]["wait"]["for"]) for v in versions] == [
        (1, "30m"),
        (2, "45m"),
    ]
    thank_you = await api.ok("GET", "/v1/rules/thank-you", headers=api.viewer)
    assert (thank_you["version"], thank_you["enabled"]) == (1, False)
    gone = await api.ok("GET", "/v1/rules/activation-nudge/versions", headers=api.viewer)
    assert [v["version"] for v in gone] == [1]

    # Audit: every item of the apply, and the apply itself, under the one version.
    audit = await api.ok("GET", "/v1/audit", params={"limit": 1000}, headers=api.viewer)
    of_v2 = [
        (e["action"], e["target_kind"], e["target_key"]) for e in audit if e["config_version"] == v2
    ]
    assert sorted(of_v2) == [
        ("apply", "bundle", "config"),
        ("create", "rule", "referral-thanks"),
        ("delete", "journey", "onboarding"),
        ("delete", "rule", "activation-nudge"),
        ("disable", "rule", "thank-you"),
        ("update", "journey", "purchase"),
        ("update", "rule", "abandoned-cart"),
        ("update", "rule", "loyalty-offer"),
    ]
    apply_entry = next(e for e in audit if e["action"] == "apply" and e["config_version"] == v2)
    assert apply_entry["after"] == {"created": 1, "updated": 4, "deleted": 2}
    assert {e["actor"] for e in audit if e["config_version"] == v2} == {"editor key"}
    version_row = (await api.ok("GET", "/v1/config/versions", headers=api.viewer))[0]
    assert version_row == {
        "version": v2,
        "actor": "editor key",
        "summary": "apply: 1 created, 4 updated, 2 deleted",
        "created_at": version_row["created_at"],
    }

    # Applying the same bundle again changes nothing and publishes nothing.
    again = await _apply(api, _changed_bundle())
    assert again["changes"] == [] and again["config_version"] is None
    assert again["unchanged"] == 5
    assert len(await api.snapshots()) == len(snapshots_after)


async def test_an_invalid_bundle_changes_nothing(api: Api) -> None:
    await _apply(api, BUNDLE_V1)
    before = await api.ok("GET", "/v1/config/export", headers=api.viewer)
    published = len(await api.snapshots())
    data = yaml.safe_load(_changed_bundle())
    data["rules"][-1]["action"]["payload"] = {"who": "{{ customer.id }"}
    for dry_run in (True, False):
        response = await api.client.post(
            "/v1/config/apply",
            content=yaml.safe_dump(data),
            params={"dry_run": str(dry_run).lower()},
            headers=api.editor,
        )
        assert response.status_code == 422
        assert response.json() == {
            "code": "invalid_template",
            "message": "rules[3].action.payload.who: unexpected '}' at line 1",
        }
    assert await api.ok("GET", "/v1/config/export", headers=api.viewer) == before
    assert len(await api.snapshots()) == published


BAD_BUNDLES = [
    # (body, content type, status, code, message fragment)
    ("journeys: [", "application/yaml", 400, "bad_request", "at line 1, column 12"),
    ("rules:\n  - key: a\n   bad: 1", "application/yaml", 400, "bad_request", "line 3"),
    ('{"rules": [}', "application/json", 400, "bad_request", "not JSON"),
    ("- a\n- b", "application/yaml", 422, "invalid", "a bundle is a mapping"),
    ("x: &a [1]\ny: *a", "application/yaml", 400, "bad_request", "aliases"),
    ("[" * 50_000, "application/yaml", 400, "bad_request", "nested too deeply"),
    ("[" * 50_000, "application/json", 400, "bad_request", "not JSON"),
    (b"journeys: \xff\xfe", "application/yaml", 400, "bad_request", "not UTF-8"),
    ("journeys: []\nrule: []", "application/yaml", 422, "invalid", "rule: Extra inputs"),
    (
        "rules:\n  - key: r\n    trigger: {event: X}\n"
        "    action: {channel: webhook, url: 'https://x.example', payload: {n: !!binary /w==}}",
        "application/yaml",
        400,
        "bad_request",
        "a value JSON has not",
    ),
    (
        "rules:\n  - key: r\n    trigger: {event: X}\n    wait: {for: 0s}\n"
        "    action: {channel: log, message: m}",
        "application/yaml",
        422,
        "invalid",
        "rules[0].wait.for: the duration must be positive",
    ),
    (
        "rules:\n  - key: r\n    trigger: {event: X}\n    if: 'event.name = 1'\n"
        "    action: {channel: log, message: m}",
        "application/yaml",
        422,
        "invalid_expression",
        "rules[0].if: Syntax error",
    ),
    (
        "journeys:\n  - key: j\n    stages: [{key: a, when: 'x > 1'}]",
        "application/yaml",
        422,
        "invalid_expression",
        "journeys[0].stages[0].when: unknown name 'x'",
    ),
    (
        "rules:\n  - key: r\n    trigger: {stage_entered: {journey: purchase, stage: loyalty}}\n"
        "    action: {channel: log, message: m}",
        "application/yaml",
        422,
        "invalid",
        "rule 'r' names unknown journey 'purchase'",  # the bundle is the whole configuration
    ),
    (
        "rules:\n  - {key: r, trigger: {event: X}, action: {channel: log, message: m}}\n"
        "  - {key: r, trigger: {event: Y}, action: {channel: log, message: m}}",
        "application/yaml",
        422,
        "invalid",
        "rule keys must be unique: r",
    ),
]


@pytest.mark.parametrize(("body", "content_type", "status", "code", "fragment"), BAD_BUNDLES)
async def test_bundle_errors(
    api: Api, body: str | bytes, content_type: str, status: int, code: str, fragment: str
) -> None:
    published = len(await api.snapshots())
    response = await api.client.post(
        "/v1/config/apply", content=body, headers={**api.editor, "Content-Type": content_type}
    )
    assert response.status_code == status, response.text
    assert response.json()["code"] == code
    assert fragment in response.json()["message"], response.json()["message"]
    assert len(await api.snapshots()) == published
    assert [j["key"] for j in await api.ok("GET", "/v1/journeys", headers=api.viewer)] == [
        "purchase"
    ]


async def test_an_oversized_bundle_is_a_413(api: Api) -> None:
    body = "# " + "x" * (1 << 20) + "\njourneys: []\n"
    response = await api.client.post("/v1/config/apply", content=body, headers=api.editor)
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


async def test_export_round_trips_in_json_and_yaml(api: Api) -> None:
    await _apply(api, BUNDLE_V1)
    await api.ok("POST", "/v1/rules/thank-you/disable")
    exported = await api.ok("GET", "/v1/config/export", headers=api.viewer)
    assert [r["key"] for r in exported["rules"]] == [
        "abandoned-cart",
        "activation-nudge",
        "loyalty-offer",
        "thank-you",
    ]
    cart = exported["rules"][0]
    assert cart["wait"]["for"] == "30m" and cart["quiet_hours"]["start"] == "21:00"
    assert "holdout" not in cart  # defaults are left out
    assert exported["rules"][3]["enabled"] is False

    as_json = await _apply(api, orjson.dumps(exported), **{"Content-Type": "application/json"})
    assert as_json["changes"] == [] and as_json["unchanged"] == 6
    as_yaml = await _apply(api, yaml.safe_dump(exported, sort_keys=False))
    assert as_yaml["changes"] == [] and as_yaml["unchanged"] == 6


async def test_a_stage_and_the_rule_on_it_change_together(api: Api) -> None:
    """What single-item writes refuse (a stage rules use cannot go) is fine in one bundle
    that moves the rule too."""
    await _apply(api, BUNDLE_V1)
    data = yaml.safe_load(BUNDLE_V1)
    data["journeys"][1]["stages"][0]["key"] = "registered"
    data["rules"][3]["trigger"]["stage_entered"]["stage"] = "registered"
    result = await _apply(api, yaml.safe_dump(data))
    assert sorted(_summary(result)) == [
        ("update", "journey", "onboarding"),
        ("update", "rule", "activation-nudge"),
    ]
    snapshot = (await api.snapshots())[-1]
    nudge = next(r for r in snapshot.bundle.rules if r.key == "activation-nudge")
    assert nudge.trigger.stage_entered is not None
    assert nudge.trigger.stage_entered.stage == "registered"


async def test_concurrent_applies_are_serialised(api: Api) -> None:
    """Two bundles at once: each applies whole, one after the other, never interleaved."""
    one = yaml.safe_load(BUNDLE_V1)
    two = yaml.safe_load(_changed_bundle())
    results = await asyncio.gather(*(_apply(api, yaml.safe_dump(b)) for b in (one, two)))
    versions = sorted(r["config_version"] for r in results)
    assert versions[1] == versions[0] + 1
    last = one if results[0]["config_version"] == versions[1] else two
    exported = await api.ok("GET", "/v1/config/export", headers=api.viewer)
    assert sorted(r["key"] for r in exported["rules"]) == sorted(r["key"] for r in last["rules"])
    assert [j["key"] for j in exported["journeys"]] == [j["key"] for j in last["journeys"]]
    snapshot = (await api.snapshots())[-1]
    assert snapshot.version == versions[1]
    assert sorted(snapshot.rule_versions) == sorted(
        r["key"] for r in last["rules"] if r.get("enabled", True)
    )


async def test_the_openapi_document_describes_the_bundle(api: Api) -> None:
    spec = (await api.client.get("/openapi.json")).json()
    apply = spec["paths"]["/v1/config/apply"]["post"]
    assert set(apply["requestBody"]["content"]) == {"application/yaml", "application/json"}
    assert "Bundle" in spec["components"]["schemas"]
    for path in ("/v1/rules/{key}/versions", "/v1/rules/{key}/enable", "/v1/audit"):
        assert path in spec["paths"]
