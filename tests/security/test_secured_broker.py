"""A secured broker (SASL_SSL, SCRAM-SHA-512, ACLs): each client does its job and nothing else.

A native broker started with ``secure=True`` (its own, not the session's open one): the whole
platform runs on it, each service as its own principal, and stays exact (the index and the
aggregates agree by checksum); an analyst reads the three public topics (kafka-python and kcat)
and is refused, with an authorisation error and not a hang, when it writes anywhere, reads the
partners topic or joins a service's consumer group; a client without credentials, a wrong
password, a revoked analyst and a client trusting another CA are refused; ingest's principal
cannot write pair stats. No secret appears in a service's log or metrics.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import (
    GroupAuthorizationFailedError,
    KafkaError,
    TopicAuthorizationFailedError,
)

from handshake import access
from handshake.broker import Cluster, temporary_cluster
from handshake.security import ADMIN, SERVICES, Secrets, acl_rules
from handshake.settings import KafkaSettings
from handshake.topics import admin_client, ensure_or_fail
from tests.harness import Harness
from tests.samples import EVENT
from tests.security.conftest import read_topic

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with temporary_cluster(tmp_path_factory.mktemp("secured-kafka"), secure=True) as c:
        yield c


@pytest.fixture(scope="module")
def platform(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    harness = Harness(cluster.bootstrap, tmp_path_factory.mktemp("secured-platform"), secrets=cluster.secrets)
    admin = cluster.secrets.login(harness.settings, ADMIN)
    ensure_or_fail(admin.kafka_bootstrap, admin.topic_specs(), security=admin.kafka_python_config())
    access.declare(admin, acl_rules(harness.settings, app_id=harness.app_id))
    # the partner exists before ingest starts: its readiness covers it (created after, the first
    # push could beat ingest's follower to it)
    harness.secured_partner = harness.partner("secured-partner")  # type: ignore[attr-defined]
    try:
        harness.start_all()
        yield harness
    finally:
        harness.stop()


@pytest.fixture(scope="module")
def admin(cluster: Cluster) -> Iterator[Any]:
    settings = cluster.admin_settings()
    client = admin_client(settings.kafka_bootstrap, security=settings.kafka_python_config())
    yield client
    client.close()


def as_user(settings: KafkaSettings, principal: str, password: str, ca_file: Path) -> dict[str, Any]:
    return {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": principal,
        "sasl_plain_password": password,
        "ssl_cafile": str(ca_file),
        "request_timeout_ms": 10_000,
    }


KCAT: dict[str, Any] = {"capture_output": True, "text": True, "timeout": 60}


def read_all(config: dict[str, Any], topic: str, timeout: float = 30.0) -> list[Any]:
    """Every record of ``topic`` up to its end offsets, read with a client's ``config``."""
    return read_topic(config["bootstrap_servers"], topic, timeout, login=config)


def refused_write(config: dict[str, Any], topic: str) -> BaseException:
    # not idempotent: the topic ACL is what is tested (an idempotent producer is refused earlier,
    # IdempotentWrite on the cluster, as ClusterAuthorizationFailed)
    producer = KafkaProducer(acks="all", max_block_ms=15_000, enable_idempotence=False, **config)
    try:
        with pytest.raises(KafkaError) as info:
            producer.send(topic, key=b"forged", value=b"{}").get(timeout=20)
        return info.value
    finally:
        producer.close(timeout=5)


