"""Run the real services as subprocesses (`handshake serve ...`) for e2e and fault tests.

Each harness uses its own topic names and aggregator app id, so it never sees other tests'
records; services can be SIGKILLed, paused and restarted like in production.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from handshake.broker import free_port
from handshake.security import Secrets
from handshake.settings import KafkaSettings

EXE = str(Path(sys.executable).parent / "handshake")


@dataclass
class Service:
    name: str
    env: dict[str, str]
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = field(default=None, repr=False)
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Service:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log = self.log_path.open("ab")
        kind = self.name.split("-")[0]
        self.proc = subprocess.Popen(
            [EXE, "serve", kind],
            env={**os.environ, **self.env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.starts += 1
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ready(self, headers: dict[str, str] | None = None) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2, headers=headers).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout: float = 90.0) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if not self.alive():
                raise RuntimeError(
                    f"{self.name} exited (code {self.proc and self.proc.returncode}); log:\n{self.tail()}"
                )
            if self.ready():
                return time.monotonic() - started
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} not ready in {timeout}s; log:\n{self.tail()}")

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(30)

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.log:
            self.log.close()
            self.log = None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Harness:
    """ingest, aggregator worker(s) and api on their own topics, as real processes."""

    def __init__(
        self,
        bootstrap: str,
        workdir: Path,
        settings: KafkaSettings | None = None,
        secrets: Secrets | None = None,
    ) -> None:
        """``secrets``: a secured broker's; each service then runs as its own principal."""
        self.secrets = secrets
        tag = uuid.uuid4().hex[:8]
        self.settings = settings or KafkaSettings(
            kafka_bootstrap=bootstrap,
            events_topic=f"h{tag}.exchange-events.v1",
            partners_topic=f"h{tag}.partners.v1",
            pair_stats_topic=f"h{tag}.pair-stats.v1",
            dead_letter_topic=f"h{tag}.dead-letter.v1",
        )
        self.workdir = workdir
        self.app_id = f"agg-{tag}"
        self.services: dict[str, Service] = {}

    def _env(self) -> dict[str, str]:
        s = self.settings
        return {
            "HANDSHAKE_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
            "HANDSHAKE_EVENTS_TOPIC": s.events_topic,
            "HANDSHAKE_PARTNERS_TOPIC": s.partners_topic,
            "HANDSHAKE_PAIR_STATS_TOPIC": s.pair_stats_topic,
            "HANDSHAKE_DEAD_LETTER_TOPIC": s.dead_letter_topic,
            "HANDSHAKE_REPLICATION_FACTOR": str(s.replication_factor),
            "PYTHONUNBUFFERED": "1",
            **(
                {"HANDSHAKE_MIN_INSYNC_REPLICAS": str(s.min_insync_replicas)} if s.min_insync_replicas else {}
            ),
        }

    def add(self, name: str, extra: dict[str, str] | None = None) -> Service:
        port = free_port()
        env = self._env()
        kind = name.split("-")[0]
        if kind == "aggregator":
            env.update(
                HANDSHAKE_AGGREGATOR_APP_ID=self.app_id,
                HANDSHAKE_AGGREGATOR_WEB_PORT=str(port),
                HANDSHAKE_AGGREGATOR_DATA_DIR=str(self.workdir / name / "state"),
            )
        else:
            env["HANDSHAKE_PORT"] = str(port)
        if kind == "api":
            env["HANDSHAKE_API_DATA_DIR"] = str(self.api_data(name))
        if self.secrets is not None:
            env.update(self.secrets.client_env(f"handshake-{kind}"))
        env.update(extra or {})
        service = Service(name=name, env=env, port=port, log_path=self.workdir / "logs" / f"{name}.log")
        self.services[name] = service
        return service

    def api_data(self, name: str = "api") -> Path:
        """Where that api keeps its event index."""
        return self.workdir / name / "data"

    def aggregator_state(self, name: str = "aggregator") -> Path:
        return self.workdir / name / "state"

    def wipe_state(self, name: str = "aggregator") -> None:
        shutil.rmtree(self.aggregator_state(name), ignore_errors=True)

    def start_all(self, aggregators: int = 1, timeout: float = 120.0) -> None:
        names = ["aggregator" if i == 0 else f"aggregator-{i + 1}" for i in range(aggregators)]
        for name in [*names, "ingest", "api"]:
            self.add(name).start()
        for name in [*names, "ingest", "api"]:
            self.services[name].wait_ready(timeout)

    def __getitem__(self, name: str) -> Service:
        return self.services[name]

    def partner(self, name: str, rate: float = 10_000.0) -> tuple[str, str]:
        from services.ingest.partners import create_partner

        settings = self.settings
        if self.secrets is not None:  # the partners CLI's principal, alone allowed to write them
            settings = self.secrets.login(settings, "handshake-partners")
        return create_partner(settings, name, rate=rate)

    def stop(self) -> None:
        for service in reversed(list(self.services.values())):
            service.stop()
