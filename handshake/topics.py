"""Topics as code: create the declared topics idempotently and report any that differ."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, NodeNotReadyError, TopicAlreadyExistsError, UnknownBrokerIdError

from handshake.errors import HandshakeError
from schemas.topics import TopicSpec

log = logging.getLogger(__name__)


@dataclass
class TopicReport:
    created: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def admin_client(
    bootstrap: str, timeout: float = 30.0, security: dict[str, Any] | None = None
) -> KafkaAdminClient:
    """An admin client; ``security``: kafka-python's SASL/TLS arguments (KafkaSettings)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return KafkaAdminClient(
                bootstrap_servers=bootstrap,
                client_id="handshake-admin",
                request_timeout_ms=15000,
                **(security or {}),
            )
        except KafkaError as exc:
            if time.monotonic() > deadline:
                raise HandshakeError(f"cannot reach Kafka at {bootstrap}: {exc}") from exc
            time.sleep(0.5)


def ensure_topics(
    bootstrap: str,
    specs: Iterable[TopicSpec],
    replication_factor: int = 1,
    security: dict[str, Any] | None = None,
) -> TopicReport:
    """Create missing topics; compare existing ones (partitions, cleanup.policy) and report drift.

    A second run changes nothing. A topic with the wrong policy is reported, never altered or
    silently used: callers decide (services refuse to start, the CLI exits non-zero).
    """
    specs = list(specs)
    report = TopicReport()
    admin = admin_client(bootstrap, security=security)
    try:
        existing = set(admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if missing:
            new = [
                NewTopic(
                    name=s.name,
                    num_partitions=s.partitions,
                    replication_factor=replication_factor,
                    topic_configs=dict(s.config),
                )
                for s in missing
            ]
            admin = _create_topics(bootstrap, admin, new, security)
            report.created = [s.name for s in missing]
            _wait_visible(admin, [s.name for s in missing])
        present = [s for s in specs if s.name in existing]
        if present:
            described = {t["name"]: t for t in admin.describe_topics([s.name for s in present])}
            resources = [ConfigResource(ConfigResourceType.TOPIC, s.name) for s in present]
            configs = _topic_configs(admin, resources)
            for spec in present:
                problems = []
                parts = len(described.get(spec.name, {}).get("partitions", []))
                if parts != spec.partitions:
                    problems.append(f"{parts} partitions, declared {spec.partitions}")
                actual = configs.get(spec.name, {})
                for key, want in spec.config.items():
                    if key in ("cleanup.policy", "retention.ms") and actual.get(key) != want:
                        problems.append(f"{key}={actual.get(key)}, declared {want}")
                if problems:
                    report.problems.append(f"topic {spec.name}: " + "; ".join(problems))
                else:
                    report.unchanged.append(spec.name)
    finally:
        admin.close()
    return report


def _create_topics(
    bootstrap: str, admin: KafkaAdminClient, new: list[NewTopic], security: dict[str, Any] | None
) -> KafkaAdminClient:
    """Create ``new``; returns the admin client to go on with (a fresh one after a retry).

    On a cluster that has just started, the controller a broker names may not be in the metadata
    yet: kafka-python raises UnknownBrokerIdError (or NodeNotReadyError) before sending anything.
    That passes within seconds (seen once in the 3-broker e2e test), so retry for up to 30 s with
    a new client, which reads fresh metadata.
    """
    deadline = time.monotonic() + 30
    while True:
        try:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(new, timeout_ms=30000, raise_errors=False)
            return admin
        except (UnknownBrokerIdError, NodeNotReadyError):
            if time.monotonic() > deadline:
                raise
            admin.close()
            time.sleep(0.5)
            admin = admin_client(bootstrap, security=security)


def _topic_configs(admin: KafkaAdminClient, resources: list[ConfigResource]) -> dict[str, dict[str, str]]:
    described = admin.describe_configs(resources, config_filter="all")
    return {
        topic: {name: str(entry.get("value")) for name, entry in entries.items()}
        for topic, entries in described.get("topic", {}).items()
    }


def _wait_visible(admin: KafkaAdminClient, names: list[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            described = admin.describe_topics(names)
        except KafkaError:
            described = []
        ready = {
            t["name"]
            for t in described
            if t.get("error_code", 0) == 0
            and t.get("partitions")
            and all(p["leader_id"] >= 0 for p in t["partitions"])
        }
        if ready >= set(names):
            return
        time.sleep(0.2)
    raise HandshakeError(f"topics not ready in time: {sorted(set(names))}")


def ensure_or_fail(
    bootstrap: str,
    specs: Iterable[TopicSpec],
    replication_factor: int = 1,
    security: dict[str, Any] | None = None,
) -> TopicReport:
    """For services at start: declare the topics and refuse to run on a topic with the wrong policy."""
    report = ensure_topics(bootstrap, specs, replication_factor, security)
    if report.created:
        log.info("created topics", extra={"topics": report.created})
    if report.problems:
        raise HandshakeError("; ".join(report.problems))
    return report
