"""The containers' secured broker (compose, Kubernetes), run natively from the same files.

``handshake kafka secrets`` writes what the compose and Kubernetes files mount: the broker's
``start.sh`` and ``server.properties``, its certificate for the names clients dial, and one
password file per principal. Here ``start.sh`` runs for real, with the Kafka tools of the
apache/kafka image replaced by the same classes from the project's jars (``KAFKA_STORAGE``,
``KAFKA_SERVER_START``): it formats storage with every SCRAM credential and starts a broker
with two listeners, as compose does. Then the topics job (admin, from
``HANDSHAKE_KAFKA_PASSWORD_FILE``) declares topics and ACLs, the health check's
``admin.properties`` works, ingest's principal writes events and is refused pair stats, and an
analyst added through the environment's admin login reads the events topic with kcat.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaProducer
from kafka.errors import TopicAuthorizationFailedError

from handshake.broker import STARTED_LINE, ensure_jars, free_port
from handshake.settings import KafkaSettings

pytestmark = pytest.mark.integration
HANDSHAKE = [str(Path(sys.executable).parent / "handshake")]


def wrapper(path: Path, java_class: str) -> Path:
    """A stand-in for one of the image's Kafka tools: the same class from the project's jars."""
    classpath = f"{ensure_jars()}/*"
    log4j = path.with_suffix(".log4j")  # as the image's scripts: log to the console
    log4j.write_text(
        "log4j.rootLogger=INFO, stdout\nlog4j.appender.stdout=org.apache.log4j.ConsoleAppender\n"
        "log4j.appender.stdout.layout=org.apache.log4j.PatternLayout\n"
    )
    path.write_text(
        f'#!/bin/bash\nexec java -Xmx512m -Dlog4j.configuration=file:{log4j} -cp "{classpath}" {java_class} "$@"\n'
    )
    path.chmod(0o755)
    return path


def client_env(secrets: Path, principal: str, bootstrap: str) -> dict[str, str]:
    """A container's HANDSHAKE_KAFKA_* settings, as compose and Kubernetes set them."""
    return {
        "HANDSHAKE_KAFKA_BOOTSTRAP": bootstrap,
        "HANDSHAKE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "HANDSHAKE_KAFKA_USERNAME": principal,
        "HANDSHAKE_KAFKA_PASSWORD_FILE": str(secrets / "clients" / principal),
        "HANDSHAKE_KAFKA_CA_FILE": str(secrets / "clients" / "ca.pem"),
    }


def handshake(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HANDSHAKE_")}
    return subprocess.run(
        [*HANDSHAKE, *args], env=clean | env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, str]]:
    """(secrets dir, in-network bootstrap, host bootstrap) of a broker run by the generated start.sh."""
    work = tmp_path_factory.mktemp("container-broker")
    secrets = work / "secrets"
    port, host_port, controller = free_port(), free_port(), free_port()
    made = handshake(
        "kafka", "secrets", str(secrets),
        "--host", "localhost", "--host", "127.0.0.1",
        "--listener", f"SASL_SSL=127.0.0.1:{port}/localhost:{port}",
        "--listener", f"HOST=127.0.0.1:{host_port}/127.0.0.1:{host_port}",
        "--controller", f"127.0.0.1:{controller}",
        "--log-dir", str(work / "data"),
        env={},
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    env = os.environ | {
        "KAFKA_STORAGE": str(wrapper(work / "kafka-storage.sh", "kafka.tools.StorageTool")),
        "KAFKA_SERVER_START": str(wrapper(work / "kafka-server-start.sh", "kafka.Kafka")),
    }
    log = work / "broker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["bash", str(secrets / "broker" / "start.sh")], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    try:
        deadline = time.monotonic() + 90
        while STARTED_LINE not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.3)
        yield secrets, f"localhost:{port}", f"127.0.0.1:{host_port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_generated_files_are_private_and_the_certificate_names_the_hosts(
    broker: tuple[Path, str, str],
) -> None:
    from cryptography import x509

    secrets, _, _ = broker
    for path in (*(secrets / "broker").iterdir(), *(secrets / "clients").iterdir()):
        mode = path.stat().st_mode & 0o777
        assert mode == (0o644 if path.name == "ca.pem" else 0o600), (path, oct(mode))
    cert = x509.load_pem_x509_certificate((secrets / "broker" / "broker.pem").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(n.value) for n in names} == {"localhost", "127.0.0.1"}
    assert "--add-scram" in (secrets / "broker" / "start.sh").read_text()


def test_the_topics_job_declares_topics_and_acls_as_admin_from_a_password_file(
    broker: tuple[Path, str, str],
) -> None:
    secrets, bootstrap, _ = broker
    out = handshake("kafka", "topics", env=client_env(secrets, "admin", bootstrap))
    assert out.returncode == 0, out.stderr
    assert "created   handshake.exchange-events.v1" in out.stdout
    assert "acls      " in out.stdout and " declared, " in out.stdout
    # the health check's login (compose runs kafka-broker-api-versions with it)
    check = subprocess.run(
        [
            "java", "-cp", f"{ensure_jars()}/*", "kafka.admin.BrokerApiVersionsCommand",
            "--bootstrap-server", bootstrap, "--command-config", str(secrets / "broker" / "admin.properties"),
        ],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert check.returncode == 0 and "Produce(0)" in check.stdout, check.stderr[-2000:]


def test_services_log_in_from_password_files_and_only_do_their_job(broker: tuple[Path, str, str]) -> None:
    secrets, bootstrap, host = broker
    assert handshake("kafka", "topics", env=client_env(secrets, "admin", bootstrap)).returncode == 0
    env = client_env(secrets, "handshake-ingest", host)
    settings = KafkaSettings(**{k.removeprefix("HANDSHAKE_").lower(): v for k, v in env.items()})
    assert settings.kafka_password is not None
    producer = KafkaProducer(
        bootstrap_servers=host,
        request_timeout_ms=10_000,
        max_block_ms=10_000,
        **settings.kafka_python_config(),
    )
    try:
        producer.send(settings.events_topic, key=b"k", value=b"{}").get(20)
        with pytest.raises(TopicAuthorizationFailedError):
            producer.send(settings.pair_stats_topic, key=b"k", value=b"{}").get(20)
    finally:
        producer.close(5)


def test_an_analyst_added_by_the_containers_admin_reads_with_kcat(
    broker: tuple[Path, str, str], tmp_path: Path
) -> None:
    secrets, bootstrap, host = broker
    admin = client_env(secrets, "admin", bootstrap)
    assert handshake("kafka", "topics", env=admin).returncode == 0
    added = handshake("analysts", "add", "cora", "--bootstrap", host, env=admin)
    assert added.returncode == 0, added.stderr
    assert f"bootstrap.servers={host}" in added.stdout
    assert f"ssl.ca.location={secrets / 'clients' / 'ca.pem'}" in added.stdout
    conf = tmp_path / "cora.properties"
    conf.write_text(added.stdout)
    listing = subprocess.run(
        ["kcat", "-F", str(conf), "-L", "-t", "handshake.exchange-events.v1"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert listing.returncode == 0 and "handshake.exchange-events.v1" in listing.stdout, listing.stderr
    # only admin manages analysts: ingest's login is told so
    refused = handshake("analysts", "list", env=client_env(secrets, "handshake-ingest", bootstrap))
    assert refused.returncode != 0 and "analysts need 'admin'" in refused.stderr
