"""Writing history: idempotent batch inserts for the recorder, and erasure of a customer.

Keyword-only functions that receive the session; the caller owns the transaction.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, case, delete, func, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.api.history.models import (
    CUSTOMER_TABLES,
    ActionAttemptRow,
    ActionRow,
    ConversionRow,
    CustomerStageRow,
    ErasureRow,
    EventArchiveRow,
    RuleOutcomeRow,
    TransitionRow,
)
from services.api.history.records import (
    ActionOutcomeRecord,
    ConversionRecord,
    EventRecord,
    HistoryRecord,
    RuleRecord,
    TransitionRecord,
    action_progress,
    decided_status,
)

# Recorder batches hold it shared, an erasure exclusively: rows of a batch in flight can
# never land after the erasure that should have removed them.
ERASURE_LOCK = 7_311_008

_CHUNK = 500  # rows per INSERT: stays far below PostgreSQL's 32,767 bind parameters

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Received:
    """A decoded record and when it was produced (its Kafka timestamp)."""

    record: HistoryRecord
    produced_at: datetime


@dataclass(slots=True)
class BatchResult:
    """Per record kind: rows new to the database, replays recognised, records of erased
    customers dropped."""

    inserted: Counter[str] = field(default_factory=Counter)
    duplicate: Counter[str] = field(default_factory=Counter)
    erased: Counter[str] = field(default_factory=Counter)


def customer_digest(customer_id: str) -> str:
    """What an erasure keeps of a customer id: a digest, never the id itself."""
    return hashlib.sha256(b"safar-erasure\x1f" + customer_id.encode()).hexdigest()


def _chunks(rows: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(rows), _CHUNK):
        yield rows[start : start + _CHUNK]


async def _erased_at(
    *, session: AsyncSession, customer_ids: Collection[str]
) -> dict[str, datetime]:
    digests = {customer_digest(c): c for c in customer_ids}
    rows = await session.execute(
        select(ErasureRow.customer_digest, ErasureRow.erased_at).where(
            ErasureRow.customer_digest.in_(list(digests))
        )
    )
    return {digests[digest]: at for digest, at in rows.tuples()}


async def _insert_new(
    *, session: AsyncSession, model: type[Any], rows: list[dict[str, Any]]
) -> list[Any]:
    """Insert rows keyed by record id; returns the rows that were new (``id`` and, for
    transitions, ``seq``)."""
    unique = list({row["id"]: row for row in rows}.values())
    returned = (model.id, model.seq) if model is TransitionRow else (model.id,)
    new: list[Any] = []
    for chunk in _chunks(unique):
        statement = (
            pg_insert(model)
            .values(list(chunk))
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(*returned)
        )
        new += (await session.execute(statement)).all()
    return new


async def _move_customers(
    *, session: AsyncSession, transitions: list[dict[str, Any]], new: list[Any]
) -> None:
    """Each customer's latest new move becomes their stage in its journey, unless a later
    one is there already (records of one customer may reach the recorder out of order)."""
    seq = {row.id: row.seq for row in new}
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for move in transitions:
        if move["id"] in seq:
            row = {
                "journey": move["journey"],
                "customer_id": move["customer_id"],
                "stage": move["to_stage"],
                "at": move["at"],
                "seq": seq[move["id"]],
            }
            key = (row["journey"], row["customer_id"])
            if key not in latest or (latest[key]["at"], latest[key]["seq"]) < (
                row["at"],
                row["seq"],
            ):
                latest[key] = row
    for chunk in _chunks(list(latest.values())):
        statement = pg_insert(CustomerStageRow).values(list(chunk))
        excluded = statement.excluded
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=[CustomerStageRow.journey, CustomerStageRow.customer_id],
                set_={"stage": excluded.stage, "at": excluded.at, "seq": excluded.seq},
                where=tuple_(CustomerStageRow.at, CustomerStageRow.seq)
                < tuple_(excluded.at, excluded.seq),
            )
        )


def _merge_action(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Two facts about one action, combined as the upsert below combines them."""
    latest, other = (new, old) if new["progress"] > old["progress"] else (old, new)
    return latest | {
        "channel": latest["channel"] or other["channel"],
        "created_at": min(old["created_at"], new["created_at"]),
        "updated_at": max(old["updated_at"], new["updated_at"]),
        "attempts": max(old["attempts"], new["attempts"]),
    }


def _action_upsert(rows: Sequence[dict[str, Any]]) -> Any:
    """Insert actions, or fold them into the stored ones: the higher ``progress`` wins."""
    statement = pg_insert(ActionRow).values(list(rows))
    incoming = statement.excluded
    newer = incoming.progress > ActionRow.progress

    def pick(column: str) -> ColumnElement[Any]:
        return case((newer, incoming[column]), else_=ActionRow.__table__.c[column])

    return statement.on_conflict_do_update(
        index_elements=[ActionRow.action_id],
        set_={
            "status": pick("status"),
            "progress": pick("progress"),
            "status_code": pick("status_code"),
            "error": pick("error"),
            "rule": pick("rule"),
            "attempts": func.greatest(ActionRow.attempts, incoming.attempts),
            "channel": func.coalesce(pick("channel"), ActionRow.channel, incoming.channel),
            "created_at": func.least(ActionRow.created_at, incoming.created_at),
            "updated_at": func.greatest(ActionRow.updated_at, incoming.updated_at),
        },
    )


