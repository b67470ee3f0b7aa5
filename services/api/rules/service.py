"""Rules: keyword-only service functions that receive the session.

Every saved change of a rule's content is a new version, kept in ``rule_versions``;
enabling or disabling is not (the audit log records it).
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.api.audit.service import AuditAction, Change
from services.api.config.exceptions import UnknownReference
from services.api.db.base import utcnow
from services.api.journeys.models import JourneyRow
from services.api.rules.models import RuleRow, RuleVersionRow
from shared.definition_checks import check_rule
from shared.definitions import Journey, Rule


async def list_rules(*, session: AsyncSession) -> list[RuleRow]:
    return list(await session.scalars(select(RuleRow).order_by(RuleRow.key)))


async def get_rule(*, session: AsyncSession, key: str) -> RuleRow | None:
    return await session.get(RuleRow, key)


async def list_versions(*, session: AsyncSession, key: str) -> list[RuleVersionRow]:
    """Every version of rule ``key``, oldest first, also of a rule since deleted."""
    query = (
        select(RuleVersionRow)
        .where(RuleVersionRow.rule_key == key)
        .order_by(RuleVersionRow.version)
    )
    return list(await session.scalars(query))


async def rules_naming(
    *, session: AsyncSession, journey: str, stages: Iterable[str] | None = None
) -> list[str]:
    """Keys of the rules (enabled or not) triggered by entering ``journey`` (or one of
    ``stages`` of it)."""
    ref = RuleRow.definition["trigger"]["stage_entered"]
    query = select(RuleRow.key, ref["stage"].astext).where(ref["journey"].astext == journey)
    wanted = None if stages is None else set(stages)
    return sorted(
        key for key, stage in await session.execute(query) if wanted is None or stage in wanted
    )


async def check_references(*, session: AsyncSession, rule: Rule) -> None:
    """Raise UnknownReference unless the journey and stage the rule names exist."""
    ref = rule.trigger.stage_entered
    if ref is None:
        return
    row = await session.get(JourneyRow, ref.journey)
    if row is None:
        raise UnknownReference(
            f"trigger.stage_entered.journey: there is no journey {ref.journey!r}"
        )
    stages = [stage.key for stage in Journey.model_validate(row.definition).stages]
    if ref.stage not in stages:
        raise UnknownReference(
            f"trigger.stage_entered.stage: journey {ref.journey!r} has no stage {ref.stage!r}; "
            f"its stages are {', '.join(stages)}"
        )


async def _next_version(*, session: AsyncSession, key: str) -> int:
    latest = await session.scalar(
        select(func.max(RuleVersionRow.version)).where(RuleVersionRow.rule_key == key)
    )
    return (latest or 0) + 1


async def save_rule(
    *, session: AsyncSession, rule: Rule, actor: str, references_checked: bool = False
) -> tuple[RuleRow, Change | None]:
    """Create or replace after every check; ``None`` as the change when nothing changed.

    ``references_checked``: the caller validated the whole configuration (config apply),
    so the journey may be created later in the same transaction.
    """
    check_rule(rule)
    if not references_checked:
        await check_references(session=session, rule=rule)
    content = rule.content()
    row = await session.get(RuleRow, rule.key, with_for_update=True)
    before = None if row is None else row.rule()
    if row is not None and before is not None and before.content() == content:
        if row.enabled == rule.enabled:
            return row, None
        row.enabled = rule.enabled
        row.updated_at = utcnow()
        await session.flush()
        action: AuditAction = "enable" if rule.enabled else "disable"
        return row, Change("rule", rule.key, action, before.document(), rule.document())
    version = await _next_version(session=session, key=rule.key)
    session.add(RuleVersionRow(rule_key=rule.key, version=version, definition=content, actor=actor))
    if row is None:
        row = RuleRow(key=rule.key, definition=content, version=version, enabled=rule.enabled)
        session.add(row)
    else:
        row.definition = content
        row.version = version
        row.enabled = rule.enabled
        row.updated_at = utcnow()
    await session.flush()
    return row, Change(
        "rule",
        rule.key,
        "create" if before is None else "update",
        None if before is None else before.document(),
        rule.document(),
    )


async def set_enabled(
    *, session: AsyncSession, key: str, enabled: bool
) -> tuple[RuleRow | None, Change | None]:
    """Switch a rule on or off; ``(None, None)`` when there is no such rule."""
    row = await session.get(RuleRow, key, with_for_update=True)
    if row is None or row.enabled == enabled:
        return row, None
    before = row.rule().document()
    row.enabled = enabled
    row.updated_at = utcnow()
    await session.flush()
    action: AuditAction = "enable" if enabled else "disable"
    return row, Change("rule", key, action, before, row.rule().document())


async def delete_rule(*, session: AsyncSession, key: str) -> Change | None:
    """Delete the rule (its versions stay); ``None`` when there is no such rule."""
    row = await session.get(RuleRow, key, with_for_update=True)
    if row is None:
        return None
    before = row.rule().document()
    await session.delete(row)
    await session.flush()
    return Change("rule", key, "delete", before, None)
