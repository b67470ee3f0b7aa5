"""Typed settings shared by every Safar process (environment prefix ``SAFAR_``).

One ``Settings`` object is built in each entry point and passed down; nothing reads the
environment anywhere else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Connection strings, ports and knobs for all services."""

    model_config = SettingsConfigDict(env_prefix="SAFAR_", frozen=True, extra="ignore")

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
    # Orchestrator: events per getmany batch.
    orchestrator_batch_size: int = Field(default=500, ge=1)
    # Timer loop: poll interval, claim lease, claims per shard per tick, index shards.
    timer_poll_s: float = Field(default=0.1, gt=0)
    timer_lease_s: float = Field(default=30.0, gt=0)
    timer_batch: int = Field(default=500, ge=1)
    timer_shards: int = Field(default=16, ge=1)
    # How many message ids each profile remembers for duplicate detection.
    dedupe_window: int = Field(default=20, ge=1)

    webhook_secret: SecretStr | None = None
    webhook_allow_private: bool = False

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
