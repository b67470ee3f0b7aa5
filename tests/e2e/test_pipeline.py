"""The whole pipeline on real Kafka, Redis and PostgreSQL, services as real processes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.conftest import Credentials
from tests.stack import ServiceProcess, eventually, metric_value

pytestmark = pytest.mark.timeout(180)


async def _customer(
    client: httpx.AsyncClient, api: ServiceProcess, creds: Credentials, customer: str
) -> dict[str, Any] | None:
    response = await client.get(
        f"{api.url}/v1/customers/{customer}",
        headers={"Authorization": f"Bearer {creds.admin_key}"},
    )
    return response.json() if response.status_code == 200 else None


def _stage(customer: dict[str, Any] | None) -> str | None:
    return None if customer is None else customer["stages"].get("purchase", {}).get("stage")


async def test_events_move_two_customers_through_the_default_journey(
    credentials: Credentials, service: Callable[..., ServiceProcess]
) -> None:
    api = await service("api").start()
    orchestrator = await service("orchestrator").start()
    ingest = await service("ingest").start()
    auth = (credentials.write_key, "")
    async with httpx.AsyncClient() as client:
        for customer, events in {
            "ada": ["Product Viewed", "Product Added", "Order Completed", "Order Completed"],
            "bob": ["Product Viewed"],
        }.items():
            for name in events:
                response = await client.post(
                    f"{ingest.url}/v1/track",
                    json={"userId": customer, "event": name, "properties": {"revenue": 10}},
                    auth=auth,
                )
                assert response.status_code == 200, response.text
                assert response.json() == {"success": True}

        ada = await eventually(
            lambda: _customer(client, api, credentials, "ada"),
            lambda c: _stage(c) == "retention",
            what="ada in retention",
        )
        bob = await eventually(
            lambda: _customer(client, api, credentials, "bob"),
            lambda c: _stage(c) == "consideration",
            what="bob in consideration",
        )
        assert ada is not None and bob is not None
        assert ada["counts"] == {
            "Product Viewed": 1,
            "Product Added": 1,
            "Order Completed": 2,
        }
        assert ada["revenue"] == 40.0
        assert ada["stages"]["purchase"]["since"] >= ada["first_seen"]

        ingested = (await client.get(f"{ingest.url}/metrics")).text
        assert metric_value(ingested, "safar_ingest_events_total", outcome="accepted") == 5
        processed = (await client.get(f"{orchestrator.url}/metrics")).text
        assert metric_value(processed, "safar_events_processed_total", outcome="applied") == 5
        moved = metric_value(
            processed,
            "safar_stage_transitions_total",
            journey="purchase",
            from_stage="purchase",
            to_stage="retention",
        )
        assert moved == 1
        missing = await client.get(
            f"{api.url}/v1/customers/nobody",
            headers={"Authorization": f"Bearer {credentials.admin_key}"},
        )
        assert missing.status_code == 404
        assert missing.json()["code"] == "not_found"


async def test_orchestrator_killed_mid_stream_loses_and_doubles_nothing(
    credentials: Credentials, service: Callable[..., ServiceProcess]
) -> None:
    customers = [f"cust-{i}" for i in range(40)]
    rounds = 30
    api = await service("api").start()
    ingest = await service("ingest").start()
    orchestrator = await service("orchestrator").start()
    auth = (credentials.write_key, "")

    async def send_round(client: httpx.AsyncClient, round_: int) -> None:
        batch = [
            {"type": "track", "userId": c, "event": "Product Viewed", "messageId": f"{c}-{round_}"}
            for c in customers
        ]
        response = await client.post(f"{ingest.url}/v1/batch", json={"batch": batch}, auth=auth)
        assert response.status_code == 200, response.text

    async def processed() -> float:
        text = (await client.get(f"{orchestrator.url}/metrics")).text
        return metric_value(text, "safar_events_processed_total", outcome="applied")

    async with httpx.AsyncClient() as client:
        for round_ in range(rounds // 2):
            await send_round(client, round_)
        # Kill while the stream is being worked through, then keep sending.
        await eventually(processed, lambda n: n >= 100, what="some events processed")
        orchestrator.kill()
        for round_ in range(rounds // 2, rounds):
            await send_round(client, round_)
        await orchestrator.start()
        # A batch re-sent by a client (same message ids) must not count twice either.
        await send_round(client, rounds - 1)

        async def views() -> list[int]:
            found = [await _customer(client, api, credentials, c) for c in customers]
            return [(f or {}).get("counts", {}).get("Product Viewed", 0) for f in found]

        counts = await eventually(
            views, lambda v: all(n >= rounds for n in v), timeout=60, what="all events applied"
        )
        assert counts == [rounds] * len(customers)

        # The re-sent round reaches the restarted process and is recognised, not applied
        # (it can come in a batch after the counts are complete).
        async def duplicates() -> float:
            text = (await client.get(f"{orchestrator.url}/metrics")).text
            return metric_value(text, "safar_events_processed_total", outcome="duplicate")

        await eventually(duplicates, lambda n: n >= len(customers), what="the re-sent round")
        assert await views() == [rounds] * len(customers)
