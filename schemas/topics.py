"""The Kafka topics of the platform (DESIGN.md section 3), declared once as data."""

from __future__ import annotations

from dataclasses import dataclass

EVENTS_TOPIC = "handshake.exchange-events.v1"
PARTNERS_TOPIC = "handshake.partners.v1"
PAIR_STATS_TOPIC = "handshake.pair-stats.v1"
DEAD_LETTER_TOPIC = "handshake.dead-letter.v1"

DEAD_LETTER_RETENTION_MS = 30 * 24 * 60 * 60 * 1000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]
    key: str
    description: str


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(
        name=EVENTS_TOPIC,
        partitions=12,
        config={"cleanup.policy": "compact"},
        key="{partner_id}/{event_id}",
        description=(
            "Every accepted exchange event (latest revision wins under compaction), with the "
            "server fields partner_id and received_at, as CloudEvents 1.0 binary-mode records."
        ),
    ),
    TopicSpec(
        name=PARTNERS_TOPIC,
        partitions=1,
        config={"cleanup.policy": "compact"},
        key="{partner_id}",
        description="Registered partners and the sha256 hashes of their API keys (never the keys).",
    ),
    TopicSpec(
        name=PAIR_STATS_TOPIC,
        partitions=12,
        config={"cleanup.policy": "compact"},
        key="{AA}-{BB} (the two country codes, sorted)",
        description="The full aggregate snapshot of a country pair, published each time it changes.",
    ),
    TopicSpec(
        name=DEAD_LETTER_TOPIC,
        partitions=3,
        config={"cleanup.policy": "delete", "retention.ms": str(DEAD_LETTER_RETENTION_MS)},
        key="the original record's key",
        description="Records that could not be processed, with the reason; kept 30 days.",
    ),
)

TOPICS_BY_NAME: dict[str, TopicSpec] = {t.name: t for t in TOPICS}
