"""History and analytics: what the recorder writes from safar.history.

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-26

A branch beside 0002: the app upgrades to "heads", so both apply in either order.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0001"
branch_labels = None
depends_on = None


def _at(name: str = "at") -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def _recorded_at() -> sa.Column:
    return sa.Column(
        "recorded_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
    )


def upgrade() -> None:
    op.create_table(
        "history_transitions",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("customer_id", sa.Text(), nullable=False),
        sa.Column("journey", sa.Text(), nullable=False),
        sa.Column("from_stage", sa.Text(), nullable=True),
        sa.Column("to_stage", sa.Text(), nullable=False),
        sa.Column("move", sa.Text(), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=True),
        _at(),
        _recorded_at(),
        sa.PrimaryKeyConstraint("id", name="pk_history_transitions"),
    )
    op.create_index("ix_history_transitions_journey_at", "history_transitions", ["journey", "at"])
    op.create_index(
        "ix_history_transitions_journey_customer",
        "history_transitions",
        ["journey", "customer_id", "at"],
    )
    op.create_index(
        "ix_history_transitions_customer_at", "history_transitions", ["customer_id", "at"]
    )

    op.create_table(
        "history_rule_outcomes",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("customer_id", sa.Text(), nullable=False),
        sa.Column("rule", sa.Text(), nullable=False),
        sa.Column("rule_version", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("action_id", sa.Text(), nullable=True),
        sa.Column("detail", postgresql.JSONB(), nullable=True),
        _at(),
        _recorded_at(),
        sa.PrimaryKeyConstraint("id", name="pk_history_rule_outcomes"),
    )
    op.create_index("ix_history_rule_outcomes_rule_at", "history_rule_outcomes", ["rule", "at"])
    op.create_index(
        "ix_history_rule_outcomes_customer_at", "history_rule_outcomes", ["customer_id", "at"]
    )

    op.create_table(
        "history_action_attempts",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("action_id", sa.Text(), nullable=False),
        sa.Column("customer_id", sa.Text(), nullable=False),
        sa.Column("rule", sa.Text(), nullable=False),
        sa.Column("channel", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        _at(),
        _recorded_at(),
        sa.PrimaryKeyConstraint("id", name="pk_history_action_attempts"),
    )
    op.create_index(
        "ix_history_action_attempts_customer_at",
        "history_action_attempts",
        ["customer_id", "at"],
    )
    op.create_index(
        "ix_history_action_attempts_action_id", "history_action_attempts", ["action_id"]
    )

    op.create_table(
        "history_actions",
        sa.Column("action_id", sa.Text(), nullable=False),
        sa.Column("customer_id", sa.Text(), nullable=False),
        sa.Column("rule", sa.Text(), nullable=False),
        sa.Column("channel", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("progress", sa.BigInteger(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        _at("created_at"),
        _at("updated_at"),
        sa.PrimaryKeyConstraint("action_id", name="pk_history_actions"),
    )
    op.create_index(
        "ix_history_actions_customer_id", "history_actions", ["customer_id", "updated_at"]
    )
    op.create_index(
        "ix_history_actions_rule_status", "history_actions", ["rule", "status", "updated_at"]
    )
    op.create_index("ix_history_actions_status", "history_actions", ["status", "updated_at"])

    op.create_table(
        "history_conversions",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("customer_id", sa.Text(), nullable=False),
        sa.Column("rule", sa.Text(), nullable=False),
        sa.Column("action_id", sa.Text(), nullable=True),
        sa.Column("group_name", sa.Text(), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        _at(),
        _recorded_at(),
        sa.PrimaryKeyConstraint("id", name="pk_history_conversions"),
    )
    op.create_index("ix_history_conversions_rule_at", "history_conversions", ["rule", "at"])
    op.create_index(
        "ix_history_conversions_customer_at", "history_conversions", ["customer_id", "at"]
    )

    op.create_table(
        "history_events",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("customer_id", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("payload", postgresql.JSONB(), nullable=False),
        _at(),
        _recorded_at(),
        sa.PrimaryKeyConstraint("id", name="pk_history_events"),
    )
    op.create_index("ix_history_events_customer_at", "history_events", ["customer_id", "at"])

    op.create_table(
        "history_erasures",
        sa.Column("customer_digest", sa.Text(), nullable=False),
        _at("erased_at"),
        sa.PrimaryKeyConstraint("customer_digest", name="pk_history_erasures"),
    )


def downgrade() -> None:
    for table in (
        "history_erasures",
        "history_events",
        "history_conversions",
        "history_actions",
        "history_action_attempts",
        "history_rule_outcomes",
        "history_transitions",
    ):
        op.drop_table(table)
