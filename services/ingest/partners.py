"""Partner registry: follows the compacted partners topic; authenticates API keys.

Also the functions the CLI and the platform runner call to create, list and revoke partners.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Protocol

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from handshake.errors import HandshakeError
from handshake.settings import KafkaSettings
from schemas.records import PartnerRecord, RecordError, decode_partner, encode_partner
from services.ingest.domain import generate_key, hash_key, key_matches, key_partner_id, slugify_partner_id

log = logging.getLogger(__name__)


class Partners(Protocol):
    """What the app needs from the partner registry."""

    def authenticate(self, key: str | None) -> PartnerRecord | None: ...

    def ready(self) -> bool: ...

    def start(self) -> None: ...

    def close(self) -> None: ...


class InMemoryPartners:
    """The registry's state; the Kafka follower feeds it, unit tests fill it directly."""

    def __init__(self, records: list[PartnerRecord] | None = None) -> None:
        self._by_id: dict[str, PartnerRecord] = {}
        self._ready = True
        for record in records or ():
            self.apply(record)

    def apply(self, record: PartnerRecord) -> None:
        self._by_id[record.partner_id] = record

    def remove(self, partner_id: str) -> None:
        self._by_id.pop(partner_id, None)

    def get(self, partner_id: str) -> PartnerRecord | None:
        return self._by_id.get(partner_id)

    def all(self) -> list[PartnerRecord]:
        return sorted(self._by_id.values(), key=lambda p: p.partner_id)

    def authenticate(self, key: str | None) -> PartnerRecord | None:
        """The active partner owning ``key``; None for missing, malformed, unknown or revoked keys."""
        if not key:
            return None
        partner_id = key_partner_id(key)
        record = self._by_id.get(partner_id) if partner_id else None
        # hash even when the partner is unknown so every failure costs the same
        matches = key_matches(key, record.key_hash if record else "0" * 64)
        if record is None or not matches or record.revoked_at is not None:
            return None
        return record

    def ready(self) -> bool:
        return self._ready

    def start(self) -> None:
        return None

    def close(self) -> None:
        return None


def follower_consumer(settings: KafkaSettings, client_id: str) -> KafkaConsumer:
    return KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        client_id=client_id,
        request_timeout_ms=10000,
        **settings.kafka_python_config(),
    )


def assign_all(consumer: KafkaConsumer, topic: str, timeout: float = 30.0) -> list[TopicPartition]:
    """Assign every partition of ``topic`` from the beginning; return them."""
    deadline = time.monotonic() + timeout
    while True:
        parts = consumer.partitions_for_topic(topic)
        if parts:
            break
        if time.monotonic() > deadline:
            raise HandshakeError(f"topic {topic} has no partitions (does it exist?)")
        time.sleep(0.2)
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    return tps


class KafkaPartners(InMemoryPartners):
    """The partners view fed by a :class:`~services.ingest.follower.TopicFollower` of ``partners_topic``.

    Not ready until the follower has read up to the end of the topic seen at start.
    """

    def __init__(self) -> None:
        super().__init__()
        self._ready = False

    def set_ready(self, ready: bool) -> None:
        self._ready = ready

    def apply_record(self, key: bytes | None, value: bytes | None, headers: object = None) -> None:
        if value is None:
            if key:
                self.remove(key.decode("utf-8", "replace"))
            return
        try:
            self.apply(decode_partner(value))
        except RecordError as exc:
            log.warning("skipping unreadable partner record", extra={"error": exc.message})


# --- administration (CLI, platform runner) --------------------------------------------


def read_partners(settings: KafkaSettings, timeout: float = 30.0) -> list[PartnerRecord]:
    """Every partner currently on the partners topic (latest record per partner)."""
    registry = InMemoryPartners()
    consumer = follower_consumer(settings, f"handshake-partners-admin-{uuid.uuid4().hex[:6]}")
    try:
        tps = assign_all(consumer, settings.partners_topic, timeout)
        targets = consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < end for tp, end in targets.items()):
            if time.monotonic() > deadline:
                raise HandshakeError("timed out reading the partners topic")
            for records in consumer.poll(timeout_ms=200).values():
                for record in records:
                    if record.value is None:
                        if record.key:
                            registry.remove(record.key.decode("utf-8", "replace"))
                        continue
                    with contextlib.suppress(RecordError):
                        registry.apply(decode_partner(record.value))
    finally:
        consumer.close()
    return registry.all()


def publish_partner(settings: KafkaSettings, record: PartnerRecord, timeout: float = 30.0) -> None:
    """Write one partner record (acks=all, idempotent) and wait for the acknowledgement."""
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        enable_idempotence=True,
        max_block_ms=int(timeout * 1000),
        **settings.kafka_python_config(),
    )
    try:
        key, value = encode_partner(record)
        producer.send(settings.partners_topic, key=key, value=value).get(timeout=timeout)
    finally:
        producer.close(timeout=5)


def create_partner(
    settings: KafkaSettings,
    name: str,
    rate: float = 50.0,
    partner_id: str | None = None,
) -> tuple[str, str]:
    """Register a partner; return ``(partner_id, api_key)``. The key is never stored or shown again.

    The id is derived from ``name`` unless given; a taken id gets a short random suffix.
    """
    existing = {p.partner_id for p in read_partners(settings)}
    if partner_id is not None:
        if partner_id in existing:
            raise HandshakeError(f"partner {partner_id!r} already exists")
        chosen = partner_id
    else:
        chosen = slugify_partner_id(name)
        while chosen in existing:
            chosen = f"{slugify_partner_id(name)[:50]}-{uuid.uuid4().hex[:6]}"
    key = generate_key(chosen)
    record = PartnerRecord(
        partner_id=chosen,
        name=name,
        key_hash=hash_key(key),
        created_at=datetime.now(UTC),
        rate_per_second=rate,
    )
    publish_partner(settings, record)
    return chosen, key


def revoke_partner(settings: KafkaSettings, partner_id: str) -> PartnerRecord:
    """Mark a partner's key revoked (ingest refuses it within a second); return the new record."""
    current = {p.partner_id: p for p in read_partners(settings)}.get(partner_id)
    if current is None:
        raise HandshakeError(f"no partner {partner_id!r}")
    if current.revoked_at is not None:
        return current
    record = current.model_copy(update={"revoked_at": datetime.now(UTC)})
    publish_partner(settings, record)
    return record
