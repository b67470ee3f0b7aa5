"""Typed settings shared by every Safar process (environment prefix ``SAFAR_``).

One ``Settings`` object is built in each entry point and passed down; nothing reads the
environment anywhere else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, NonNegativeFloat, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Connection strings, ports and knobs for all services."""

    # Errors never quote a value: it may be a secret.
    model_config = SettingsConfigDict(
        env_prefix="SAFAR_", frozen=True, extra="ignore", hide_input_in_errors=True
    )

    # External services. Unset means `safar dev` (or the tests) start the embedded part.
    kafka_bootstrap: str | None = None
    redis_url: str | None = None
    database_url: str | None = None

    # Tansu refuses InitProducerId, so idempotence is off by default; turn it on for
    # Apache Kafka.
    kafka_enable_idempotence: bool = False
    # Prefix for topic names, Redis keys and consumer groups: one stack can host several
    # isolated Safar installations (the tests use a fresh one per test).
    namespace: str = ""
    events_partitions: int = Field(default=12, ge=1)
    # safar.actions, when Safar creates it: at most this many dispatchers share the work.
    # The embedded broker's fetch lists every record batch of each partition with new
    # records, so fewer partitions mean fewer, larger batches and fewer listings (at 1,000
    # events/s with 4 instead of 12, the broker took 2-5 points of a core less in five of
    # five paired runs, and event -> webhook p99 was lower in four: docs/benchmarks.md).
    # On Apache Kafka, raise it to run more dispatchers.
    actions_partitions: int = Field(default=4, ge=1)
    # safar.history, when Safar creates it: at most this many recorders share it. Written
    # by every loop and fetched by the recorder, so the same holds as for safar.actions
    # (`python -m bench broker`, its traffic alone: the broker at 34-48% of a core with 4
    # partitions, 66-71% with 12: docs/benchmarks.md).
    history_partitions: int = Field(default=4, ge=1)

    host: str = "127.0.0.1"
    api_port: int = 8080
    ingest_port: int = 8081
    orchestrator_port: int = 8082
    data_dir: Path = Path(".safar")

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "text"

    # Ingest: how long to wait for Kafka acks before answering 503.
    ingest_kafka_timeout_s: float = Field(default=5.0, gt=0)
    # Ingest: events per second and burst allowed per write key.
    ingest_rate_per_key: float = Field(default=20_000, gt=0)
    ingest_rate_burst: float = Field(default=40_000, gt=0)
    # Ingest: batch requests arriving this close together go to Kafka as one produce (fewer,
    # larger record batches; every request still waits for its acknowledgement).
    ingest_linger_ms: float = Field(default=25, ge=0)
    # How long the events loop's and the dispatcher's fetches wait at the broker for new
    # records: the latency floor of each Kafka hop while traffic is light.
    kafka_fetch_max_wait_ms: int = Field(default=20, ge=1)
    # How often the events loop and the dispatcher commit their offsets (and always before
    # handing partitions over or stopping). A crash replays up to this much more, which
    # their dedupe turns into skips; each commit is a broker request.
    kafka_commit_interval_s: float = Field(default=0.25, ge=0)
    # Orchestrator: events per getmany batch.
    orchestrator_batch_size: int = Field(default=2000, ge=1)
    # ...topped up for at most this long when the first fetch is small.
    orchestrator_gather_s: float = Field(default=0.005, ge=0)
    # Profiles the events loop keeps in memory after writing them (0: none; ~6.5 KB each
    # for the demo journey); one whose version Redis still has is not sent or decoded again.
    orchestrator_profile_cache: int = Field(default=20_000, ge=0)
    # Timer loop: poll interval, claim lease, claims per tick (all shards), index shards.
    timer_poll_s: float = Field(default=0.1, gt=0)
    timer_lease_s: float = Field(default=30.0, gt=0)
    timer_batch: int = Field(default=500, ge=1)
    timer_shards: int = Field(default=16, ge=1)
    # A due wait is held while the events loop has not yet applied every event received
    # before its due time (one of them may cancel it), for at most this long; 0: never hold.
    timer_hold_max_s: float = Field(default=60.0, ge=0)
    # How many message ids each profile remembers for duplicate detection.
    dedupe_window: int = Field(default=20, ge=1)

    webhook_secret: SecretStr | None = None
    webhook_allow_private: bool = False
    # Per attempt: connect, send and read the answer within this many seconds.
    webhook_timeout_s: float = Field(default=10.0, gt=0)

    # Dispatcher: seconds before each retry of a failed delivery; the list's length is the
    # number of retries, after which the action is failed and dead-lettered.
    dispatch_retry_schedule_s: list[NonNegativeFloat] = Field(
        default=[5.0, 30.0, 120.0, 600.0, 1800.0, 7200.0]
    )
    # A retry waits up to this fraction longer than scheduled (never shorter), so that
    # receivers recovering from an outage are not hit by every retry at once.
    dispatch_retry_jitter: float = Field(default=0.2, ge=0, le=1)
    # A receiver's Retry-After (on 429/503) is honoured up to this many seconds.
    dispatch_retry_after_max_s: float = Field(default=3600.0, gt=0)
    # How often the retry schedule (Redis) is polled; how long a claimed retry stays claimed
    # before another dispatcher may take it over (longer than one attempt can take).
    dispatch_retry_poll_s: float = Field(default=0.2, gt=0)
    dispatch_retry_lease_s: float = Field(default=60.0, gt=0)
    # Deliveries in flight at once per dispatcher process; actions read per poll.
    dispatch_max_concurrency: int = Field(default=64, ge=1)
    dispatch_batch_size: int = Field(default=500, ge=1)
    # How long each action's outcome is remembered to skip redeliveries; keep it longer than
    # the retention of safar.actions.
    dispatch_outcome_ttl_s: int = Field(default=8 * 86_400, ge=60)
    # Per attempt of the kafka channel: produce and acknowledgement within this many seconds.
    dispatch_kafka_timeout_s: float = Field(default=10.0, gt=0)
    # Kafka session timeout of the dispatcher group: how soon a dead dispatcher's partitions
    # move to another (Apache Kafka accepts 6000 and up by default; Tansu any value).
    dispatch_session_timeout_ms: int = Field(default=10_000, ge=1_000)

    # Email channel (aiosmtplib). `starttls` upgrades a plain connection, `tls` connects with
    # TLS from the start (usually port 465); one setting, so both cannot be asked at once.
    smtp_host: str = "localhost"
    smtp_port: int = Field(default=25, ge=1, le=65_535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_security: Literal["none", "starttls", "tls"] = "none"
    smtp_sender: str = "Safar <safar@localhost>"
    smtp_timeout_s: float = Field(default=10.0, gt=0)

    def as_env(self) -> dict[str, str]:
        """These settings as ``SAFAR_*`` variables, to hand to a child process."""
        env: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[f"SAFAR_{name.upper()}"] = str(value)
        return env

    def require(self, name: Literal["kafka_bootstrap", "redis_url", "database_url"]) -> str:
        """Return a connection string or explain how to provide it."""
        value = getattr(self, name)
        if not value:
            env = "SAFAR_" + name.upper()
            raise RuntimeError(
                f"{env} is not set: point it at a running service, or use `safar dev`, "
                "which starts the embedded stack and sets it for every service"
            )
        return str(value)
