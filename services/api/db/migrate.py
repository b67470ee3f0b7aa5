"""Alembic migrations, run programmatically on the service's own async engine."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


async def upgrade(engine: AsyncEngine, revision: str = "heads") -> None:
    """Bring the schema to ``revision``; safe to run on every start."""

    def run(connection: Connection) -> None:
        # Several api processes may start at once: one migrates, the others wait.
        connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7310)")
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    async with engine.begin() as connection:
        await connection.run_sync(run)
