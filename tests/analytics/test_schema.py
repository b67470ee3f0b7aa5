"""Migration 0003 creates exactly the history tables the models describe."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection

from services.api.db.base import make_engine
from services.api.db.models import Base
from shared.settings import Settings
from tests.conftest import Credentials


def _history(diff: Any) -> bool:
    """Whether one autogenerate difference concerns a history table."""
    if isinstance(diff, list):
        return any(_history(d) for d in diff)
    for part in diff[1:]:
        table = getattr(part, "table", None)
        name = getattr(part, "name", None) if table is None else table.name
        if isinstance(part, str) and part.startswith("history_"):
            return True
        if isinstance(name, str) and name.startswith("history_"):
            return True
    return False


async def test_the_migrated_history_schema_matches_the_models(
    settings: Settings, credentials: Credentials
) -> None:
    engine = make_engine(settings.require("database_url"))

    def differences(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection)
        return [d for d in compare_metadata(context, Base.metadata) if _history(d)]

    try:
        async with engine.connect() as connection:
            found = await connection.run_sync(differences)
    finally:
        await engine.dispose()
    assert found == []
