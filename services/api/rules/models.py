"""Rules as stored: the current definition and every version ever saved."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, DateTime, Integer, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from services.api.db.base import Base, Timestamped, utcnow
from shared.definitions import Rule


class RuleRow(Timestamped, Base):
    """The current version of a rule. ``definition`` is its content without ``enabled``:
    switching a rule off and on again is not a new version (its action ids stay)."""

    __tablename__ = "rules"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    definition: Mapped[dict[str, Any]] = mapped_column(JSONB)
    version: Mapped[int] = mapped_column(Integer)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    def rule(self) -> Rule:
        return Rule.model_validate({**self.definition, "enabled": self.enabled})


class RuleVersionRow(Timestamped, Base):
    """Every version of every rule, kept after the rule is deleted: a rule created again
    under the same key continues the numbering, so its action ids never repeat."""

    __tablename__ = "rule_versions"

    rule_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    definition: Mapped[dict[str, Any]] = mapped_column(JSONB)
    actor: Mapped[str] = mapped_column(String(200))
