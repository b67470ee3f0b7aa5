"""Configuration as a whole: serialised writes, recorded changes, apply and export."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from services.api.audit import service as audit
from services.api.audit.service import Change
from services.api.config.diff import FieldChange, field_changes
from services.api.config.models import ConfigVersionRow
from services.api.config.publisher import record_change
from services.api.journeys import service as journeys
from services.api.rules import service as rules
from shared.definition_checks import check_bundle, check_bundle_policy
from shared.definitions import Bundle, Journey

# Transaction-scoped advisory lock taken by every configuration write, so concurrent
# writers (several api processes too) never interleave their reads and writes.
_CONFIG_LOCK = 7311


async def lock_configuration(*, session: AsyncSession) -> None:
    """Serialise configuration writers until this transaction ends."""
    await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CONFIG_LOCK})


def _summary(changes: Sequence[Change]) -> str:
    return "; ".join(f"{c.action} {c.kind} {c.key}" for c in changes)


async def record_changes(
    *, session: AsyncSession, actor: str, changes: Sequence[Change | None], summary: str = ""
) -> int | None:
    """A new configuration version and its audit rows; ``None`` when nothing changed."""
    real = [change for change in changes if change is not None]
    if not real:
        return None
    version = await record_change(session=session, actor=actor, summary=summary or _summary(real))
    await audit.record(session=session, actor=actor, changes=real, config_version=version)
    return version


async def list_versions(*, session: AsyncSession, limit: int = 100) -> list[ConfigVersionRow]:
    query = select(ConfigVersionRow).order_by(ConfigVersionRow.version.desc()).limit(limit)
    return list(await session.scalars(query))


async def current_bundle(*, session: AsyncSession) -> Bundle:
    """Every journey and rule (disabled ones too), as ``safar export`` writes them."""
    return Bundle(
        journeys=[
            Journey.model_validate(row.definition)
            for row in await journeys.list_journeys(session=session)
        ],
        rules=[row.rule() for row in await rules.list_rules(session=session)],
    )


ItemKind = Literal["journey", "rule"]
ChangeKind = Literal["create", "update", "delete"]


@dataclass(frozen=True, slots=True)
class PlannedChange:
    kind: ItemKind
    key: str
    change: ChangeKind
    fields: list[FieldChange] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ApplyResult:
    dry_run: bool
    changes: list[PlannedChange]
    unchanged: int
    config_version: int | None


def _plan(
    kind: ItemKind, before: dict[str, Any], after: dict[str, Any]
) -> tuple[list[PlannedChange], int]:
    planned: list[PlannedChange] = []
    for key, document in after.items():
        if key not in before:
            planned.append(PlannedChange(kind, key, "create"))
        elif before[key] != document:
            planned.append(PlannedChange(kind, key, "update", field_changes(before[key], document)))
    planned += [PlannedChange(kind, key, "delete") for key in before if key not in after]
    return planned, sum(1 for key in after if before.get(key) == after[key])


async def apply_bundle(
    *, session: AsyncSession, bundle: Bundle, actor: str, dry_run: bool
) -> ApplyResult:
    """Make the configuration exactly ``bundle``: journeys and rules it does not name are
    deleted. One transaction, one configuration version (none when nothing changes)."""
    check_bundle(bundle)
    await lock_configuration(session=session)
    current = await current_bundle(session=session)
    journey_plan, same_journeys = _plan(
        "journey",
        {j.key: j.document() for j in current.journeys},
        {j.key: j.document() for j in bundle.journeys},
    )
    rule_plan, same_rules = _plan(
        "rule",
        {r.key: r.document() for r in current.rules},
        {r.key: r.document() for r in bundle.rules},
    )
    check_bundle_policy(bundle, {p.key for p in rule_plan if p.change != "delete"})
    planned = journey_plan + rule_plan
    unchanged = same_journeys + same_rules
    if dry_run or not planned:
        return ApplyResult(dry_run, planned, unchanged, None)

    # The bundle's references were checked as a whole (it is the whole configuration), so
    # single-item reference checks are skipped; the order is only for readable audit rows.
    wanted_journeys = {j.key: j for j in bundle.journeys}
    wanted_rules = {r.key: r for r in bundle.rules}
    changes: list[Change | None] = []
    for item in rule_plan:
        if item.change == "delete":
            changes.append(await rules.delete_rule(session=session, key=item.key))
    for item in journey_plan:
        if item.change == "delete":
            changes.append(
                await journeys.delete_journey(
                    session=session, key=item.key, references_checked=True
                )
            )
        else:
            _, change = await journeys.save_journey(
                session=session, journey=wanted_journeys[item.key], references_checked=True
            )
            changes.append(change)
    for item in rule_plan:
        if item.change != "delete":
            _, change = await rules.save_rule(
                session=session, rule=wanted_rules[item.key], actor=actor, references_checked=True
            )
            changes.append(change)
    counts = {
        done: sum(1 for p in planned if p.change == kind)
        for kind, done in (("create", "created"), ("update", "updated"), ("delete", "deleted"))
    }
    summary = "apply: " + ", ".join(f"{n} {done}" for done, n in counts.items() if n)
    version = await record_changes(
        session=session,
        actor=actor,
        changes=[*changes, Change("bundle", "config", "apply", None, counts)],
        summary=summary,
    )
    return ApplyResult(dry_run, planned, unchanged, version)