def test_the_platform_runs_end_to_end_and_exact_on_a_secured_broker(
    platform: Harness, cluster: Cluster
) -> None:
    _, key = platform.secured_partner  # type: ignore[attr-defined]
    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=platform["ingest"].url, headers=auth, timeout=30) as c:
        for i in range(30):
            body = {**EVENT, "event_id": f"s-{i}", "delegations": [{"country": ["DE", "US", "JP"][i % 3]}]}
            assert c.post("/v1/events", json=body).status_code == 202
        assert (
            c.post(
                "/v1/events", json={**EVENT, "event_id": "s-0", "revision": 2, "status": "cancelled"}
            ).status_code
            == 202
        )
    api = platform["api"].url
    deadline = time.monotonic() + 60
    while True:
        body = httpx.get(api + "/v1/reconcile", timeout=30).json()
        pairs = {
            p["pair"]: p
            for p in httpx.get(api + "/v1/pairs", params={"limit": 50}, timeout=10).json()["items"]
        }
        if body["caught_up"] and not body["differing"] and pairs.get("DE-FR", {}).get("active_events") == 9:
            break
        assert time.monotonic() < deadline, (body, pairs)
        time.sleep(0.3)
    assert pairs["FR-US"]["active_events"] == 10 and pairs["FR-JP"]["active_events"] == 10
    assert httpx.get(api + "/v1/events", params={"pair": "DE-FR"}, timeout=10).json()["total"] == 10
    # no SCRAM password in plaintext: not in a service's metrics, nor in any file the services
    # wrote (logs, the event index, the aggregator's state), nor in the broker's log
    passwords = [cluster.secrets.password(p).encode() for p in (ADMIN, *SERVICES)]
    for service in platform.services.values():
        metrics = httpx.get(service.url + "/metrics", timeout=10).content
        assert not [p for p in passwords if p in metrics], service.name
    files = [f for f in platform.workdir.rglob("*") if f.is_file()] + [n.log_file for n in cluster.nodes]
    assert len(files) > 5
    leaked = [str(f) for f in files for p in passwords if p in f.read_bytes()]
    assert not leaked


def test_an_analyst_reads_the_public_topics_and_nothing_else(
    platform: Harness, cluster: Cluster, admin: Any
) -> None:
    settings = platform.settings
    name = f"t{uuid.uuid4().hex[:6]}"
    password = access.add_analyst(admin, settings, name)
    assert name in access.list_analysts(admin)
    principal = f"analyst-{name}"
    config = as_user(settings, principal, password, cluster.secrets.ca_file)
    events = read_all(config, settings.events_topic)
    assert len(events) >= 31 and all(r.key.startswith(b"secured-partner") for r in events)
    assert read_all(config, settings.pair_stats_topic)
    read_all(config, settings.dead_letter_topic)  # readable (empty here)

    # kcat (installed by make setup) reads with the printed configuration, and is refused a write
    # and the partners topic with the broker's authorisation error
    conf = platform.workdir / f"{name}.conf"
    conf.write_text(
        access.client_properties(settings.kafka_bootstrap, principal, password, str(cluster.secrets.ca_file))
    )
    kcat = ["kcat", "-F", str(conf)]
    out = subprocess.run([*kcat, "-C", "-t", settings.events_topic, "-e", "-f", "%k\n"], **KCAT)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == len(events)
    forged = subprocess.run([*kcat, "-P", "-t", settings.events_topic, "-k", "x"], input="{}", **KCAT)
    assert "topic authorization failed" in forged.stderr.lower(), forged.stderr
    hashes = subprocess.run([*kcat, "-C", "-t", settings.partners_topic, "-e"], **KCAT)
    assert hashes.returncode != 0 and "topic authorization failed" in hashes.stderr.lower(), hashes.stderr

    # writes anywhere: refused with an authorisation error
    for topic in (
        settings.events_topic,
        settings.pair_stats_topic,
        settings.partners_topic,
        settings.dead_letter_topic,
    ):
        assert isinstance(refused_write(config, topic), TopicAuthorizationFailedError), topic
    # the partners topic (key hashes) is not even visible to it
    consumer = KafkaConsumer(group_id=None, **config)
    try:
        assert settings.partners_topic not in consumer.topics()
        assert settings.events_topic in consumer.topics()
    finally:
        consumer.close()
    # a group of its own is fine, a service's group is not
    for group, refused in ((f"{principal}.dashboards", False), (platform.app_id, True)):
        consumer = KafkaConsumer(
            settings.events_topic, group_id=group, auto_offset_reset="earliest", **config
        )
        try:
            if refused:
                with pytest.raises(GroupAuthorizationFailedError):
                    for _ in range(20):
                        consumer.poll(timeout_ms=500)
            else:
                got = []
                for _ in range(40):
                    got += [r for batch in consumer.poll(timeout_ms=500).values() for r in batch]
                    if got:
                        break
                assert got
        finally:
            consumer.close()

    # revoked: new connections are refused at once
    access.revoke_analyst(admin, settings, name)
    assert name not in access.list_analysts(admin)
    refused_login(config)
    assert "SASL authentication error" in kcat_refusal(conf.read_text(), platform.workdir)


