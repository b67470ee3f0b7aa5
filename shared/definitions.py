"""The one canonical model of journeys and rules (DESIGN §6), used by api and orchestrator.

Shape checks live here; CEL and template compilation live in ``shared.definition_checks``
so that a definition that parses here but does not compile is still refused before it is
stored.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from shared.durations import Duration, PositiveDuration
from shared.topics import is_safar_topic

Key = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
EventName = Annotated[str, Field(min_length=1, max_length=200)]
Expression = Annotated[str, Field(min_length=1, max_length=4000)]
_CLOCK = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class Definition(BaseModel):
    # Errors never quote the input: it may hold a webhook secret or header values.
    model_config = ConfigDict(
        extra="forbid", populate_by_name=True, frozen=True, hide_input_in_errors=True
    )

    def document(self) -> dict[str, Any]:
        """The JSON form as stored and compared: aliases (``if``, ``for``), no nulls."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class Stage(Definition):
    key: Key
    name: str | None = None
    when: Expression = "true"


class Journey(Definition):
    key: Key
    name: str | None = None
    allow_backward: bool = False
    enabled: bool = True
    stages: list[Stage] = Field(min_length=1, max_length=50)

    @field_validator("stages")
    @classmethod
    def _unique_stages(cls, stages: list[Stage]) -> list[Stage]:
        seen: set[str] = set()
        for stage in stages:
            if stage.key in seen:
                raise ValueError(f"stage {stage.key!r} appears twice")
            seen.add(stage.key)
        return stages

    def stage_index(self, key: str) -> int:
        return next(i for i, s in enumerate(self.stages) if s.key == key)


class StageRef(Definition):
    journey: Key
    stage: Key


class Trigger(Definition):
    """Exactly one of: an event name, or entering a stage of a journey."""

    event: EventName | None = None
    stage_entered: StageRef | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Trigger:
        if (self.event is None) == (self.stage_entered is None):
            raise ValueError("a trigger names exactly one of `event` or `stage_entered`")
        return self


class Unless(Definition):
    event: EventName
    match: Expression | None = None


class Wait(Definition):
    for_: PositiveDuration = Field(alias="for")
    key: Expression | None = None
    grace: Duration = Field(default=timedelta(0), json_schema_extra={"default": "0s"})
    unless: Unless | None = None


class Limits(Definition):
    max: int = Field(ge=1, le=1000)
    per: PositiveDuration


def _clock_from_yaml(value: object) -> object:
    # YAML 1.1 reads an unquoted 21:00 as the base-60 integer 1260; take it back.
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 24 * 60:
        return f"{value // 60:02d}:{value % 60:02d}"
    return value


Clock = Annotated[str, BeforeValidator(_clock_from_yaml)]


class QuietHours(Definition):
    """Local times of day (``HH:MM``) in ``timezone`` (an IANA name; UTC when absent)."""

    start: Clock
    end: Clock
    timezone: str | None = None

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, value: str) -> str:
        if not _CLOCK.match(value):
            raise ValueError(f"{value!r} is not a time of day; write HH:MM, e.g. 21:00")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"{value!r} is not a time zone; use an IANA name such as Europe/Berlin"
            ) from None
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> QuietHours:
        if self.start == self.end:
            raise ValueError("quiet hours must start and end at different times")
        return self


class Goal(Definition):
    event: EventName
    within: PositiveDuration
    match: Expression | None = None


Channel = Literal["webhook", "email", "kafka", "log"]
_REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "webhook": ("url",),
    "email": ("to", "subject"),
    "kafka": ("topic",),
    "log": ("message",),
}
# DESIGN §7: the fields each channel uses; any other field is a mistake worth reporting.
CHANNEL_FIELDS: dict[str, tuple[str, ...]] = {
    "webhook": ("url", "headers", "payload", "secret"),
    "email": ("to", "subject", "body", "html"),
    "kafka": ("topic", "payload"),
    "log": ("message",),
}
_ACTION_FIELDS = tuple(dict.fromkeys(f for fields in CHANNEL_FIELDS.values() for f in fields))


PAYLOAD_DEPTH = 16  # a payload nested deeper than this is a mistake, and costly to check


def _payload_problem(payload: Any) -> str | None:
    """Why a payload cannot go out as JSON, if it cannot: nested too deeply, or a number
    JSON has not (NaN, infinity). Iterative: deep input cannot exhaust the stack."""
    pending = [(payload, 0)]
    while pending:
        item, level = pending.pop()
        if level > PAYLOAD_DEPTH:
            return f"a payload nests at most {PAYLOAD_DEPTH} levels deep"
        if isinstance(item, float) and not math.isfinite(item):
            return "a payload number must be finite (JSON has no NaN or infinity)"
        if isinstance(item, dict):
            pending += [(child, level + 1) for child in item.values()]
        elif isinstance(item, list):
            pending += [(child, level + 1) for child in item]
    return None


