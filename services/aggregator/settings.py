"""Configuration of the aggregator, from ``HANDSHAKE_*`` / ``HANDSHAKE_AGGREGATOR_*`` variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field

from handshake.settings import KafkaSettings


def _env(name: str) -> AliasChoices:
    # both HANDSHAKE_AGGREGATOR_<NAME> and HANDSHAKE_<NAME> (the field name) are accepted
    return AliasChoices(f"HANDSHAKE_AGGREGATOR_{name.upper()}", f"HANDSHAKE_{name.upper()}", name)


class AggregatorSettings(KafkaSettings):
    """Settings of the faust worker (app id, state store, web port, batching)."""

    app_id: str = Field("handshake-aggregator", validation_alias=_env("app_id"))
    data_dir: Path = Field(
        Path(".handshake/aggregator"),
        validation_alias=_env("data_dir"),
        description="RocksDB tables live here (one folder per worker)",
    )
    store: str = Field("rocksdb://", validation_alias=_env("store"), description="rocksdb:// or memory://")
    web_port: int = Field(8002, validation_alias=_env("web_port"))
    web_host: str = Field("127.0.0.1", validation_alias=_env("web_host"))
    batch_size: int = Field(5000, ge=1, validation_alias=_env("batch_size"))
    flush_interval: float = Field(
        0.2, gt=0, validation_alias=_env("flush_interval"), description="max seconds a batch waits"
    )
    topic_partitions: int = Field(12, ge=1, validation_alias=_env("topic_partitions"))
    standby_replicas: int = Field(1, ge=0, validation_alias=_env("standby_replicas"))
    session_timeout: float = Field(
        10.0,
        gt=0,
        validation_alias=_env("session_timeout"),
        description="a dead worker's partitions move after this",
    )
    commit_interval: float = Field(1.0, gt=0, validation_alias=_env("commit_interval"))
    purge_interval: float = Field(
        30.0,
        gt=0,
        validation_alias=_env("purge_interval"),
        description="seconds between deletions of the partials stage 2 has taken and committed",
    )

    @property
    def partials_topic(self) -> str:
        """The internal topic of per-partition partial aggregates, in bundles partitioned by pair."""
        return f"{self.app_id}-pair-partials"
