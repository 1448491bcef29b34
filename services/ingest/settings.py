"""Ingest configuration, read from ``HANDSHAKE_*`` environment variables."""

from __future__ import annotations

import os

from pydantic import Field

from handshake.settings import KafkaSettings


class IngestSettings(KafkaSettings):
    """Everything ingest needs; the Kafka part is shared with the other services."""

    host: str = Field("127.0.0.1", description="address the HTTP server binds to")
    port: int = Field(8001, ge=1, le=65535, description="HTTP port of ingest")
    ack_timeout_s: float = Field(
        5.0, gt=0, description="longest wait for the broker's acknowledgement before answering 503"
    )
    retry_after_s: int = Field(2, ge=1, description="Retry-After sent with 503 answers")
    max_batch_records: int = Field(1000, ge=1, description="most records in one batch request")
    max_body_bytes: int = Field(5 * 1024 * 1024, ge=1024, description="largest accepted request body")
    max_json_depth: int = Field(32, ge=4, description="deepest accepted JSON nesting")
    default_rate_per_second: float = Field(
        50.0, gt=0, description="rate for partners whose record carries none"
    )
    burst_seconds: float = Field(
        2.0, gt=0, description="a partner may burst rate_per_second x burst_seconds events at once"
    )
    linger_ms: int = Field(
        20,
        ge=0,
        le=100,
        description="producer linger: how long a record may wait for others to share its batch "
        "(under load fewer, fuller batches cost the producer's network I/O about half as much "
        "per record; an idle partner's push waits this long)",
    )
    batch_bytes: int = Field(
        256 * 1024,
        ge=1024,
        le=1024 * 1024,
        description="producer batch size per partition (fewer, larger produce requests under load)",
    )
    compression_type: str | None = Field(None, description="producer compression: gzip, lz4, zstd or none")
    opentelemetry: bool = Field(
        False,
        description="FastAPI's OpenTelemetry spans, metrics and logs (configure providers or OTEL_* env)",
    )
    create_topics: bool = Field(True, description="declare the topics at start-up (refuse wrong policies)")
    batch_workers: int = Field(
        default_factory=lambda: 1 if (os.cpu_count() or 1) > 1 else 0,
        ge=0,
        le=16,
        description="processes that decode, validate and encode batch bodies off the event loop "
        "(0: on the loop; default 1 when the machine has more than one CPU)",
    )
    view_poll_ms: int = Field(
        100, ge=10, le=1000, description="longest wait of one fetch of the partners/events follower"
    )
