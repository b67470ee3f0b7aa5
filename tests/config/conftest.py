"""The api in-process (its real lifespan, real PostgreSQL and Kafka), keys per role, and a
reader of ``safar.config``.

One api (and one database and namespace) for all these tests, since starting and stopping its
lifespan takes seconds; before each test the configuration is reset to the default journey
alone, so tests do not see each other's journeys, rules or audit entries.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from aiokafka import TopicPartition
from fastapi import FastAPI
from sqlalchemy import text

from services.api.app import create_app
from services.api.bootstrap import bootstrap, default_bundle
from services.api.config.publisher import record_change
from services.api.db.base import make_engine
from services.api.journeys.service import save_journey
from shared.definitions import ConfigSnapshot
from shared.embedded import StackUrls
from shared.kafka import make_consumer
from shared.settings import Settings
from shared.topics import Topics
from tests.conftest import isolated_settings

ADMIN_NAME = "development admin"  # what services.api.bootstrap names the dev admin key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Api:
    """An httpx client on the in-process api, and a header per role."""

    app: FastAPI
    client: httpx.AsyncClient
    settings: Settings
    write_key: str
    admin: dict[str, str]
    editor: dict[str, str]
    viewer: dict[str, str]

    async def snapshots(self) -> list[ConfigSnapshot]:
        return await config_snapshots(self.settings)

    async def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call as the editor (unless headers are given) and expect a 2xx."""
        kwargs.setdefault("headers", self.editor)
        response = await self.client.request(method, path, **kwargs)
        assert response.is_success, f"{method} {path}: {response.status_code} {response.text}"
        return None if response.status_code == 204 else response.json()


async def config_snapshots(settings: Settings) -> list[ConfigSnapshot]:
    """Every snapshot on this namespace's ``safar.config``, oldest first."""
    consumer = make_consumer(settings, group_id=None)
    await consumer.start()
    try:
        partition = TopicPartition(Topics(settings.namespace).config, 0)
        consumer.assign([partition])
        end = (await consumer.end_offsets([partition]))[partition]
        await consumer.seek_to_beginning(partition)
        values: list[bytes] = []
        while await consumer.position(partition) < end:
            batch = await consumer.getmany(partition, timeout_ms=1000)
            values += [record.value or b"" for record in batch.get(partition, [])]
        return [ConfigSnapshot.model_validate_json(value) for value in values]
    finally:
        await consumer.stop()


@pytest.fixture(scope="package")
async def package_settings(stack_urls: StackUrls) -> Settings:
    """Like ``settings``, but one namespace and database for the whole package."""
    return await isolated_settings(stack_urls, events_partitions=1)


@pytest.fixture(scope="package")
async def running_api(package_settings: Settings) -> AsyncIterator[Api]:
    write_key = "wk_test_" + secrets.token_hex(8)
    admin_key = "sk_test_" + secrets.token_hex(8)
    engine = make_engine(package_settings.require("database_url"))
    try:
        await bootstrap(engine, write_key=write_key, admin_key=admin_key)
    finally:
        await engine.dispose()
    app = create_app(package_settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            admin = bearer(admin_key)
            keys = {}
            for role in ("editor", "viewer"):
                response = await client.post(
                    "/v1/api-keys", json={"name": f"{role} key", "role": role}, headers=admin
                )
                assert response.status_code == 201, response.text
                keys[role] = bearer(response.json()["api_key"])
            yield Api(
                app, client, package_settings, write_key, admin, keys["editor"], keys["viewer"]
            )


@pytest.fixture
async def api(running_api: Api) -> Api:
    """The shared api, its configuration back to the default journey alone."""
    state = running_api.app.state
    async with state.sessions() as session, session.begin():
        await session.execute(text("TRUNCATE rules, rule_versions, journeys, audit_log"))
        for journey in default_bundle().journeys:
            await save_journey(session=session, journey=journey)
        await record_change(session=session, actor="tests", summary="reset")
    await state.publisher.publish()
    return running_api
