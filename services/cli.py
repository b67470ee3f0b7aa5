"""``safar``: run the services, the whole dev stack, migrations and configuration."""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import httpx
import typer
import uvloop
from pydantic import SecretStr
from rich.console import Console
from rich.table import Table

from shared.embedded import EmbeddedStack, die_with_parent
from shared.kafka import ensure_topics
from shared.logs import configure_logging
from shared.settings import Settings

app = typer.Typer(
    help="Safar, the real-time customer-journey orchestrator.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=True)


def _settings(service: str) -> Settings:
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format, service)
    return settings


@app.command()
def ingest() -> None:
    """Run the ingest service: Segment-compatible tracking API on SAFAR_INGEST_PORT (8081)."""
    from services.ingest.app import create_app
    from shared.http import serve

    settings = _settings("ingest")

    async def main() -> None:
        await ensure_topics(settings)
        await serve(create_app(settings), settings.host, settings.ingest_port)

    uvloop.run(main())


@app.command()
def orchestrator(
    role: Annotated[
        str,
        typer.Option(
            help="Which loops to run: all, events (profiles, stages, rules), timers, "
            "dispatcher (action delivery)."
        ),
    ] = "all",
) -> None:
    """Run the orchestrator: profiles, stages and rules; health and metrics on port 8082."""
    from services.orchestrator.app import ROLES, create_app
    from shared.http import serve

    if role not in ROLES:
        raise typer.BadParameter(f"role must be one of: {', '.join(ROLES)}")
    settings = _settings("orchestrator")

    async def main() -> None:
        await ensure_topics(settings)
        application = create_app(settings, role)  # type: ignore[arg-type]
        await serve(application, settings.host, settings.orchestrator_port)
        if application.state.failed:
            raise SystemExit(1)

    uvloop.run(main())


@app.command()
def api() -> None:
    """Run the api: journeys, rules, customers, analytics; OpenAPI at /docs (port 8080)."""
    from services.api.app import create_app
    from shared.http import serve

    settings = _settings("api")

    async def main() -> None:
        await ensure_topics(settings)
        await serve(create_app(settings), settings.host, settings.api_port)

    uvloop.run(main())


@app.command()
def migrate() -> None:
    """Apply the PostgreSQL migrations (Alembic) to SAFAR_DATABASE_URL."""
    from services.api.db.base import make_engine
    from services.api.db.migrate import upgrade

    settings = _settings("migrate")

    async def main() -> None:
        engine = make_engine(settings.require("database_url"))
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()

    uvloop.run(main())
    console.print("[green]schema is up to date[/]")


@app.command()
def dev(
    data_dir: Annotated[
        Path | None, typer.Option(help="Where the embedded servers keep data (.safar).")
    ] = None,
) -> None:
    """Start everything: embedded Kafka, Redis, PostgreSQL and the three services.

    Parts whose SAFAR_*_URL/BOOTSTRAP is set are used as they are. Ctrl-C stops all.
    """
    settings = _settings("dev")
    if data_dir is not None:
        settings = settings.model_copy(update={"data_dir": data_dir})
    DevStack(settings).run()


