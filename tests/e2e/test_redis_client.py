"""The orchestrator's Redis client over TCP and over a Unix socket (``unix://`` urls)."""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.orchestrator.profile_store import ProfileStore
from services.orchestrator.redis_client import orchestrator_redis
from shared.customer_keys import CustomerKeys
from shared.embedded import redis_binary
from shared.profile import Profile
from shared.settings import Settings

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def unix_url() -> AsyncIterator[str]:
    """A Redis server listening on a Unix socket only."""
    with tempfile.TemporaryDirectory(prefix="safar-", dir="/tmp") as folder:
        socket = Path(folder) / "redis.sock"  # short: socket paths are limited to ~100 bytes
        server = subprocess.Popen(
            [
                *(str(redis_binary()), "--port", "0", "--unixsocket", str(socket)),
                *("--save", "", "--appendonly", "no", "--dir", folder),
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            async with asyncio.timeout(10):
                while not socket.exists():
                    assert server.poll() is None, "the server exited while starting"
                    await asyncio.sleep(0.02)
            yield f"unix://{socket}"
        finally:
            server.terminate()
            server.wait()


async def _profile_round_trip(settings: Settings) -> None:
    redis = orchestrator_redis(settings)
    try:
        store = ProfileStore(redis, CustomerKeys(f"client-{uuid.uuid4().hex[:6]}"))
        assert await store.save_many([(Profile(id="a", traits={"x": 1}), 0)]) == [True]
        stored = (await store.load_many(["a"]))["a"]
        assert stored.version == 1 and stored.profile is not None
        assert stored.profile.traits == {"x": 1}
    finally:
        await redis.aclose()


async def test_profiles_are_written_and_read_over_tcp(settings: Settings) -> None:
    await _profile_round_trip(settings)


async def test_profiles_are_written_and_read_over_a_unix_socket(
    settings: Settings, unix_url: str
) -> None:
    await _profile_round_trip(settings.model_copy(update={"redis_url": unix_url}))
