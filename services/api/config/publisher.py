"""Builds the active configuration snapshot and publishes it to ``safar.config``."""

from __future__ import annotations

import logging

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.api.access.service import active_write_key_hashes
from services.api.config.models import ConfigVersionRow
from services.api.journeys.models import JourneyRow
from services.api.rules.models import RuleRow
from shared.definitions import Bundle, ConfigSnapshot, Journey
from shared.http import ApiError

log = logging.getLogger(__name__)


async def record_change(*, session: AsyncSession, actor: str, summary: str) -> int:
    """A new configuration version for a change made in this transaction."""
    row = ConfigVersionRow(actor=actor, summary=summary[:500])
    session.add(row)
    await session.flush()
    return row.version


async def build_snapshot(*, session: AsyncSession) -> ConfigSnapshot:
    """Everything the orchestrator and ingest need, read in one transaction: all journeys,
    the enabled rules with their versions, the active write keys."""
    version = await session.scalar(select(func.max(ConfigVersionRow.version))) or 0
    journeys = [
        Journey.model_validate(row.definition)
        for row in await session.scalars(select(JourneyRow).order_by(JourneyRow.created_at))
    ]
    rule_rows = list(
        await session.scalars(select(RuleRow).where(RuleRow.enabled).order_by(RuleRow.key))
    )
    return ConfigSnapshot(
        version=version,
        bundle=Bundle(journeys=journeys, rules=[row.rule() for row in rule_rows]),
        rule_versions={row.key: row.version for row in rule_rows},
        write_keys=await active_write_key_hashes(session=session),
    )


class ConfigPublisher:
    def __init__(
        self, producer: AIOKafkaProducer, topic: str, sessions: async_sessionmaker[AsyncSession]
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._sessions = sessions

    async def publish(self) -> ConfigSnapshot:
        """Publish the committed configuration; waits for Kafka's acknowledgement."""
        async with self._sessions() as session:
            # One snapshot of the database for every read: a version number never travels
            # with a half-committed neighbour's rows.
            await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            snapshot = await build_snapshot(session=session)
        try:
            await self._producer.send_and_wait(self._topic, snapshot.to_json(), key=b"config")
        except KafkaError as exc:
            log.error("configuration version %d not published: %s", snapshot.version, exc)
            raise ApiError(
                503,
                "unavailable",
                f"configuration version {snapshot.version} is saved but Kafka did not take it "
                "yet; it is published with the next change or when the api restarts",
                {"Retry-After": "5"},
            ) from exc
        log.info("published configuration version %d", snapshot.version)
        return snapshot