class Action(Definition):
    """What to do, per channel (DESIGN §7). Strings are Jinja2 templates, except
    ``channel`` and ``secret``; in ``payload`` every string value is a template."""

    channel: Channel
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    payload: dict[str, Any] | None = None
    secret: str | None = None
    to: str | None = None
    subject: str | None = None
    body: str | None = None
    html: str | None = None
    topic: str | None = None
    message: str | None = None

    @field_validator("payload")
    @classmethod
    def _json_payload(cls, payload: dict[str, Any] | None) -> dict[str, Any] | None:
        problem = None if payload is None else _payload_problem(payload)
        if problem is not None:
            raise ValueError(problem)
        return payload

    @model_validator(mode="after")
    def _channel_fields(self) -> Action:
        missing = [f for f in _REQUIRED_FIELDS[self.channel] if not getattr(self, f)]
        if missing:
            raise ValueError(f"a {self.channel} action needs {', '.join(missing)}")
        allowed = CHANNEL_FIELDS[self.channel]
        stray = [f for f in _ACTION_FIELDS if getattr(self, f) and f not in allowed]
        if stray:
            raise ValueError(
                f"a {self.channel} action has no {', '.join(stray)}; "
                f"its fields are {', '.join(allowed)}"
            )
        if self.channel == "email" and not (self.body or self.html):
            raise ValueError("an email action needs body or html")
        url = (self.url or "").strip()
        if url and not url.startswith(("http://", "https://", "{{")):
            raise ValueError(f"the webhook url {url!r} must start with http:// or https://")
        if self.topic and is_safar_topic(self.topic.strip()):
            raise ValueError(f"{self.topic!r} is one of Safar's own topics")
        return self


class Rule(Definition):
    key: Key
    name: str | None = None
    enabled: bool = True
    # Rules fired by the same event or stage entry run in priority order, lowest first.
    priority: int = Field(default=100, ge=0, le=1000)
    trigger: Trigger
    if_: Expression | None = Field(default=None, alias="if")
    wait: Wait | None = None
    limits: Limits | None = None
    quiet_hours: QuietHours | None = None
    holdout: float = Field(default=0.0, ge=0.0, lt=1.0)
    goal: Goal | None = None
    action: Action

    def content(self) -> dict[str, Any]:
        """The definition without ``enabled``: what a rule version is made of."""
        document = self.document()
        document.pop("enabled", None)
        return document


class Bundle(Definition):
    """Everything marketing-ops configure, as ``/v1/config/apply`` and ``safar export`` see it."""

    journeys: list[Journey] = Field(default_factory=list)
    rules: list[Rule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self) -> Bundle:
        for kind, items in (("journey", self.journeys), ("rule", self.rules)):
            keys = [item.key for item in items]
            dupes = sorted({k for k in keys if keys.count(k) > 1})
            if dupes:
                raise ValueError(f"{kind} keys must be unique: {', '.join(dupes)}")
        journeys = {j.key: j for j in self.journeys}
        for rule in self.rules:
            ref = rule.trigger.stage_entered
            if ref is None:
                continue
            journey = journeys.get(ref.journey)
            if journey is None:
                raise ValueError(f"rule {rule.key!r} names unknown journey {ref.journey!r}")
            if ref.stage not in {s.key for s in journey.stages}:
                raise ValueError(
                    f"rule {rule.key!r} names unknown stage {ref.stage!r} of {ref.journey!r}"
                )
        return self


CONFIG_SCHEMA = 1


class ConfigSnapshot(BaseModel):
    """The whole active configuration as published on ``safar.config``.

    ``bundle.rules`` holds the enabled rules only. ``rule_versions`` maps each of them to
    its stored version (1, 2, ...): action ids hash it, so an edited rule fires anew while
    a re-delivered decision of the same version is recognised as a duplicate.
    """

    model_config = ConfigDict(frozen=True, hide_input_in_errors=True)

    schema_: int = Field(default=CONFIG_SCHEMA, alias="schema")
    version: int
    bundle: Bundle
    rule_versions: dict[str, int] = Field(default_factory=dict)
    # sha256 hex digests of the active write keys; ingest never sees a key itself.
    write_keys: list[str] = Field(default_factory=list)

    def rule_version(self, key: str) -> int:
        """The stored version of rule ``key`` (1 for a snapshot that predates versions)."""
        return self.rule_versions.get(key, 1)

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()