class DevStack:
    """Supervises the embedded servers and the service processes of ``safar dev``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir.resolve()
        self.stack = EmbeddedStack(
            self.data_dir / "embedded",
            kafka=not settings.kafka_bootstrap,
            redis=not settings.redis_url,
            postgres=not settings.database_url,
            host=settings.host,
        )
        self.services: dict[str, subprocess.Popen[bytes]] = {}
        self._stopping = False

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        try:
            with console.status("starting the embedded stack..."):
                urls = self.stack.start()
            self.settings = self.settings.model_copy(
                update={
                    "kafka_bootstrap": self.settings.kafka_bootstrap or urls.kafka_bootstrap,
                    "redis_url": self.settings.redis_url or urls.redis_url,
                    "database_url": self.settings.database_url or urls.database_url,
                }
            )
            credentials = self._credentials()
            with console.status("creating topics, migrating, seeding the default journey..."):
                uvloop.run(self._prepare(credentials))
            self._start_services()
            info = self._write_dev_json(credentials)
            self._print(info)
            self._watch()
        except KeyboardInterrupt:
            console.print("stopping...")
        finally:
            self._stop()

    def _on_signal(self, *_: object) -> None:
        raise KeyboardInterrupt

    def _credentials(self) -> dict[str, str]:
        """The dev credentials, kept across runs in dev.json: a write key, an admin API key
        and a webhook signing secret (unless SAFAR_WEBHOOK_SECRET is set)."""
        path = self.data_dir / "dev.json"
        known = json.loads(path.read_text()) if path.exists() else {}
        fresh = {
            "write_key": f"wk_dev_{secrets.token_urlsafe(16)}",
            "admin_api_key": f"sk_dev_{secrets.token_urlsafe(24)}",
            "webhook_secret": "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode(),
        }
        credentials = {name: known.get(name) or value for name, value in fresh.items()}
        if self.settings.webhook_secret is None:
            self.settings = self.settings.model_copy(
                update={"webhook_secret": SecretStr(credentials["webhook_secret"])}
            )
        else:
            del credentials["webhook_secret"]
        return credentials

    async def _prepare(self, credentials: dict[str, str]) -> None:
        from services.api.bootstrap import bootstrap
        from services.api.db.base import make_engine

        await ensure_topics(self.settings)
        engine = make_engine(self.settings.require("database_url"))
        try:
            await bootstrap(
                engine,
                write_key=credentials["write_key"],
                admin_key=credentials["admin_api_key"],
            )
        finally:
            await engine.dispose()

    def _env(self) -> dict[str, str]:
        return os.environ | self.settings.as_env()

    def _start_services(self) -> None:
        s = self.settings
        for name, port in (
            ("api", s.api_port),
            ("orchestrator", s.orchestrator_port),
            ("ingest", s.ingest_port),
        ):
            self.services[name] = subprocess.Popen(
                [sys.executable, "-m", "services.cli", name],
                env=self._env(),
                preexec_fn=die_with_parent,
            )
            with console.status(f"waiting for {name} on port {port}..."):
                self._wait_ready(name, f"http://{s.host}:{port}/readyz")

    def _wait_ready(self, name: str, url: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.services[name].poll() is not None:
                raise SystemExit(f"{name} exited with status {self.services[name].returncode}")
            try:
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"{name} was not ready within {timeout:.0f}s ({url})")

    def _write_dev_json(self, credentials: dict[str, str]) -> dict[str, str]:
        s = self.settings
        info = {
            "api_url": f"http://{s.host}:{s.api_port}",
            "ingest_url": f"http://{s.host}:{s.ingest_port}",
            "orchestrator_url": f"http://{s.host}:{s.orchestrator_port}",
            **credentials,
            "kafka_bootstrap": s.require("kafka_bootstrap"),
            "redis_url": s.require("redis_url"),
            "database_url": s.require("database_url"),
        }
        path = self.data_dir / "dev.json"
        path.touch(mode=0o600)  # credentials: for the owner only
        path.chmod(0o600)
        path.write_text(json.dumps(info, indent=2) + "\n")
        return info

    def _print(self, info: dict[str, str]) -> None:
        table = Table(title="Safar is running (Ctrl-C stops everything)", show_header=False)
        for key, value in info.items():
            table.add_row(key, value)
        table.add_row("api docs", info["api_url"] + "/docs")
        table.add_row("written to", str(self.data_dir / "dev.json"))
        Console().print(table)
        sys.stdout.write(json.dumps(info) + "\n")
        sys.stdout.flush()

    def _watch(self) -> None:
        """Return only on Ctrl-C/SIGTERM; a crashed child stops everything, loudly."""
        while True:
            crashed = self.stack.crashed()
            if crashed is not None:
                console.print(
                    f"[red]{crashed.name} exited ({crashed.exited()}):[/]\n{crashed.tail()}"
                )
                raise SystemExit(1)
            for name, proc in self.services.items():
                if proc.poll() is not None:
                    console.print(f"[red]{name} exited with status {proc.returncode}[/]")
                    raise SystemExit(1)
            time.sleep(0.5)

    def _stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        for proc in self.services.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in self.services.items():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                console.print(f"{name} did not stop in 15s; killing it")
                proc.kill()
                proc.wait()
        self.stack.stop()


def _config_commands() -> None:
    """apply, export and api-key talk to a running api (services/config_cli.py)."""
    from services.config_cli import register

    register(app)


_config_commands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
