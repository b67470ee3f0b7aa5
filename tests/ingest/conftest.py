"""A running ingest on the real embedded stack, with its write keys on ``safar.config``."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from services.ingest.write_keys import hash_key
from shared.config_feed import publish_snapshot
from shared.definitions import Bundle, ConfigSnapshot
from shared.settings import Settings
from tests.stack import ServiceProcess


@dataclass(frozen=True)
class Tracking:
    settings: Settings
    write_key: str
    ingest: ServiceProcess

    @property
    def auth(self) -> tuple[str, str]:
        """Basic auth as Segment SDKs send it: the write key, an empty password."""
        return (self.write_key, "")


async def publish_write_keys(settings: Settings, *keys: str, version: int = 1) -> None:
    """Put a configuration snapshot on ``safar.config`` as the api does; ingest only reads
    its write-key hashes (the api's own publishing is tested with the sources routes)."""
    snapshot = ConfigSnapshot(
        version=version, bundle=Bundle(), write_keys=[hash_key(k) for k in keys]
    )
    await publish_snapshot(settings, snapshot)


@pytest.fixture
async def tracking(settings: Settings, service: Callable[..., ServiceProcess]) -> Tracking:
    write_key = "wk_test_" + secrets.token_hex(8)
    await publish_write_keys(settings, write_key)
    # No database for ingest: write keys come from the snapshot, never from a query.
    alone = settings.model_copy(update={"database_url": None})
    return Tracking(settings, write_key, await service("ingest", settings_=alone).start())
