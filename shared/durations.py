"""Durations as marketing-ops write them: ``90s``, ``30m``, ``24h``, ``14d``."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, PlainSerializer, WithJsonSchema

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
# Longer than this is almost always a typo (``14w`` for ``14d``); a year covers real uses.
LONGEST = timedelta(days=366)


def parse_duration(value: object) -> timedelta:
    """Parse ``"30m"`` (or a number of seconds, or a timedelta) into a timedelta."""
    if isinstance(value, timedelta):
        return value
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return timedelta(seconds=value)
        if isinstance(value, str):
            match = _PATTERN.match(value)
            if match:
                return timedelta(seconds=float(match[1]) * _UNITS[match[2]])
    except OverflowError:
        raise ValueError(f"{value!r} is far too long for a duration") from None
    raise ValueError(f"{value!r} is not a duration; write e.g. 90s, 30m, 24h or 14d")


def format_duration(value: timedelta) -> str:
    """The shortest exact spelling of a duration, in days at most (``14d``, not ``2w``)."""
    seconds = value.total_seconds()
    if seconds == 0:
        return "0s"
    for unit in ("d", "h", "m", "s"):
        size = _UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{round(seconds * 1000)}ms"


def _bounded(value: timedelta) -> timedelta:
    if value > LONGEST:
        raise ValueError(f"{format_duration(value)} is longer than a year (366d)")
    if value < timedelta(0):
        raise ValueError("a duration cannot be negative")
    return value


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("the duration must be positive, e.g. 90s, 30m, 24h or 14d")
    return value


_SCHEMA = WithJsonSchema(
    {
        "type": "string",
        "pattern": r"^\d+(\.\d+)?(ms|s|m|h|d|w)$",
        "examples": ["90s", "30m", "24h", "14d"],
    }
)
_SERIALIZER = PlainSerializer(format_duration, return_type=str)

# Zero allowed (a wait's grace); up to a year.
Duration = Annotated[
    timedelta, BeforeValidator(parse_duration), AfterValidator(_bounded), _SERIALIZER, _SCHEMA
]
# More than zero, up to a year: waits, limit windows, goal windows.
PositiveDuration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    AfterValidator(_bounded),
    AfterValidator(_positive),
    _SERIALIZER,
    _SCHEMA,
]
