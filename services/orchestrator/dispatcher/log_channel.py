"""The log channel: one structured log line per action (``extra`` fields in JSON logs)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from services.orchestrator.dispatcher.channels import Delivered
from shared.actions import ActionRecord
from shared.templates import TemplateRenderer

log = logging.getLogger(__name__)


class LogChannel:
    def __init__(self, renderer: TemplateRenderer) -> None:
        self._renderer = renderer

    async def deliver(self, action: ActionRecord, context: Mapping[str, Any]) -> Delivered:
        message = self._renderer.render(
            str(action.spec.get("message") or ""), context, field="message"
        )
        log.info(
            "action %s of rule %s for %s: %s",
            action.action_id,
            action.rule,
            action.customer_id,
            message,
            extra={
                "action_id": action.action_id,
                "rule": action.rule,
                "customer_id": action.customer_id,
                "action_message": message,
            },
        )
        return Delivered()
