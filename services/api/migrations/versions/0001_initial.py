"""Journeys, credentials and configuration versions.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _created() -> sa.Column:
    return sa.Column("created_at", sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    op.create_table(
        "journeys",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("definition", postgresql.JSONB(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        _created(),
        sa.PrimaryKeyConstraint("key", name="pk_journeys"),
    )
    for table in ("sources", "api_keys"):
        columns: list[sa.schema.SchemaItem] = [
            sa.Column("id", sa.Uuid(), nullable=False),
            sa.Column("name", sa.String(200), nullable=False),
        ]
        if table == "api_keys":
            columns.append(sa.Column("role", sa.String(16), nullable=False))
        op.create_table(
            table,
            *columns,
            sa.Column("key_hash", sa.String(64), nullable=False),
            sa.Column("key_prefix", sa.String(12), nullable=False),
            sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
            _created(),
            sa.PrimaryKeyConstraint("id", name=f"pk_{table}"),
            sa.UniqueConstraint("key_hash", name=f"uq_{table}_key_hash"),
        )
    op.create_table(
        "config_versions",
        sa.Column("version", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("summary", sa.String(500), nullable=False),
        _created(),
        sa.PrimaryKeyConstraint("version", name="pk_config_versions"),
    )


def downgrade() -> None:
    for table in ("config_versions", "api_keys", "sources", "journeys"):
        op.drop_table(table)