def refused_login(config: dict[str, Any]) -> None:
    """Connecting with ``config`` fails within seconds: refused, not a hang. (kafka-python
    reports every refusal as one bootstrap timeout; why, :func:`kcat_refusal` asks the broker.)"""
    began = time.monotonic()
    with pytest.raises(KafkaError):
        KafkaConsumer(**{**config, "bootstrap_timeout_ms": 5000, "request_timeout_ms": 5000})
    assert time.monotonic() - began < 15


def kcat_refusal(properties: str, workdir: Path) -> str:
    """What librdkafka (kcat) is told when it asks for metadata with ``properties``: it fails,
    and its log names the broker's reason (kafka-python may only see the connection close)."""
    conf = workdir / f"{uuid.uuid4().hex[:8]}.conf"
    conf.write_text(properties)
    out = subprocess.run(["kcat", "-F", str(conf), "-L", "-m", "5"], **KCAT)
    assert out.returncode != 0, out.stdout
    return out.stderr


def test_strangers_wrong_secrets_and_another_ca_are_refused(
    platform: Harness, cluster: Cluster, tmp_path: Path
) -> None:
    settings = platform.settings
    ca = str(cluster.secrets.ca_file)
    # no TLS, no SASL: the broker hangs up before answering anything
    refused_login({"bootstrap_servers": settings.kafka_bootstrap})
    stranger = kcat_refusal(f"bootstrap.servers={settings.kafka_bootstrap}\n", tmp_path)
    assert "Disconnected while requesting ApiVersion" in stranger, stranger
    # a wrong password: SCRAM refuses it
    refused_login(as_user(settings, "handshake-api", "not-the-password", cluster.secrets.ca_file))
    wrong = kcat_refusal(
        access.client_properties(settings.kafka_bootstrap, "handshake-api", "nope", ca), tmp_path
    )
    assert "SASL authentication error" in wrong, wrong
    # another CA: the broker's certificate does not chain to it
    other = Secrets(tmp_path / "other")
    other.create()
    password = cluster.secrets.password("handshake-api")
    refused_login(as_user(settings, "handshake-api", password, other.ca_file))
    props = access.client_properties(settings.kafka_bootstrap, "handshake-api", password, str(other.ca_file))
    assert "certificate verify failed" in kcat_refusal(props, tmp_path)


def test_each_service_may_do_its_job_only(platform: Harness, cluster: Cluster) -> None:
    settings = platform.settings
    secrets = cluster.secrets
    ingest = as_user(settings, "handshake-ingest", secrets.password("handshake-ingest"), secrets.ca_file)
    assert isinstance(refused_write(ingest, settings.pair_stats_topic), TopicAuthorizationFailedError)
    assert isinstance(refused_write(ingest, settings.partners_topic), TopicAuthorizationFailedError)
    api = as_user(settings, "handshake-api", secrets.password("handshake-api"), secrets.ca_file)
    assert isinstance(refused_write(api, settings.events_topic), TopicAuthorizationFailedError)
    aggregator = as_user(
        settings, "handshake-aggregator", secrets.password("handshake-aggregator"), secrets.ca_file
    )
    assert isinstance(refused_write(aggregator, settings.events_topic), TopicAuthorizationFailedError)
