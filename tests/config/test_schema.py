"""The migrations create exactly the tables the models describe (rules, versions, audit)."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection

from services.api.db.base import make_engine
from services.api.db.models import Base
from tests.config.conftest import Api

pytestmark = pytest.mark.timeout(60)

MINE = {"rules", "rule_versions", "audit_log"}


def _table(diff: Any) -> str | None:
    """The table a diff entry is about (entries are tuples, or lists of tuples)."""
    entry = diff[0] if isinstance(diff, list) else diff
    for item in entry[1:]:
        name = getattr(item, "name", None) if not isinstance(item, str) else None
        table = getattr(item, "table", None)
        if table is not None:
            return str(table.name)
        if name in MINE:
            return str(name)
        if isinstance(item, str) and item in MINE:
            return item
    return None


async def test_migrated_schema_matches_the_models(api: Api) -> None:
    engine = make_engine(api.settings.require("database_url"))

    def compare(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    try:
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda sync: set(sync.dialect.get_table_names(sync)))
            diffs = await connection.run_sync(compare)
    finally:
        await engine.dispose()
    assert tables >= MINE
    assert [d for d in diffs if _table(d) in MINE] == []
