"""Every table, imported in one place for Alembic's autogenerate and metadata."""

from services.api.access.models import ApiKeyRow, SourceRow
from services.api.audit.models import AuditRow
from services.api.config.models import ConfigVersionRow
from services.api.db.base import Base
from services.api.history.models import (
    ActionAttemptRow,
    ActionRow,
    ConversionRow,
    ErasureRow,
    EventArchiveRow,
    RuleOutcomeRow,
    TransitionRow,
)
from services.api.journeys.models import JourneyRow
from services.api.rules.models import RuleRow, RuleVersionRow

__all__ = [
    "ActionAttemptRow",
    "ActionRow",
    "ApiKeyRow",
    "AuditRow",
    "Base",
    "ConfigVersionRow",
    "ConversionRow",
    "ErasureRow",
    "EventArchiveRow",
    "JourneyRow",
    "RuleOutcomeRow",
    "RuleRow",
    "RuleVersionRow",
    "SourceRow",
    "TransitionRow",
]
