"""Orchestrator metrics (DESIGN §10); labels never carry customer or event ids."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from shared.dead_letters import DEAD_LETTERS

EVENTS_PROCESSED = Counter(
    "safar_events_processed_total",
    "Events consumed from safar.events, by outcome (applied, duplicate, dead_lettered)",
    ["outcome"],
)
EVENT_LAG = Histogram(
    "safar_event_lag_seconds",
    "Time from ingest receiving an event to its effects being stored",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
CONSUMER_LAG = Gauge("safar_consumer_lag", "Records behind the end of safar.events", ["partition"])
STAGE_TRANSITIONS = Counter(
    "safar_stage_transitions_total",
    "Customers moving between stages",
    ["journey", "from_stage", "to_stage"],
)
DLQ = DEAD_LETTERS
CONFIG_VERSION = Gauge("safar_config_version", "Active configuration version")
RULE_OUTCOMES = Counter(
    "safar_rule_outcomes_total",
    "Rule decisions: triggered, scheduled, cancelled, suppressed, held_out, fired, error",
    ["rule", "outcome"],
)
PROFILE_CACHE = Counter(
    "safar_profile_cache_total",
    "Profiles the events loop had in memory at the version Redis has (hit), had at an older "
    "version (stale) or did not have (miss); stale and missed ones are read from Redis",
    ["outcome"],
)
WAITS_PENDING = Gauge("safar_waits_pending", "Waits scheduled and not yet fired or cancelled")
WAITS_HELD = Gauge(
    "safar_waits_held",
    "Due waits this timer loop held at its last tick, because the events loop had not yet "
    "applied every event received before their due time",
)
WAIT_CANCEL_LATENCY = Histogram(
    "safar_wait_cancel_seconds",
    "Time from ingest receiving an `unless` event to the wait it cancels being removed",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.5, 1, 2.5, 5),
)
WAIT_LATENESS = Histogram(
    "safar_wait_lateness_seconds",
    "How long after its due time a wait fired",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
ACTIONS = Counter(
    "safar_actions_total",
    "Delivery outcomes by channel: sent, retrying, failed, duplicate (a redelivery skipped)",
    ["channel", "status"],
)
DELIVERY_DURATION = Histogram(
    "safar_action_delivery_seconds",
    "Duration of one delivery attempt, by channel",
    ["channel"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
EVENT_TO_ACTION = Histogram(
    "safar_event_to_action_seconds",
    "Time from ingest receiving the triggering event to the action being delivered",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
)
