"""Every table, imported in one place for Alembic's autogenerate and metadata."""

from services.api.access.models import ApiKeyRow, SourceRow
from services.api.config.models import ConfigVersionRow
from services.api.db.base import Base
from services.api.journeys.models import JourneyRow

__all__ = ["ApiKeyRow", "Base", "ConfigVersionRow", "JourneyRow", "SourceRow"]
