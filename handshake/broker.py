"""A real Apache Kafka broker (KRaft) started from the jars Maven fetched into ``deploy/kafka/lib``.

One node runs as a combined broker+controller; ``brokers=3`` starts a three-node KRaft cluster
on local ports (every node broker+controller, replication factor 3, ``min.insync.replicas=2``).
Storage is formatted with ``kafka.tools.StorageTool format -t <cluster id>`` against a
``controller.quorum.voters`` list, and a node counts as up only once it logged
``Kafka Server started``.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from handshake import ROOT
from handshake.errors import HandshakeError
from handshake.settings import KafkaSettings

KAFKA_DIR = ROOT / "deploy" / "kafka"
STARTED_LINE = "Kafka Server started"
DEFAULT_HEAP = "-Xms128m -Xmx512m"


def node_properties(node_id: int, voters: str, log_dir: Path | str, replicas: int) -> dict[str, str]:
    """A combined broker+controller node's settings, listeners aside (native and in containers)."""
    min_isr = 2 if replicas == 3 else 1
    return {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "controller.quorum.voters": voters,
        "controller.listener.names": "CONTROLLER",
        "log.dirs": str(log_dir),
        "num.partitions": "1",
        "default.replication.factor": str(replicas),
        "min.insync.replicas": str(min_isr),
        "offsets.topic.replication.factor": str(replicas),
        "offsets.topic.num.partitions": "12",
        "transaction.state.log.replication.factor": str(replicas),
        "transaction.state.log.min.isr": str(min_isr),
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "true",
        "log.cleaner.backoff.ms": "5000",
        "log.segment.bytes": str(64 * 1024 * 1024),
        "share.coordinator.state.topic.replication.factor": str(replicas),
    }


def new_cluster_id() -> str:
    """A KRaft cluster id: a random UUID in URL-safe base64, as Kafka's ``Uuid.randomUuid``."""
    cid = "-"
    while cid.startswith("-"):  # as Kafka's Uuid.randomUuid: "-..." reads as an option
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    return cid


def lib_dir() -> Path:
    return Path(os.environ.get("HANDSHAKE_KAFKA_LIB", KAFKA_DIR / "lib"))


def require_tool(name: str, hint: str) -> str:
    path = shutil.which(name)
    if not path:
        raise HandshakeError(f"{name} not found on PATH: {hint}")
    return path


def ensure_jars(quiet: bool = False) -> Path:
    """Fetch the broker jars with Maven once; later calls return at once."""
    lib = lib_dir()
    if (lib / ".fetched").exists() and any(lib.glob("kafka_2.13-*.jar")):
        return lib
    require_tool("java", "install a JDK 17+ (apt-get install openjdk-17-jre-headless)")
    mvn = require_tool("mvn", "install Maven (apt-get install maven)")
    cmd = [mvn, "-B", "-ntp", "-f", str(KAFKA_DIR / "pom.xml"), "package"]
    if quiet:
        cmd.insert(2, "-q")
    print("==> fetching Apache Kafka jars from Maven Central (once)", flush=True)
    result = subprocess.run(cmd, check=False)
    if result.returncode != 0:
        raise HandshakeError(f"Maven could not fetch the Kafka jars (exit {result.returncode})")
    (lib / ".fetched").touch()
    return lib


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child counts as dead
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


@dataclass(frozen=True)
class Node:
    node_id: int
    port: int
    controller_port: int
    directory: Path

    @property
    def properties(self) -> Path:
        return self.directory / "server.properties"

    @property
    def log_file(self) -> Path:
        return self.directory / "server.log"

    @property
    def pid_file(self) -> Path:
        return self.directory / "broker.pid"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None


