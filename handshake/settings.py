"""Settings shared by every service, read from ``HANDSHAKE_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, SecretStr, model_validator
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
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="PLAINTEXT (an open local broker) or SASL_SSL (SCRAM over TLS)"
    )
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256"] = "SCRAM-SHA-512"
    kafka_username: str | None = Field(None, description="this service's principal on the broker")
    kafka_password: SecretStr | None = Field(None, description="never logged; from a 0600 file or a secret")
    kafka_password_file: Path | None = Field(
        None, description="a file holding the password (a mounted secret), read when no password is set"
    )
    kafka_ca_file: Path | None = Field(
        None, description="PEM file of the CA that signed the broker's certificate"
    )

    @model_validator(mode="after")
    def _password_from_file(self) -> Self:
        if self.kafka_password is None and self.kafka_password_file is not None:
            try:
                text = self.kafka_password_file.read_text().strip()
            except OSError as exc:
                raise ValueError(f"kafka_password_file: cannot read it ({exc.strerror})") from None
            if not text:
                raise ValueError("kafka_password_file: the file is empty")
            self.kafka_password = SecretStr(text)
        return self

    @property
    def secured(self) -> bool:
        return self.kafka_security_protocol == "SASL_SSL"

    def _sasl_ssl(self) -> dict[str, Any]:
        """The SASL arguments kafka-python and aiokafka name alike (both take these keywords)."""
        return {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": self.kafka_sasl_mechanism,
            "sasl_plain_username": self.kafka_username,
            "sasl_plain_password": self.kafka_password.get_secret_value() if self.kafka_password else None,
        }

    def kafka_python_config(self) -> dict[str, Any]:
        """Keyword arguments that kafka-python's clients need to reach this broker."""
        if not self.secured:
            return {}
        ca = str(self.kafka_ca_file) if self.kafka_ca_file else None
        return {**self._sasl_ssl(), "ssl_cafile": ca, "ssl_check_hostname": True}

    def aiokafka_config(self) -> dict[str, Any]:
        """Keyword arguments that aiokafka's clients (and faust's, through them) need."""
        if not self.secured:
            return {}
        from aiokafka.helpers import create_ssl_context

        ca = str(self.kafka_ca_file) if self.kafka_ca_file else None
        return {**self._sasl_ssl(), "ssl_context": create_ssl_context(cafile=ca)}

    def for_child_process(self) -> str:
        """These settings as JSON for a worker process, the password included (JSON dumps of a
        ``SecretStr`` hide it); passed through a pipe, never a command line."""
        data = self.model_dump(mode="json")
        data["kafka_password"] = self.kafka_password.get_secret_value() if self.kafka_password else None
        import orjson

        return orjson.dumps(data).decode()

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
