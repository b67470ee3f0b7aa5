"""The email channel: SMTP through aiosmtplib, plain text and/or HTML, DESIGN §7.

The Message-ID is derived from the action id, so a duplicate from a crash window is
recognisable in the recipient's mailbox as the same message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses
from typing import Any

import aiosmtplib

from services.orchestrator.dispatcher.channels import Delivered
from services.orchestrator.dispatcher.exceptions import DeliveryError
from shared.actions import ActionRecord
from shared.settings import Settings
from shared.templates import TemplateRenderer

_SMTP_OK = 250


class EmailChannel:
    def __init__(self, settings: Settings, renderer: TemplateRenderer) -> None:
        self._renderer = renderer
        self._sender = settings.smtp_sender
        self._host = settings.smtp_host
        self._port = settings.smtp_port
        self._username = settings.smtp_username
        self._password = settings.smtp_password
        self._security = settings.smtp_security
        self._timeout_s = settings.smtp_timeout_s

    async def deliver(self, action: ActionRecord, context: Mapping[str, Any]) -> Delivered:
        message = self.render(action, context)
        try:
            # The deadline is the whole exchange's: aiosmtplib's own is per command, so a
            # server that answers slowly could hold the delivery many times as long.
            async with asyncio.timeout(self._timeout_s):
                await aiosmtplib.send(
                    message,
                    hostname=self._host,
                    port=self._port,
                    username=self._username,
                    password=self._password.get_secret_value() if self._password else None,
                    use_tls=self._security == "tls",
                    start_tls=self._security == "starttls",
                    timeout=self._timeout_s,
                )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [refused.code for refused in exc.recipients]
            raise DeliveryError(
                f"the SMTP server refused every recipient: {exc}",
                retriable=any(code < 500 for code in codes),
                status_code=max(codes, default=None),
            ) from exc
        except aiosmtplib.SMTPResponseException as exc:
            # 4xx: try again later; 5xx: the server will not take this message.
            raise DeliveryError(
                f"the SMTP server answered {exc.code}: {exc.message}",
                retriable=exc.code < 500,
                status_code=exc.code,
            ) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:  # TimeoutError is an OSError
            raise DeliveryError(
                f"cannot send through {self._host}:{self._port}: {type(exc).__name__}: {exc}",
                retriable=True,
            ) from exc
        return Delivered(_SMTP_OK)

    def render(self, action: ActionRecord, context: Mapping[str, Any]) -> EmailMessage:
        """The message of ``action``, its templates rendered with ``context``."""
        spec = action.spec
        render = self._renderer.render
        to = render(str(spec.get("to") or ""), context, field="to").strip()
        if not to:
            raise DeliveryError("the recipient (to) renders empty", retriable=False)
        recipients = getaddresses([to])
        templated = "{{" in str(spec.get("to")) or "{%" in str(spec.get("to"))
        if templated and (len(recipients) != 1 or "@" not in recipients[0][1]):
            # A trait such as "ada@example.com, eve@example.com" would mail both; a list the
            # rule spells out is the rule's own.
            raise DeliveryError(
                f"the recipient (to) must be one address; it renders to {to!r}", retriable=False
            )
        subject = render(str(spec.get("subject") or ""), context, field="subject").strip()
        body = spec.get("body")
        html = spec.get("html")
        text_part = render(str(body), context, field="body") if body else None
        html_part = render(str(html), context, field="html", html=True) if html else None
        message = EmailMessage()
        try:
            message["From"] = self._sender
            message["To"] = to
            message["Subject"] = subject
        except ValueError as exc:  # a rendered header with a line break, say
            raise DeliveryError(f"unusable email header: {exc}", retriable=False) from exc
        message["Message-ID"] = f"<{action.action_id}@safar>"
        message["Date"] = format_datetime(datetime.now(UTC))
        message["X-Safar-Action-Id"] = action.action_id
        if text_part is not None:
            message.set_content(text_part)
            if html_part is not None:
                message.add_alternative(html_part, subtype="html")
        else:
            message.set_content(html_part or "", subtype="html")
        return message