class Cluster:
    """The native broker (or three-node cluster) living in ``data_dir``."""

    def __init__(
        self,
        data_dir: Path | str,
        port: int | None = None,
        brokers: int | None = None,
        secure: bool | None = None,
    ) -> None:
        """``port``/``brokers``/``secure`` left out: those of the last start in ``data_dir`` (stop,
        status), else 9092, 1 and open. Given: they are used, also for a data dir that last ran on
        other ports. ``secure``: SASL_SSL with SCRAM and ACLs (:mod:`handshake.security`)."""
        self.data_dir = Path(data_dir).resolve()
        layout = self.data_dir / "layout"
        saved = layout.read_text().split() if layout.exists() else []
        port = port if port is not None else (int(saved[0]) if saved else 9092)
        brokers = brokers if brokers is not None else (int(saved[1]) if saved else 1)
        if brokers not in (1, 3):
            raise HandshakeError("--brokers must be 1 or 3")
        if saved and int(saved[1]) != brokers:
            raise HandshakeError(
                f"{self.data_dir} holds a {saved[1]}-node cluster; use another --data-dir for {brokers} node(s)"
            )
        was_secure = len(saved) > 2 and saved[2] == "secure"
        if saved and secure is not None and secure != was_secure:
            raise HandshakeError(
                f"{self.data_dir} holds {'a secured' if was_secure else 'an open'} broker; "
                f"use another --data-dir for {'a secured' if secure else 'an open'} one"
            )
        self.secure = was_secure if secure is None else secure
        if self.secure and brokers != 1:
            raise HandshakeError("--secure runs one node")
        from handshake.security import Secrets

        self.secrets = Secrets(self.data_dir / "secrets")
        self.port = port
        self.brokers = brokers
        self.nodes = [
            Node(
                node_id=i + 1,
                port=port + i,
                controller_port=port + 100 + i,
                directory=self.data_dir / f"node-{i + 1}",
            )
            for i in range(brokers)
        ]

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def admin_settings(self) -> KafkaSettings:
        """Settings for a client of this broker as ``admin`` (secured), or open ones."""
        if self.secure:
            from handshake.security import ADMIN

            return self.secrets.client_settings(ADMIN, self.bootstrap)
        return KafkaSettings(kafka_bootstrap=self.bootstrap)

    # -- configuration -------------------------------------------------------------------
    def cluster_id(self) -> str:
        path = self.data_dir / "cluster.id"
        if path.exists():
            return path.read_text().strip()
        cid = new_cluster_id()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(cid + "\n")
        return cid

    def _write_config(self, node: Node) -> None:
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        props = node_properties(node.node_id, voters, node.directory / "data", len(self.nodes))
        props |= {
            "listeners": f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port}",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        }
        if self.secure:
            props.update(self.secrets.broker_properties(node.port, node.controller_port))
        node.directory.mkdir(parents=True, exist_ok=True)
        node.properties.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        node.properties.chmod(0o600)  # secured: it holds the broker's own password
        (node.directory / "log4j.properties").write_text(
            "log4j.rootLogger=INFO, stdout\n"
            "log4j.appender.stdout=org.apache.log4j.ConsoleAppender\n"
            "log4j.appender.stdout.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
            "log4j.logger.kafka=INFO\nlog4j.logger.org.apache.kafka=INFO\n"
            "log4j.logger.state.change.logger=WARN\nlog4j.logger.kafka.log.LogCleaner=WARN\n"
        )

    def _java(self) -> list[str]:
        java = require_tool("java", "install a JDK 17+ (apt-get install openjdk-17-jre-headless)")
        classpath = str(ensure_jars() / "*")
        return [java, "-cp", classpath]

    def _format(self, node: Node) -> None:
        cid = self.cluster_id()
        meta = node.directory / "data" / "meta.properties"
        if meta.exists():
            found = dict(
                line.split("=", 1)
                for line in meta.read_text().splitlines()
                if "=" in line and not line.startswith("#")
            )
            if found.get("cluster.id") != cid:
                raise HandshakeError(
                    f"{node.directory / 'data'} is formatted for another Kafka cluster "
                    f"(cluster.id {found.get('cluster.id')}, expected {cid}); "
                    "use another --data-dir or delete that folder"
                )
            return
        cmd = [
            *self._java(),
            f"-Dlog4j.configuration=file:{node.directory / 'log4j.properties'}",
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cid,
            "-c",
            str(node.properties),
            "--ignore-formatted",
            *(self.secrets.scram_format_args() if self.secure else []),
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise HandshakeError(
                f"formatting Kafka storage failed: {detail[-1] if detail else result.returncode}"
            )

    # -- lifecycle -----------------------------------------------------------------------
    def running(self) -> list[Node]:
        return [n for n in self.nodes if n.pid() is not None]

    def start(self, timeout: float = 90.0, heap: str = DEFAULT_HEAP) -> float:
        """Format (first time) and start every node; return the seconds until all were ready."""
        began = time.monotonic()
        layout = self.data_dir / "layout"
        if self.running():
            saved = layout.read_text().split() if layout.exists() else [str(self.port)]
            if int(saved[0]) != self.port:
                raise HandshakeError(
                    f"Kafka from {self.data_dir} already runs on port {saved[0]}; stop it first"
                )
            if len(self.running()) == len(self.nodes):
                return 0.0
        for node in self.nodes:
            if node.pid() is not None:
                continue
            for port in (node.port, node.controller_port):
                if not port_free(port):
                    raise HandshakeError(f"port {port} is already in use; choose another with --port")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.secure and not self.secrets.exists():
            self.secrets.create()
        (self.data_dir / "layout").write_text(
            f"{self.port} {self.brokers} {'secure' if self.secure else 'open'}\n"
        )
        procs: list[tuple[Node, subprocess.Popen[bytes], int]] = []
        for node in self.nodes:
            if node.pid() is not None:
                continue
            self._write_config(node)
            self._format(node)
            offset = node.log_file.stat().st_size if node.log_file.exists() else 0
            env = dict(os.environ, KAFKA_HEAP_OPTS=heap)
            with node.log_file.open("ab") as log:
                proc = subprocess.Popen(
                    [
                        *self._java(),
                        *heap.split(),
                        "-XX:+UseG1GC",
                        "-XX:MaxGCPauseMillis=20",
                        "-Djava.awt.headless=true",
                        f"-Dlog4j.configuration=file:{node.directory / 'log4j.properties'}",
                        "kafka.Kafka",
                        str(node.properties),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    env=env,
                )
            node.pid_file.write_text(f"{proc.pid}\n")
            procs.append((node, proc, offset))
        deadline = began + timeout
        for node, proc, offset in procs:
            self._wait_started(node, proc, offset, deadline)
        if procs and len(self.nodes) > 1:
            self._wait_registered(deadline)
        return time.monotonic() - began

    def _wait_registered(self, deadline: float) -> None:
        """Every broker logs "started" before the others list it: a client bootstrapping then
        saw 2 of 3 brokers and could not reach the controller (UnknownBrokerIdError)."""
        from kafka.admin import KafkaAdminClient

        seen = 0
        while time.monotonic() < deadline:
            try:
                admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
                try:
                    seen = len(admin.describe_cluster()["brokers"])
                finally:
                    admin.close()
            except Exception:  # not answering yet
                seen = 0
            if seen == len(self.nodes):
                return
            time.sleep(0.3)
        raise HandshakeError(f"only {seen} of {len(self.nodes)} brokers registered in time")

    def _wait_started(self, node: Node, proc: subprocess.Popen[bytes], offset: int, deadline: float) -> None:
        while time.monotonic() < deadline:
            with node.log_file.open("rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
            if STARTED_LINE in text:
                return
            if proc.poll() is not None:
                lines = [ln for ln in text.splitlines() if "ERROR" in ln or "Exception" in ln]
                reason = lines[-1] if lines else f"exit code {proc.returncode}"
                raise HandshakeError(
                    f"Kafka node {node.node_id} exited during start: {reason} (log: {node.log_file})"
                )
            time.sleep(0.1)
        self.stop()
        raise HandshakeError(
            f"Kafka node {node.node_id} did not log '{STARTED_LINE}' in time (log: {node.log_file})"
        )

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM every node and wait for a clean exit (SIGKILL after ``timeout``)."""
        pids = [(n, n.pid()) for n in self.nodes]
        for _, pid in pids:
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for node, pid in pids:
            if not pid:
                continue
            while pid_alive(pid) and time.monotonic() < deadline:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
                time.sleep(0.1)
            if pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
            node.pid_file.unlink(missing_ok=True)

    def kill(self, node_id: int = 1, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to one node (fault tests: SIGKILL, SIGSTOP, SIGCONT)."""
        node = self.nodes[node_id - 1]
        pid = node.pid()
        if pid:
            os.kill(pid, sig)
            if sig == signal.SIGKILL:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
                node.pid_file.unlink(missing_ok=True)

    def restart_node(self, node_id: int = 1, timeout: float = 90.0) -> None:
        node = self.nodes[node_id - 1]
        if node.pid() is not None:
            return
        # start() skips nodes already running, so only this one comes up
        self.start(timeout=timeout)

    def status(self) -> list[dict[str, object]]:
        return [
            {"node": n.node_id, "port": n.port, "pid": n.pid(), "running": n.pid() is not None}
            for n in self.nodes
        ]


def free_cluster_port(brokers: int = 1) -> int:
    """A first port such that the broker and controller ports of ``brokers`` nodes are free."""
    while True:
        port = free_port()
        if port + 100 + brokers < 65535 and all(
            port_free(p) and port_free(p + 100) for p in range(port, port + brokers)
        ):
            return port


@contextlib.contextmanager
def temporary_cluster(data_dir: Path, brokers: int = 1, secure: bool = False) -> Iterator[Cluster]:
    """A broker on free ports for tests; stopped on exit."""
    cluster = Cluster(data_dir, port=free_cluster_port(brokers), brokers=brokers, secure=secure)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
