"""Where each customer is in each journey now, for safar_customers_in_stage.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03

Filled from the moves already recorded; the recorder keeps it from then on.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "history_customer_stages",
        sa.Column("journey", sa.Text(), nullable=False),
        sa.Column("customer_id", sa.Text(), nullable=False),
        sa.Column("stage", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("journey", "customer_id", name="pk_history_customer_stages"),
    )
    op.create_index(
        "ix_history_customer_stages_journey_stage",
        "history_customer_stages",
        ["journey", "stage"],
    )
    op.execute(
        """
        INSERT INTO history_customer_stages (journey, customer_id, stage, at, seq)
        SELECT DISTINCT ON (journey, customer_id) journey, customer_id, to_stage, at, seq
        FROM history_transitions
        ORDER BY journey, customer_id, at DESC, seq DESC
        """
    )


def downgrade() -> None:
    op.drop_index("ix_history_customer_stages_journey_stage", "history_customer_stages")
    op.drop_table("history_customer_stages")
