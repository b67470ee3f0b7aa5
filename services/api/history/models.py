"""Tables the recorder fills from ``safar.history``.

Every row keyed by a history record carries that record's deterministic ``id`` as its
primary key, so a replayed record inserts nothing (``INSERT ... ON CONFLICT DO NOTHING``).
``history_actions`` folds the delivery attempts of one action into its latest status.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Identity, Index, Integer, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from services.api.db.base import Base


def _recorded_at() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now())


class TransitionRow(Base):
    """A customer moving between two stages of a journey."""

    __tablename__ = "history_transitions"
    __table_args__ = (
        Index("ix_history_transitions_journey_at", "journey", "at"),
        Index("ix_history_transitions_journey_customer", "journey", "customer_id", "at"),
        Index("ix_history_transitions_customer_at", "customer_id", "at"),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    # Insertion order: breaks ties between moves stamped with the same time.
    seq: Mapped[int] = mapped_column(BigInteger, Identity(), nullable=False)
    customer_id: Mapped[str] = mapped_column(Text)
    journey: Mapped[str] = mapped_column(Text)
    from_stage: Mapped[str | None] = mapped_column(Text)
    to_stage: Mapped[str] = mapped_column(Text)
    move: Mapped[str] = mapped_column(Text)
    event_id: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    recorded_at: Mapped[datetime] = _recorded_at()


class RuleOutcomeRow(Base):
    """One decision of a rule about one customer (triggered, scheduled, fired, ...)."""

    __tablename__ = "history_rule_outcomes"
    __table_args__ = (
        Index("ix_history_rule_outcomes_rule_at", "rule", "at"),
        Index("ix_history_rule_outcomes_customer_at", "customer_id", "at"),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    customer_id: Mapped[str] = mapped_column(Text)
    rule: Mapped[str] = mapped_column(Text)
    rule_version: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(Text)
    action_id: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[Any] = mapped_column(JSONB, nullable=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    recorded_at: Mapped[datetime] = _recorded_at()


class ActionAttemptRow(Base):
    """One delivery attempt of an action, as the dispatcher reported it."""

    __tablename__ = "history_action_attempts"
    __table_args__ = (
        Index("ix_history_action_attempts_customer_at", "customer_id", "at"),
        Index("ix_history_action_attempts_action_id", "action_id"),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    action_id: Mapped[str] = mapped_column(Text)
    customer_id: Mapped[str] = mapped_column(Text)
    rule: Mapped[str] = mapped_column(Text)
    channel: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    recorded_at: Mapped[datetime] = _recorded_at()


class ActionRow(Base):
    """The latest known status of one action (keyed by its dedupe key ``action_id``).

    ``progress`` orders what the recorder learns about an action so that records arriving
    late or twice never move the status back: see ``history.records.action_progress``.
    """

    __tablename__ = "history_actions"
    __table_args__ = (
        Index("ix_history_actions_customer_id", "customer_id", "updated_at"),
        Index("ix_history_actions_rule_status", "rule", "status", "updated_at"),
        Index("ix_history_actions_status", "status", "updated_at"),
    )

    action_id: Mapped[str] = mapped_column(Text, primary_key=True)
    customer_id: Mapped[str] = mapped_column(Text)
    rule: Mapped[str] = mapped_column(Text)
    channel: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer)
    progress: Mapped[int] = mapped_column(BigInteger)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ConversionRow(Base):
    """A goal event attributed to an action, for the treated or the holdout group."""

    __tablename__ = "history_conversions"
    __table_args__ = (
        Index("ix_history_conversions_rule_at", "rule", "at"),
        Index("ix_history_conversions_customer_at", "customer_id", "at"),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    customer_id: Mapped[str] = mapped_column(Text)
    rule: Mapped[str] = mapped_column(Text)
    action_id: Mapped[str | None] = mapped_column(Text)
    group_name: Mapped[str] = mapped_column(Text)
    event_id: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    recorded_at: Mapped[datetime] = _recorded_at()


class EventArchiveRow(Base):
    """A customer's event as the orchestrator processed it (the archive)."""

    __tablename__ = "history_events"
    __table_args__ = (Index("ix_history_events_customer_at", "customer_id", "at"),)

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    event_id: Mapped[str] = mapped_column(Text)
    customer_id: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(Text)
    name: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    recorded_at: Mapped[datetime] = _recorded_at()


class ErasureRow(Base):
    """An erased customer, by digest only: history produced before ``erased_at`` that
    reaches the recorder late (or in a replay) is dropped instead of resurrecting them."""

    __tablename__ = "history_erasures"

    customer_digest: Mapped[str] = mapped_column(Text, primary_key=True)
    erased_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CustomerStageRow(Base):
    """Where each customer is in each journey now: their latest recorded move, kept by the
    recorder in the transaction that stores the move. The api counts it for
    ``safar_customers_in_stage``: a count that survives restarts of every process."""

    __tablename__ = "history_customer_stages"
    __table_args__ = (Index("ix_history_customer_stages_journey_stage", "journey", "stage"),)

    journey: Mapped[str] = mapped_column(Text, primary_key=True)
    customer_id: Mapped[str] = mapped_column(Text, primary_key=True)
    stage: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    seq: Mapped[int] = mapped_column(BigInteger)  # the move's seq in history_transitions


CUSTOMER_TABLES = (
    TransitionRow,
    CustomerStageRow,
    RuleOutcomeRow,
    ActionAttemptRow,
    ActionRow,
    ConversionRow,
    EventArchiveRow,
)
