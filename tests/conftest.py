"""Session-wide real services (Tansu, Valkey, PostgreSQL) and a fresh namespace per test."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from services.api.bootstrap import bootstrap
from services.api.db.base import make_engine
from shared.embedded import EmbeddedStack, StackUrls, free_port
from shared.kafka import ensure_topics
from shared.settings import Settings
from tests.stack import ServiceProcess


@pytest.fixture(scope="session")
def stack_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackUrls]:
    stack = EmbeddedStack(tmp_path_factory.mktemp("embedded"))
    try:
        yield stack.start()
    finally:
        stack.stop()


async def isolated_settings(stack_urls: StackUrls, events_partitions: int = 4) -> Settings:
    """Settings with their own topics, Redis keys, consumer groups and database."""
    namespace = f"t{secrets.token_hex(4)}"
    assert stack_urls.database_url is not None
    admin_dsn = stack_urls.database_url.replace("postgresql+asyncpg", "postgresql")
    connection = await asyncpg.connect(admin_dsn)
    try:
        await connection.execute(f'CREATE DATABASE "{namespace}"')
    finally:
        await connection.close()
    result = Settings(
        kafka_bootstrap=stack_urls.kafka_bootstrap,
        redis_url=stack_urls.redis_url,
        database_url=stack_urls.database_url.rsplit("/", 1)[0] + f"/{namespace}",
        namespace=namespace,
        events_partitions=events_partitions,
        api_port=free_port(),
        ingest_port=free_port(),
        orchestrator_port=free_port(),
    )
    await ensure_topics(result)
    return result


@pytest.fixture
async def settings(stack_urls: StackUrls) -> Settings:
    """A fresh namespace and database per test."""
    return await isolated_settings(stack_urls)


class Credentials:
    write_key = "wk_test_" + secrets.token_hex(8)
    admin_key = "sk_test_" + secrets.token_hex(8)


@pytest.fixture
async def credentials(settings: Settings) -> Credentials:
    """Migrated database with the default journey, a write key and an admin API key."""
    engine = make_engine(settings.require("database_url"))
    creds = Credentials()
    try:
        await bootstrap(engine, write_key=creds.write_key, admin_key=creds.admin_key)
    finally:
        await engine.dispose()
    return creds


@pytest.fixture
def service(settings: Settings, tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    """Start service processes with ``await service("api").start()``; all stop at the end."""
    started: list[ServiceProcess] = []

    def make(name: str, *args: str, settings_: Settings | None = None) -> ServiceProcess:
        process = ServiceProcess(name, settings_ or settings, tmp_path, *args)
        started.append(process)
        return process

    yield make
    for process in reversed(started):
        process.stop()
