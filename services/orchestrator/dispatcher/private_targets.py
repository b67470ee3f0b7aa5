"""Refuse webhooks to private, loopback and other non-public addresses (SSRF), DESIGN §7.

The host is resolved and every address it resolves to must be public; the webhook client
then connects to one of those very addresses (not to the name again, which could resolve
differently a moment later: DNS rebinding). A kept-alive connection was checked when made.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

from services.orchestrator.dispatcher.exceptions import DeliveryError, TargetRefusedError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# IPv6 prefixes whose last 32 bits are an IPv4 address a gateway or the host itself may
# reach: well-known NAT64 (RFC 6052) and the deprecated IPv4-compatible form.
_CARRYING_IPV4 = tuple(ipaddress.IPv6Network(prefix) for prefix in ("64:ff9b::/96", "::/96"))
# Local-use NAT64 (RFC 8215): translated inside one network, never public.
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")


def is_public(address: IPAddress) -> bool:
    """True for a globally routable unicast address; for an IPv6 address that carries an
    IPv4 one (mapped, 6to4, NAT64, IPv4-compatible), that IPv4 address must be."""
    if isinstance(address, ipaddress.IPv6Address):
        if address in _LOCAL_NAT64:
            return False
        address = _carried_ipv4(address) or address
    return address.is_global and not address.is_multicast


def _carried_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if any(address in prefix for prefix in _CARRYING_IPV4):
        return ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
    return None


async def public_addresses(host: str, port: int) -> list[str]:
    """The addresses of ``host`` to connect to; raises :class:`TargetRefusedError` unless
    every one of them is public."""
    if not host:
        raise TargetRefusedError("the webhook url has no host")
    try:
        addresses: list[IPAddress] = [ipaddress.ip_address(host)]
    except ValueError:
        addresses = await _resolve(host, port)
    for address in addresses:
        if not is_public(address):
            raise TargetRefusedError(
                f"the webhook host {host} is {address}, a private or loopback address; "
                "set SAFAR_WEBHOOK_ALLOW_PRIVATE=true to allow such targets"
            )
    return [str(address) for address in addresses]


async def _resolve(host: str, port: int) -> list[IPAddress]:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        # DNS may recover; an unknown name keeps failing until the retries run out.
        raise DeliveryError(f"cannot resolve {host}: {exc}", retriable=True) from exc
    # In the resolver's order of preference, each once (zone ids dropped).
    found = (ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos)
    return list(dict.fromkeys(found))