async def _upsert_actions(*, session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    merged: dict[str, dict[str, Any]] = {}
    for row in rows:
        known = merged.get(row["action_id"])
        merged[row["action_id"]] = row if known is None else _merge_action(known, row)
    for chunk in _chunks(list(merged.values())):
        await session.execute(_action_upsert(chunk))


def _action_row(
    *,
    action_id: str,
    customer_id: str,
    rule: str,
    channel: str | None,
    status: str,
    attempt: int,
    at: datetime,
    status_code: int | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    return {
        "action_id": action_id,
        "customer_id": customer_id,
        "rule": rule,
        "channel": channel,
        "status": status,
        "attempts": attempt,
        "progress": action_progress(status, attempt),
        "status_code": status_code,
        "error": error,
        "created_at": at,
        "updated_at": at,
    }


@dataclass(slots=True)
class _Rows:
    transitions: list[dict[str, Any]] = field(default_factory=list)
    rules: list[dict[str, Any]] = field(default_factory=list)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    conversions: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    def add(self, record: HistoryRecord) -> None:
        base = {"id": record.id, "customer_id": record.customer_id, "at": record.at}
        match record:
            case TransitionRecord():
                self.transitions.append(
                    base
                    | record.model_dump(include={"journey", "from_stage", "to_stage", "move"})
                    | {"event_id": record.event_id}
                )
            case RuleRecord():
                self.rules.append(
                    base
                    | record.model_dump(
                        include={"rule", "rule_version", "outcome", "action_id", "detail"}
                    )
                )
                status = decided_status(record.outcome)
                if record.action_id and status:
                    self.actions.append(
                        _action_row(
                            action_id=record.action_id,
                            customer_id=record.customer_id,
                            rule=record.rule,
                            channel=None,
                            status=status,
                            attempt=0,
                            at=record.at,
                        )
                    )
            case ActionOutcomeRecord():
                fields = record.model_dump(
                    include={"action_id", "rule", "channel", "status", "attempt"}
                    | {"status_code", "error"}
                )
                self.attempts.append(base | fields)
                self.actions.append(
                    _action_row(
                        action_id=record.action_id,
                        customer_id=record.customer_id,
                        rule=record.rule,
                        channel=record.channel,
                        status=record.status,
                        attempt=record.attempt,
                        at=record.at,
                        status_code=record.status_code,
                        error=record.error,
                    )
                )
            case ConversionRecord():
                self.conversions.append(
                    base
                    | {
                        "rule": record.rule,
                        "action_id": record.action_id,
                        "group_name": record.group,
                        "event_id": record.event_id,
                    }
                )
            case EventRecord():
                self.events.append(
                    base
                    | {
                        "event_id": record.event_id,
                        "type": record.type,
                        "name": record.name,
                        "payload": record.event,
                    }
                )


async def record_batch(*, session: AsyncSession, received: Sequence[Received]) -> BatchResult:
    """Store one batch of history records; a record already stored inserts nothing."""
    result = BatchResult()
    if not received:
        return result
    await session.execute(select(func.pg_advisory_xact_lock_shared(ERASURE_LOCK)))
    erased = await _erased_at(
        session=session, customer_ids={item.record.customer_id for item in received}
    )
    rows = _Rows()
    seen: Counter[str] = Counter()
    for item in received:
        cut = erased.get(item.record.customer_id)
        if cut is not None and item.produced_at <= cut:
            result.erased[item.record.kind] += 1
            continue
        seen[item.record.kind] += 1
        rows.add(item.record)
    for kind, model, table_rows in (
        ("transition", TransitionRow, rows.transitions),
        ("rule", RuleOutcomeRow, rows.rules),
        ("action", ActionAttemptRow, rows.attempts),
        ("conversion", ConversionRow, rows.conversions),
        ("event", EventArchiveRow, rows.events),
    ):
        if table_rows:
            new = await _insert_new(session=session, model=model, rows=table_rows)
            result.inserted[kind] = len(new)
            result.duplicate[kind] = seen[kind] - len(new)
            if model is TransitionRow and new:
                await _move_customers(session=session, transitions=table_rows, new=new)
    if rows.actions:
        await _upsert_actions(session=session, rows=rows.actions)
    return result


async def erase_history(
    *, session: AsyncSession, customer_ids: Collection[str], at: datetime
) -> dict[str, int]:
    """Delete every row of these customers and remember the erasure (by digest only).

    Returns rows deleted per table.
    """
    await session.execute(select(func.pg_advisory_xact_lock(ERASURE_LOCK)))
    ids = sorted(set(customer_ids))
    statement = pg_insert(ErasureRow).values(
        [{"customer_digest": customer_digest(c), "erased_at": at} for c in ids]
    )
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[ErasureRow.customer_digest],
            set_={"erased_at": func.greatest(ErasureRow.erased_at, statement.excluded.erased_at)},
        )
    )
    deleted: dict[str, int] = {}
    for model in CUSTOMER_TABLES:
        outcome = await session.execute(delete(model).where(model.customer_id.in_(ids)))
        deleted[model.__tablename__] = int(getattr(outcome, "rowcount", 0) or 0)
    return deleted
