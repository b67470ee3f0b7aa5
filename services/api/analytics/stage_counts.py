"""``safar_customers_in_stage``, counted in PostgreSQL from each customer's latest recorded
move (``history_customer_stages``), so that it is right after any process restarts."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.api.history.models import CustomerStageRow
from services.api.metrics import CUSTOMERS_IN_STAGE
from shared.tasks import cancel_and_wait

log = logging.getLogger(__name__)

REFRESH_S = 15.0


async def count_stages(session: AsyncSession) -> dict[tuple[str, str], int]:
    """Customers per (journey, stage)."""
    rows = await session.execute(
        select(CustomerStageRow.journey, CustomerStageRow.stage, func.count()).group_by(
            CustomerStageRow.journey, CustomerStageRow.stage
        )
    )
    return {(journey, stage): count for journey, stage, count in rows.tuples()}


class StageCounts:
    """Sets the gauge every ``REFRESH_S`` seconds while the api runs."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._shown: set[tuple[str, str]] = set()
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> None:
        async with self._sessions() as session:
            counts = await count_stages(session)
        for labels, count in counts.items():
            CUSTOMERS_IN_STAGE.labels(*labels).set(count)
        for gone in self._shown - counts.keys():  # no customer left there
            CUSTOMERS_IN_STAGE.remove(*gone)
        self._shown = set(counts)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="stage-counts")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except (SQLAlchemyError, OSError) as exc:  # PostgreSQL away: the next round
                log.warning("could not count customers per stage: %s", exc)
            await asyncio.sleep(REFRESH_S)
