"""Hot reload on the real stack: a changed stage condition and a changed and a new rule reach
a running orchestrator through ``safar.config``, and the first event after the change is
decided by the new version (DESIGN §2, §6)."""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from shared.actions import ActionRecord
from shared.config_feed import publish_snapshot
from shared.customer_keys import CustomerKeys
from shared.definitions import Bundle, ConfigSnapshot
from shared.profile import Profile
from shared.settings import Settings
from shared.topics import Topics
from tests.conftest import Credentials
from tests.kafka_io import TopicReader, actions, event, produce_events, publish_config
from tests.stack import ServiceProcess, eventually, metric_value

pytestmark = pytest.mark.timeout(240)

JOURNEY_V1: dict[str, Any] = {
    "key": "purchase",
    "stages": [
        {"key": "awareness", "when": "true"},
        {"key": "decision", "when": 'event.name == "Product Added"'},
        {"key": "purchase", "when": 'event.name == "Order Completed"'},
    ],
}
# Version 2 moves customers to "decision" on a cart view, no longer on an add.
JOURNEY_V2: dict[str, Any] = copy.deepcopy(JOURNEY_V1)
JOURNEY_V2["stages"][1]["when"] = 'event.name == "Cart Viewed"'
THANK_YOU_V1: dict[str, Any] = {
    "key": "thank-you",
    "trigger": {"event": "Order Completed"},
    "action": {"channel": "log", "message": "thanks v1 {{ customer.id }}"},
}
THANK_YOU_V2: dict[str, Any] = {
    **THANK_YOU_V1,
    "action": {"channel": "log", "message": "thanks v2 {{ customer.id }}"},
}
CART_HELP: dict[str, Any] = {  # new in version 2
    "key": "cart-help",
    "trigger": {"event": "Cart Viewed"},
    "action": {"channel": "log", "message": "need help with the cart?"},
}

# (customer, event) before and after the change; the same three events each time.
BEFORE = [("ann", "Product Added"), ("bea", "Cart Viewed"), ("cid", "Order Completed")]
AFTER = [("dan", "Product Added"), ("eve", "Cart Viewed"), ("fay", "Order Completed")]


async def _config_version(orchestrator: ServiceProcess) -> float:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{orchestrator.url}/metrics")).text
    return metric_value(text, "safar_config_version")


async def _version_active(orchestrator: ServiceProcess, version: int) -> None:
    await eventually(
        lambda: _config_version(orchestrator),
        lambda v: v == version,
        timeout=60,
        what=f"configuration version {version} active",
    )


async def _stages(settings: Settings, customers: list[str]) -> dict[str, str | None]:
    """Each customer's stage in ``purchase`` once all of its events are applied."""
    redis = Redis.from_url(settings.require("redis_url"))
    keys = CustomerKeys(settings.namespace)

    async def probe() -> dict[str, Profile | None]:
        found = {c: await redis.hget(keys.profile(c), "p") for c in customers}
        return {c: Profile.from_json(raw) if raw else None for c, raw in found.items()}

    try:
        profiles = await eventually(
            probe,
            lambda p: all(v is not None and sum(v.counts.values()) == 1 for v in p.values()),
            timeout=60,
            what=f"events of {customers} applied",
        )
    finally:
        await redis.aclose()
    return {
        c: (p.stages["purchase"].stage if "purchase" in p.stages else None)
        for c, p in profiles.items()
        if p is not None
    }


def _decided(values: list[bytes]) -> list[tuple[str, str, int, str]]:
    return sorted((a.customer_id, a.rule, a.rule_version, _message(a)) for a in actions(values))


def _message(action: ActionRecord) -> str:
    return str(action.spec.get("message"))


async def _run_scenario(
    settings: Settings,
    orchestrator: ServiceProcess,
    first_version: int,
    change: Callable[[], Awaitable[int]],
) -> None:
    """Events under the first version, the change while the orchestrator runs, and the same
    events again: stages and actions follow whichever version was in force."""
    await _version_active(orchestrator, first_version)
    await produce_events(settings, [event(c, name) for c, name in BEFORE])
    assert await _stages(settings, ["ann", "bea", "cid"]) == {
        "ann": "decision",
        "bea": "awareness",
        "cid": "purchase",
    }
    thanks_v1 = ("cid", "thank-you", 1, "thanks v1 {{ customer.id }}")
    async with TopicReader(settings, Topics(settings.namespace).actions) as reader:
        values = await reader.until(lambda v: len(v) >= 1, timeout=60, what="thanks v1")
        assert _decided(values) == [thanks_v1]

    second_version = await change()
    assert second_version > first_version
    await _version_active(orchestrator, second_version)
    # Straight after the swap: the very first events see the new version.
    await produce_events(settings, [event(c, name) for c, name in AFTER])
    assert await _stages(settings, ["dan", "eve", "fay"]) == {
        "dan": "awareness",  # an add no longer means "decision"...
        "eve": "decision",  # ...a cart view does
        "fay": "purchase",
    }
    async with TopicReader(settings, Topics(settings.namespace).actions) as reader:
        await reader.until(lambda v: len(v) >= 3, timeout=60, what="the version 2 actions")
        values = await reader.to_end()
    assert _decided(values) == [
        thanks_v1,
        ("eve", "cart-help", 1, "need help with the cart?"),
        ("fay", "thank-you", 2, "thanks v2 {{ customer.id }}"),
    ]


async def test_a_snapshot_published_to_the_broker_is_used_by_the_next_event(
    settings: Settings, service: Callable[..., ServiceProcess]
) -> None:
    await publish_config(settings, {"journeys": [JOURNEY_V1], "rules": [THANK_YOU_V1]})
    orchestrator = await service("orchestrator").start()

    async def change() -> int:
        bundle = Bundle.model_validate(
            {"journeys": [JOURNEY_V2], "rules": [THANK_YOU_V2, CART_HELP]}
        )
        versions = {"thank-you": 2, "cart-help": 1}
        await publish_snapshot(
            settings, ConfigSnapshot(version=2, bundle=bundle, rule_versions=versions)
        )
        return 2

    await _run_scenario(settings, orchestrator, 1, change)


async def test_changes_made_through_the_api_reach_the_running_orchestrator(
    settings: Settings, credentials: Credentials, service: Callable[..., ServiceProcess]
) -> None:
    api = await service("api").start()
    admin = {"Authorization": f"Bearer {credentials.admin_key}"}
    async with httpx.AsyncClient(base_url=api.url, headers=admin, timeout=30) as client:

        async def ok(method: str, path: str, **kwargs: Any) -> Any:
            response = await client.request(method, path, **kwargs)
            assert response.is_success, f"{method} {path}: {response.status_code} {response.text}"
            return response.json()

        applied = await ok(
            "POST", "/v1/config/apply", json={"journeys": [JOURNEY_V1], "rules": [THANK_YOU_V1]}
        )
        first_version = applied["config_version"]
        orchestrator = await service("orchestrator").start()

        async def change() -> int:
            await ok("PUT", "/v1/journeys/purchase", json=JOURNEY_V2)
            await ok("PUT", "/v1/rules/thank-you", json=THANK_YOU_V2)
            created = await ok("POST", "/v1/rules", json=CART_HELP)
            assert created["version"] == 1
            assert (await ok("GET", "/v1/rules/thank-you"))["version"] == 2
            return int((await ok("GET", "/v1/config/versions"))[0]["version"])

        await _run_scenario(settings, orchestrator, first_version, change)
