"""Refuse webhooks to private, loopback and other non-public addresses (SSRF), DESIGN §7.

The host is resolved and every address it resolves to must be public. A name could resolve
differently a moment later (DNS rebinding); a deployment that must rule that out also routes
the dispatcher's egress through a proxy or firewall that enforces the same rule.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import httpx

from services.orchestrator.dispatcher.exceptions import DeliveryError, TargetRefusedError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def is_public(address: IPAddress) -> bool:
    """True for a globally routable unicast address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


async def refuse_private_target(url: httpx.URL) -> None:
    """Raise :class:`TargetRefusedError` unless every address of ``url``'s host is public."""
    host = url.host
    if not host:
        raise TargetRefusedError(f"the webhook url {url} has no host")
    try:
        addresses: set[IPAddress] = {ipaddress.ip_address(host)}
    except ValueError:
        addresses = await _resolve(host, url.port or (443 if url.scheme == "https" else 80))
    for address in sorted(addresses, key=str):
        if not is_public(address):
            raise TargetRefusedError(
                f"the webhook host {host} is {address}, a private or loopback address; "
                "set SAFAR_WEBHOOK_ALLOW_PRIVATE=true to allow such targets"
            )


async def _resolve(host: str, port: int) -> set[IPAddress]:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        # DNS may recover; an unknown name keeps failing until the retries run out.
        raise DeliveryError(f"cannot resolve {host}: {exc}", retriable=True) from exc
    return {ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos}
