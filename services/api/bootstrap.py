"""First-run set-up: schema, the default journey, and credentials for a dev stack."""

from __future__ import annotations

from importlib.resources import files

import yaml
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from services.api.access.service import add_source_key, create_api_key
from services.api.config.models import ConfigVersionRow
from services.api.config.publisher import record_change
from services.api.db.base import make_sessions
from services.api.db.migrate import upgrade
from services.api.journeys.service import save_journey
from shared.definitions import Bundle


def default_bundle() -> Bundle:
    text = files("services.api.config").joinpath("default_bundle.yaml").read_text()
    return Bundle.model_validate(yaml.safe_load(text))


async def seed_default_journey(*, session: AsyncSession) -> bool:
    """On a configuration that was never changed, install the default purchase journey."""
    if await session.scalar(select(func.count()).select_from(ConfigVersionRow)):
        return False
    for journey in default_bundle().journeys:
        await save_journey(session=session, journey=journey)
    await record_change(session=session, actor="safar", summary="default purchase journey")
    return True


async def bootstrap(
    engine: AsyncEngine, *, write_key: str | None = None, admin_key: str | None = None
) -> None:
    """Migrate, seed, and register the given dev credentials (idempotent)."""
    await upgrade(engine)
    sessions = make_sessions(engine)
    async with sessions() as session, session.begin():
        await seed_default_journey(session=session)
        if write_key:
            await add_source_key(session=session, name="development", key=write_key)
        if admin_key:
            await create_api_key(
                session=session, name="development admin", role="admin", key=admin_key
            )
