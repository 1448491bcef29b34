"""Settings shared by every service, read from ``HANDSHAKE_*`` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.topics import (
    DEAD_LETTER_TOPIC,
    EVENTS_TOPIC,
    PAIR_STATS_TOPIC,
    PARTNERS_TOPIC,
    TOPICS,
    TopicSpec,
)


class KafkaSettings(BaseSettings):
    """Where Kafka is and what the topics are called (tests use their own topic names)."""

    model_config = SettingsConfigDict(env_prefix="HANDSHAKE_", extra="ignore")

    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, comma separated")
    events_topic: str = EVENTS_TOPIC
    partners_topic: str = PARTNERS_TOPIC
    pair_stats_topic: str = PAIR_STATS_TOPIC
    dead_letter_topic: str = DEAD_LETTER_TOPIC
    replication_factor: int = Field(1, ge=1, description="replication factor of topics this service creates")
    min_insync_replicas: int | None = Field(None, ge=1)
    log_level: str = "INFO"

    def topic_specs(self) -> list[TopicSpec]:
        """The declared topics under this deployment's names."""
        names = {
            EVENTS_TOPIC: self.events_topic,
            PARTNERS_TOPIC: self.partners_topic,
            PAIR_STATS_TOPIC: self.pair_stats_topic,
            DEAD_LETTER_TOPIC: self.dead_letter_topic,
        }
        out = []
        for spec in TOPICS:
            config = dict(spec.config)
            if self.min_insync_replicas:
                config["min.insync.replicas"] = str(self.min_insync_replicas)
            out.append(
                TopicSpec(
                    name=names[spec.name],
                    partitions=spec.partitions,
                    config=config,
                    key=spec.key,
                    description=spec.description,
                )
            )
        return out
