"""Hot reload goes on past a snapshot that cannot be applied."""

from __future__ import annotations

from shared.config_feed import ConfigFeed
from shared.definitions import Bundle, ConfigSnapshot
from shared.settings import Settings


def test_a_snapshot_that_fails_to_apply_leaves_the_feed_to_take_the_next() -> None:
    applied: list[int] = []

    def apply(snapshot: ConfigSnapshot) -> None:
        if snapshot.version == 2:
            raise RuntimeError("a bug while compiling")
        if snapshot.version == 3:
            raise ValueError("refused")
        applied.append(snapshot.version)

    feed = ConfigFeed(Settings(), apply)
    for version in (1, 2, 3, 4):
        feed._accept(ConfigSnapshot(version=version, bundle=Bundle(), write_keys=[]).to_json())
    feed._accept(b"not a snapshot")
    assert applied == [1, 4]
    assert feed.version == 4 and feed.ready.is_set()
