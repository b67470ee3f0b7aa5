"""Configuration versions: every change to what the orchestrator runs gets a new one."""

from __future__ import annotations

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from services.api.db.base import Base, Timestamped


class ConfigVersionRow(Timestamped, Base):
    __tablename__ = "config_versions"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    actor: Mapped[str] = mapped_column(String(200))
    summary: Mapped[str] = mapped_column(String(500))
