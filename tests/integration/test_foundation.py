"""The foundation against the real broker: round-trip, topics as code, CLI errors."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from handshake.broker import Cluster, free_cluster_port, pid_alive
from handshake.errors import HandshakeError
from handshake.settings import KafkaSettings
from handshake.topics import ensure_topics
from schemas.topics import TopicSpec

pytestmark = pytest.mark.integration


def test_record_round_trips_with_key_and_headers(topic_factory, producer_factory, consumer_factory) -> None:
    topic = topic_factory("roundtrip")
    producer = producer_factory()
    headers = [("ce_type", b"org.handshake.exchange.v1"), ("content-type", b"application/json")]
    meta = producer.send(topic, key=b"p1/e1", value=b'{"x": 1}', headers=headers).get(timeout=10)
    assert meta.offset == 0
    consumer = consumer_factory(topic)
    record = next(iter(consumer))
    assert record.key == b"p1/e1"
    assert record.value == b'{"x": 1}'
    assert list(record.headers) == headers


def test_topics_are_created_once_then_unchanged(kafka_settings: KafkaSettings) -> None:
    # the fixture created them; a second run changes nothing
    report = ensure_topics(kafka_settings.kafka_bootstrap, kafka_settings.topic_specs())
    assert report.created == []
    assert report.problems == []
    assert sorted(report.unchanged) == sorted(s.name for s in kafka_settings.topic_specs())


def test_topic_with_wrong_policy_is_reported(kafka_bootstrap: str, unique) -> None:
    name = unique("policy")
    ensure_topics(kafka_bootstrap, [TopicSpec(name, 2, {"cleanup.policy": "delete"}, "", "")])
    report = ensure_topics(kafka_bootstrap, [TopicSpec(name, 3, {"cleanup.policy": "compact"}, "", "")])
    assert report.created == []
    assert len(report.problems) == 1
    assert "cleanup.policy=delete, declared compact" in report.problems[0]
    assert "2 partitions, declared 3" in report.problems[0]


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is installed by make setup")
def test_kcat_lists_declared_topics(kafka_settings: KafkaSettings) -> None:
    out = subprocess.run(
        ["kcat", "-b", kafka_settings.kafka_bootstrap, "-L", "-t", kafka_settings.events_topic],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert f'topic "{kafka_settings.events_topic}" with 12 partitions' in out


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "handshake"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=120, check=False)


def test_cli_start_status_stop_leaves_no_java(tmp_path: Path) -> None:
    port = free_cluster_port()
    data = tmp_path / "k"
    started = _cli("kafka", "start", "--port", str(port), "--data-dir", str(data))
    assert started.returncode == 0, started.stderr
    assert "Kafka ready" in started.stdout
    status = _cli("kafka", "status", "--data-dir", str(data))
    assert status.returncode == 0 and '"running": true' in status.stdout
    pid = Cluster(data).nodes[0].pid()
    assert pid is not None
    topics = subprocess.run(
        [
            str(Path(sys.executable).parent / "handshake"),
            "kafka",
            "topics",
            "--bootstrap",
            f"127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert topics.returncode == 0, topics.stderr
    assert topics.stdout.count("created") == 4
    again = _cli("kafka", "topics", "--bootstrap", f"127.0.0.1:{port}")
    assert again.stdout.count("unchanged") == 4
    stopped = _cli("kafka", "stop", "--data-dir", str(data))
    assert stopped.returncode == 0
    assert not pid_alive(pid)
    assert _cli("kafka", "status", "--data-dir", str(data)).returncode == 1


def test_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = _cli("kafka", "start", "--port", str(port), "--data-dir", str(tmp_path / "k"))
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: port {port} is already in use; choose another with --port"
    assert "Traceback" not in result.stderr


def test_data_dir_of_another_cluster_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "k"
    cluster = Cluster(data, port=free_cluster_port())
    cluster.start()
    cluster.stop()
    (data / "cluster.id").write_text("AAAAAAAAAAAAAAAAAAAAAA\n")
    with pytest.raises(HandshakeError, match="formatted for another Kafka cluster"):
        Cluster(data).start()


def test_missing_java_is_one_clear_line(tmp_path: Path) -> None:
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path)}
    exe = Path(sys.executable).parent / "handshake"
    result = subprocess.run(
        [
            sys.executable,
            str(exe),
            "kafka",
            "start",
            "--port",
            str(free_cluster_port()),
            "--data-dir",
            str(tmp_path / "k"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: java not found on PATH")
    assert "Traceback" not in result.stderr


def test_a_data_dir_restarts_on_other_ports_and_keeps_its_topics(tmp_path: Path) -> None:
    data = tmp_path / "k"
    first = Cluster(data, port=free_cluster_port())
    first.start()
    try:
        ensure_topics(first.bootstrap, [TopicSpec("kept", 2, {"cleanup.policy": "compact"}, "", "")])
        with pytest.raises(HandshakeError, match="already runs on port"):
            Cluster(data, port=first.port + 1).start()
    finally:
        first.stop()
    port = free_cluster_port()
    while port == first.port:
        port = free_cluster_port()
    second = Cluster(data, port=port)
    second.start()
    try:
        report = ensure_topics(
            second.bootstrap, [TopicSpec("kept", 2, {"cleanup.policy": "compact"}, "", "")]
        )
        assert report.unchanged == ["kept"]
        assert Cluster(data).port == second.port  # stop/status find the ports of the last start
    finally:
        second.stop()
