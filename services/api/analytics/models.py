"""Analytics responses (read only: no request bodies)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class Window(BaseModel):
    since: datetime | None = Field(description="Start of the range (inclusive); null: all time")
    until: datetime = Field(description="End of the range (exclusive)")


class FunnelStageOut(BaseModel):
    stage: str
    reached: int = Field(description="Customers who reached this stage or a later one")
    now_in: int = Field(description="Customers whose last move in the range ended here")
    conversion: float | None = Field(
        description="reached / reached of the previous stage; null for the first stage"
    )
    drop_off: int | None = Field(description="reached of the previous stage - reached")
    drop_off_rate: float | None = Field(description="1 - conversion")
    timed: int = Field(description="Arrivals the times below are computed from")
    median_seconds: float | None = Field(
        description="Median time from entering the stage the customer came from"
    )
    p90_seconds: float | None = Field(description="90th percentile of the same")


class FunnelOut(Window):
    journey: str
    customers: int = Field(description="Customers with at least one move in the range")
    stages: list[FunnelStageOut]


class PathOut(BaseModel):
    from_stage: str | None = Field(description="null when the customer entered the journey")
    to_stage: str
    move: str = Field(description="enter, forward, skip or backward")
    transitions: int
    customers: int


class SequenceOut(BaseModel):
    stages: list[str] = Field(description="The stages one customer entered, in order")
    customers: int


class PathsOut(Window):
    journey: str
    paths: list[PathOut]
    sequences: list[SequenceOut] = Field(description="The most frequent whole paths")


class GroupOut(BaseModel):
    customers: int = Field(description="Decisions in this group (actions fired or held out)")
    conversions: int
    conversion_rate: float | None


class RuleStatsOut(Window):
    rule: str
    triggered: int
    scheduled: int
    cancelled: int
    suppressed: int
    held_out: int
    fired: int
    errors: int
    sent: int
    failed: int
    retrying: int
    treated: GroupOut
    holdout: GroupOut
    uplift: float | None = Field(description="Treated minus holdout conversion rate")
    relative_uplift: float | None = Field(description="uplift / holdout conversion rate")
