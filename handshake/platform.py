"""`handshake up`: the whole platform on one machine, as supervised child processes.

Order at start: broker → topics → aggregator → ingest → api (each waited for on /readyz) →
demo partner → demo feed. Order at stop: the reverse, then the broker. A child that exits
unexpectedly is restarted (with back-off) and the restart is logged. State lives in
``--data-dir``, so a second ``up`` resumes where the first stopped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from handshake.broker import Cluster, ensure_jars, pid_alive, port_free
from handshake.errors import HandshakeError
from handshake.security import ADMIN, SERVICES, acl_rules
from handshake.settings import KafkaSettings
from handshake.topics import ensure_or_fail

log = logging.getLogger("handshake.up")


@dataclass
class PlatformConfig:
    data_dir: Path = Path(".handshake")
    kafka_port: int = 9092
    ingest_port: int = 8001
    api_port: int = 8000
    aggregator_port: int = 8002
    demo: bool = True
    demo_rate: float = 5.0
    ready_timeout: float = 120.0
    secure: bool = False

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    ready_url: str | None
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    last_start: float = 0.0
    log_file: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_file = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            env={**os.environ, **self.env},
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.last_start = time.monotonic()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self.log_file:
            self.log_file.close()


HISTORY = Path(__file__).parent / "data" / "history.ndjson"


def handshake_exe() -> str:
    exe = Path(sys.executable).parent / "handshake"
    return str(exe) if exe.exists() else "handshake"


class Platform:
    def __init__(self, cfg: PlatformConfig, out: IO[str] | None = None) -> None:
        self.cfg = cfg
        self.data_dir = cfg.data_dir.resolve()
        self.out = out or sys.stdout
        self.cluster = Cluster(self.data_dir / "kafka", port=cfg.kafka_port, secure=cfg.secure or None)
        self.children: list[Child] = []
        self.stopping = threading.Event()
        self.demo_key: str | None = None

    # -- helpers ---------------------------------------------------------------------------
    def say(self, text: str) -> None:
        """Progress for the person at the terminal; never lets a closed terminal stop a clean shutdown."""
        with contextlib.suppress(OSError, ValueError):
            print(text, file=self.out, flush=True)

    def _env(self) -> dict[str, str]:
        return {
            "HANDSHAKE_KAFKA_BOOTSTRAP": self.cfg.bootstrap,
            "HANDSHAKE_AGGREGATOR_WEB_PORT": str(self.cfg.aggregator_port),
            "HANDSHAKE_AGGREGATOR_DATA_DIR": str(self.data_dir / "aggregator"),
            "HANDSHAKE_API_DATA_DIR": str(self.data_dir / "api"),
            "PYTHONUNBUFFERED": "1",
        }

    def _settings(self, principal: str) -> KafkaSettings:
        """A client of the platform's broker as ``principal`` (secured), or an open one."""
        if self.cluster.secure:
            return self.cluster.secrets.client_settings(principal, self.cfg.bootstrap)
        return KafkaSettings(kafka_bootstrap=self.cfg.bootstrap)

    def _child(
        self, name: str, argv: list[str], ready_url: str | None, env: dict[str, str] | None = None
    ) -> Child:
        kafka = (
            self.cluster.secrets.client_env(f"handshake-{name}")
            if self.cluster.secure and f"handshake-{name}" in SERVICES
            else {}
        )
        return Child(
            name=name,
            argv=argv,
            env={**self._env(), **kafka, **(env or {})},
            ready_url=ready_url,
            log_path=self.data_dir / "logs" / f"{name}.log",
        )

    def _wait_ready(self, child: Child) -> None:
        if child.ready_url is None:
            return
        deadline = time.monotonic() + self.cfg.ready_timeout
        while time.monotonic() < deadline and not self.stopping.is_set():
            if not child.alive():
                raise HandshakeError(f"{child.name} exited during start; see {child.log_path}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(child.ready_url, timeout=2).status_code == 200:
                    return
            time.sleep(0.3)
        raise HandshakeError(
            f"{child.name} was not ready in {self.cfg.ready_timeout:.0f}s; see {child.log_path}"
        )

    def _write_pids(self) -> None:
        pids = {c.name: c.proc.pid for c in self.children if c.proc is not None}
        (self.data_dir / "up.json").write_text(json.dumps({"supervisor": os.getpid(), "children": pids}))

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        lock = self.data_dir / "up.json"
        if lock.exists():
            with contextlib.suppress(ValueError, KeyError, OSError):
                if pid_alive(int(json.loads(lock.read_text())["supervisor"])):
                    raise HandshakeError(
                        f"the platform already runs from {self.data_dir}; stop it with `handshake down`"
                    )
        for name, port in (
            ("ingest", self.cfg.ingest_port),
            ("api", self.cfg.api_port),
            ("aggregator", self.cfg.aggregator_port),
        ):
            if not port_free(port):
                raise HandshakeError(
                    f"port {port} for {name} is already in use; choose another with --{name}-port"
                )
        ensure_jars()
        self.say(f"==> starting Kafka on {self.cfg.bootstrap}")
        seconds = self.cluster.start()
        self.say(f"    Kafka ready in {seconds:.1f}s")
        settings = self._settings(ADMIN)
        ensure_or_fail(self.cfg.bootstrap, settings.topic_specs(), security=settings.kafka_python_config())
        if self.cluster.secure:
            from handshake.access import declare

            declare(settings, acl_rules(settings))
        history_key = ""
        if self.cfg.demo:
            # the partners exist before ingest starts, so its readiness (partners topic read to
            # the end) covers them: created after, the first push could beat ingest's follower
            # to the new record and be refused (401), which stopped `handshake up` once
            history_key = self._partner("history-partner.json", "Citizen Diplomacy History", 500.0)
            self.demo_key = self._demo_partner()
        exe = handshake_exe()
        services = [
            self._child(
                "aggregator",
                [exe, "serve", "aggregator"],
                f"http://127.0.0.1:{self.cfg.aggregator_port}/readyz",
            ),
            self._child(
                "ingest",
                [exe, "serve", "ingest"],
                f"http://127.0.0.1:{self.cfg.ingest_port}/readyz",
                env={"HANDSHAKE_PORT": str(self.cfg.ingest_port)},
            ),
            self._child(
                "api",
                [exe, "serve", "api"],
                f"http://127.0.0.1:{self.cfg.api_port}/readyz",
                env={"HANDSHAKE_PORT": str(self.cfg.api_port)},
            ),
        ]
        for child in services:
            self.say(f"==> starting {child.name}")
            child.start()
            self.children.append(child)
            self._write_pids()
            self._wait_ready(child)
        if self.demo_key:
            self._load_history(history_key)
            feed = self._child(
                "demo-feed",
                [
                    exe,
                    "demo-feed",
                    "--rate",
                    str(self.cfg.demo_rate),
                    "--url",
                    f"http://127.0.0.1:{self.cfg.ingest_port}",
                ],
                None,
                env={"HANDSHAKE_PARTNER_KEY": self.demo_key},
            )
            feed.start()
            self.children.append(feed)
            self._write_pids()
        self._banner()

    def _partner(self, file: str, name: str, rate: float) -> str:
        """The key of a partner the platform created once (kept in ``data_dir/file``, mode 0600)."""
        path = self.data_dir / file
        if path.exists():
            return str(json.loads(path.read_text())["key"])
        from services.ingest.partners import create_partner

        partner_id, key = create_partner(self._settings("handshake-partners"), name, rate=rate)
        path.write_text(json.dumps({"partner_id": partner_id, "key": key}))
        path.chmod(0o600)
        return key

    def _demo_partner(self) -> str:
        return self._partner("demo-partner.json", "Demo Exchange Partner", 200.0)

    def _load_history(self, key: str) -> None:
        """The curated real exchanges (``handshake/data/history.ndjson``), under their own partner.

        Fixed event ids and revisions: a second start answers ``duplicate`` for each, nothing changes.
        """
        from handshake.push import push_file

        summary = push_file(HISTORY, f"http://127.0.0.1:{self.cfg.ingest_port}", key)
        self.say(
            f"==> history: {summary.accepted} documented exchanges loaded, {summary.duplicate} already there"
            + (f", {summary.rejected} rejected" if summary.rejected else "")
        )

    def _banner(self) -> None:
        api = f"http://127.0.0.1:{self.cfg.api_port}"
        ingest = f"http://127.0.0.1:{self.cfg.ingest_port}"
        lines = [
            "",
            "Handshake is up.",
            f"  dashboard      {api}/",
            f"  API            {api}/docs",
            f"  ingest         {ingest}/docs",
            f"  Kafka          {self.cfg.bootstrap}"
            + (
                f"  (SASL_SSL, SCRAM-SHA-512; CA {self.cluster.secrets.ca_file};"
                f" analysts: handshake analysts add NAME --data-dir {self.data_dir})"
                if self.cluster.secure
                else "  (open: no authentication on 127.0.0.1; `handshake up --secure` closes it)"
            ),
            f"  logs           {self.data_dir / 'logs'}",
        ]
        if self.demo_key:
            lines += [
                f"  demo partner key (saved in {self.data_dir / 'demo-partner.json'}):",
                f"    {self.demo_key}",
                "  push an event:",
                f"    curl -X POST {ingest}/v1/events -H 'Authorization: Bearer {self.demo_key}' \\",
                '      -H \'Content-Type: application/json\' -d \'{"event_id": "my-first", "kind": "cultural", '
                '"title": "Jazz week", "host_country": "FR", "delegations": [{"country": "US", '
                '"participants": 12}], "starts_on": "2026-06-01"}\'',
            ]
        lines += ["Ctrl-C (or `handshake down`) stops everything.", ""]
        self.say("\n".join(lines))

    def supervise(self) -> None:
        """Restart any child that exited, until asked to stop."""
        while not self.stopping.wait(1.0):
            for child in self.children:
                if child.alive() or self.stopping.is_set():
                    continue
                code = child.proc.returncode if child.proc else None
                child.restarts += 1
                backoff = min(30.0, 2.0 ** min(child.restarts, 5))
                if time.monotonic() - child.last_start < backoff:
                    continue
                log.warning(
                    "restarting crashed service",
                    extra={"service": child.name, "exit_code": code, "restarts": child.restarts},
                )
                self.say(f"!!  {child.name} exited (code {code}); restarting (restart #{child.restarts})")
                if child.log_file:
                    child.log_file.close()
                child.start()
                self._write_pids()

    def stop(self) -> None:
        self.stopping.set()
        for child in reversed(self.children):
            self.say(f"==> stopping {child.name}")
            child.stop()
        self.say("==> stopping Kafka")
        self.cluster.stop()
        (self.data_dir / "up.json").unlink(missing_ok=True)
        self.say("stopped.")


def up(cfg: PlatformConfig) -> None:
    platform = Platform(cfg)

    def _signal(signum: int, _frame: object) -> None:
        platform.stopping.set()

    signal.signal(signal.SIGTERM, _signal)
    signal.signal(signal.SIGINT, _signal)
    try:
        platform.start()
        platform.supervise()
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        platform.stop()


def down(data_dir: Path, timeout: float = 150.0) -> bool:
    """Stop a platform started by `up` from ``data_dir``; returns whether anything ran."""
    data_dir = data_dir.resolve()
    lock = data_dir / "up.json"
    found = False
    if lock.exists():
        info = json.loads(lock.read_text())
        supervisor = int(info.get("supervisor", 0))
        if supervisor and pid_alive(supervisor):
            found = True
            os.kill(supervisor, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while pid_alive(supervisor) and time.monotonic() < deadline:
                time.sleep(0.2)
        # the supervisor is gone: make sure its children are too (SIGTERM, then SIGKILL), before Kafka
        children = [int(pid) for pid in info.get("children", {}).values() if pid_alive(int(pid))]
        for pid in children:
            found = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while any(pid_alive(p) for p in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in children:
            if pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
        lock.unlink(missing_ok=True)
    cluster = Cluster(data_dir / "kafka")
    if cluster.running():
        found = True
        cluster.stop()
    return found
