"""The one canonical model of journeys and rules (DESIGN §6), used by api and orchestrator.

Shape checks live here; CEL and template compilation live in ``shared.expressions`` so that
a definition that parses here but does not compile is still refused before it is stored.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.durations import Duration

Key = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
_CLOCK = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class Definition(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class Stage(Definition):
    key: Key
    name: str | None = None
    when: str = "true"


class Journey(Definition):
    key: Key
    name: str | None = None
    allow_backward: bool = False
    enabled: bool = True
    stages: list[Stage] = Field(min_length=1)

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

    event: str | None = None
    stage_entered: StageRef | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Trigger:
        if (self.event is None) == (self.stage_entered is None):
            raise ValueError("a trigger names exactly one of `event` or `stage_entered`")
        return self


class Unless(Definition):
    event: str
    match: str | None = None


class Wait(Definition):
    for_: Duration = Field(alias="for")
    key: str | None = None
    grace: Duration = timedelta(0)
    unless: Unless | None = None

    @field_validator("for_")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("a wait must be positive")
        return value


class Limits(Definition):
    max: int = Field(ge=1)
    per: Duration


class QuietHours(Definition):
    start: str
    end: str
    timezone: str | None = None

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, value: str) -> str:
        if not _CLOCK.match(value):
            raise ValueError(f"{value!r} is not a time of day; write HH:MM, e.g. 21:00")
        return value


class Goal(Definition):
    event: str
    within: Duration
    match: str | None = None


Channel = Literal["webhook", "email", "kafka", "log"]
_REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "webhook": ("url",),
    "email": ("to", "subject"),
    "kafka": ("topic",),
    "log": ("message",),
}


class Action(Definition):
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

    @model_validator(mode="after")
    def _channel_fields(self) -> Action:
        missing = [f for f in _REQUIRED_FIELDS[self.channel] if not getattr(self, f)]
        if missing:
            raise ValueError(f"a {self.channel} action needs {', '.join(missing)}")
        return self


class Rule(Definition):
    key: Key
    name: str | None = None
    enabled: bool = True
    priority: int = 100
    trigger: Trigger
    if_: str | None = Field(default=None, alias="if")
    wait: Wait | None = None
    limits: Limits | None = None
    quiet_hours: QuietHours | None = None
    holdout: float = Field(default=0.0, ge=0.0, lt=1.0)
    goal: Goal | None = None
    action: Action


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
    """The whole active configuration as published on ``safar.config``."""

    model_config = ConfigDict(frozen=True)

    schema_: int = Field(default=CONFIG_SCHEMA, alias="schema")
    version: int
    bundle: Bundle
    # sha256 hex digests of the active write keys; ingest never sees a key itself.
    write_keys: list[str] = Field(default_factory=list)

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()
