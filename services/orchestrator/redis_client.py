"""The orchestrator's Redis client.

redis-py guards every command with its socket timeout (5 s unless told): a task per send and
a timeout context per reply, which measured about a tenth of the events loop's CPU per event
(and a third of the raw limit's in ``bench orchestrator``). The orchestrator's loops cannot
progress without Redis anyway, so they wait for a slow one instead. A lost connection is
noticed by TCP: keepalive probes after 5 s of silence, and a send left unacknowledged for
11 s fails (``TCP_USER_TIMEOUT``); the loops then retry as in any outage. A Redis that is
stalled but alive (stopped, or stuck in a long script) is waited for; readiness checks are
bounded on their own (``shared.http``).

Commands are packed by hiredis (C) instead of redis-py's asyncio connection, which packs in
Python: the profile and timer writes carry many arguments, and packing them was about a
tenth of the events loop's CPU.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection, Connection

from shared.settings import Settings

_CONNECT_TIMEOUT_S = 5.0
# Probe after 5 s of silence, every 2 s, give up after 3 missed probes; and give up on data
# unacknowledged for 11 s, when keepalive does not probe (Linux names; others are skipped).
_KEEPALIVE = {"TCP_KEEPIDLE": 5, "TCP_KEEPINTVL": 2, "TCP_KEEPCNT": 3, "TCP_USER_TIMEOUT": 11_000}


def orchestrator_redis(settings: Settings) -> Redis:
    """A client without per-command timeouts, with keepalive probes on its TCP connections
    (a Unix socket has no peer to lose on a network, and its connections take no TCP
    options)."""
    redis = Redis.from_url(
        settings.require("redis_url"),
        socket_timeout=None,
        socket_connect_timeout=_CONNECT_TIMEOUT_S,
    )
    pool = redis.connection_pool
    if issubclass(pool.connection_class, Connection):  # tcp or tls, as the url's scheme says
        pool.connection_kwargs["socket_keepalive"] = True
        pool.connection_kwargs["socket_keepalive_options"] = {
            getattr(socket, name): value
            for name, value in _KEEPALIVE.items()
            if hasattr(socket, name)
        }
    # The scheme's connection class (tcp, tls or unix socket), packing with hiredis.
    pool.connection_class = type(
        f"Hiredis{pool.connection_class.__name__}", (_HiredisPacking, pool.connection_class), {}
    )
    return redis


class _HiredisPacking(AbstractConnection):
    def pack_command(self, *args: Any) -> list[bytes]:
        return [hiredis.pack_command(_split_name(args))]

    def pack_commands(self, commands: Iterable[Iterable[Any]]) -> list[bytes]:
        return [b"".join(hiredis.pack_command(_split_name(tuple(c))) for c in commands)]


def _split_name(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Commands named in two words ("SCRIPT LOAD") go to Redis as two arguments, as redis-py
    sends them."""
    name = args[0]
    if isinstance(name, str) and " " in name:
        return (*name.encode().split(), *args[1:])
    if isinstance(name, bytes) and b" " in name:
        return (*name.split(), *args[1:])
    return args
