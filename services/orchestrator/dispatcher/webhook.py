"""The webhook channel: a signed JSON POST (Standard Webhooks), DESIGN §7.

Every attempt of one action carries the same ``webhook-id`` (the action id) and a fresh
``webhook-timestamp`` and signature. Redirects are not followed: a 3xx fails the action,
since following it could lead anywhere, including to private addresses.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import httpx
import orjson
from pydantic import SecretStr

from services.orchestrator.dispatcher.channels import Delivered, envelope
from services.orchestrator.dispatcher.exceptions import DeliveryError
from services.orchestrator.dispatcher.http_client import Answer, HttpClient, HttpError
from services.orchestrator.dispatcher.retry_policy import is_retriable_status, parse_retry_after
from services.orchestrator.dispatcher.signatures import signature_headers
from shared.actions import ActionRecord
from shared.templates import TemplateRenderer
from shared.webhook_secret import decode_secret

USER_AGENT = "Safar-Webhooks/1"
_RESERVED_HEADERS = ("content-type", "webhook-id", "webhook-timestamp", "webhook-signature")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


_USERINFO = re.compile(r"(//)[^/?#\s]*@")  # to the last @ before the path


def without_credentials(text: str) -> str:
    """``text`` with the user and password of any url in it masked: errors are kept in
    history, dead letters and logs."""
    return _USERINFO.sub(r"\1[redacted]@", text)


@lru_cache(maxsize=1024)
def _parse_url(text: str) -> httpx.URL:
    """Most rules post to one fixed url: each is parsed once."""
    return httpx.URL(text)


class WebhookChannel:
    """Posts with :class:`HttpClient`; URLs are parsed and checked with httpx's URL type."""

    def __init__(
        self,
        client: HttpClient,
        renderer: TemplateRenderer,
        *,
        default_secret: SecretStr | None,
        timeout_s: float,
    ) -> None:
        self._client = client
        self._renderer = renderer
        self._default_secret = default_secret
        self._timeout_s = timeout_s

    async def deliver(self, action: ActionRecord, context: Mapping[str, Any]) -> Delivered:
        spec = action.spec
        url = self._target(self._renderer.render(str(spec.get("url") or ""), context, field="url"))
        key = self._signing_key(spec.get("secret"))
        headers: dict[str, str] = {}
        for name, value in (spec.get("headers") or {}).items():
            if not _HEADER_NAME.fullmatch(name):
                raise DeliveryError(f"{name!r} is not a valid header name", retriable=False)
            rendered = self._renderer.render(str(value), context, field=f"headers.{name}")
            if "\r" in rendered or "\n" in rendered:
                raise DeliveryError(f"header {name} renders to a line break", retriable=False)
            if name.lower() not in _RESERVED_HEADERS:
                headers[name] = rendered
        payload = self._renderer.render_tree(spec.get("payload") or {}, context, field="payload")
        body = orjson.dumps(envelope(action, payload))
        headers["Content-Type"] = "application/json"
        headers.update(signature_headers(key, action.action_id, int(time.time()), body))
        response = await self._post(url, body, headers)
        status = response.status_code
        if 200 <= status < 300:
            return Delivered(status)
        raise self._refusal(url, response)

    def _target(self, rendered: str) -> httpx.URL:
        try:
            url = _parse_url(rendered.strip())
        except httpx.InvalidURL as exc:
            message = without_credentials(f"the url {rendered!r} is invalid: {exc}")
            raise DeliveryError(message, retriable=False) from exc
        if url.scheme not in ("http", "https") or not url.host:
            message = without_credentials(
                f"the url {rendered!r} is not an http:// or https:// address"
            )
            raise DeliveryError(message, retriable=False)
        return url

    def _signing_key(self, rule_secret: object) -> bytes:
        secret = rule_secret if isinstance(rule_secret, str) and rule_secret else None
        if secret is None and self._default_secret is not None:
            secret = self._default_secret.get_secret_value()
        if not secret:
            raise DeliveryError(
                "no webhook secret to sign with: set the rule's action.secret or "
                "SAFAR_WEBHOOK_SECRET (whsec_<base64>)",
                retriable=False,
            )
        try:
            return decode_secret(secret)
        except ValueError as exc:
            raise DeliveryError(f"unusable webhook secret: {exc}", retriable=False) from exc

    async def _post(self, url: httpx.URL, body: bytes, headers: dict[str, str]) -> Answer:
        try:
            # One deadline for the whole attempt, connecting and reading included.
            async with asyncio.timeout(self._timeout_s):
                return await self._client.post(url, body, headers)
        except TimeoutError as exc:
            raise DeliveryError(
                f"{url.host} did not answer within {self._timeout_s:g}s", retriable=True
            ) from exc
        except (HttpError, OSError) as exc:
            raise DeliveryError(
                f"cannot reach {url.host}: {type(exc).__name__}: {exc}", retriable=True
            ) from exc

    def _refusal(self, url: httpx.URL, response: Answer) -> DeliveryError:
        status = response.status_code
        if 300 <= status < 400:
            location = without_credentials(response.location or "")
            return DeliveryError(
                f"{url.host} answered HTTP {status} (redirect to {location!r}); "
                "webhooks do not follow redirects: configure the final url",
                retriable=False,
                status_code=status,
            )
        detail = response.content[:200].decode(errors="replace").strip()
        message = f"{url.host} answered HTTP {status}" + (f": {detail}" if detail else "")
        retry_after = None
        if status in (429, 503):
            retry_after = parse_retry_after(response.retry_after, datetime.now(UTC))
        return DeliveryError(
            message,
            retriable=is_retriable_status(status),
            status_code=status,
            retry_after_s=retry_after,
        )
