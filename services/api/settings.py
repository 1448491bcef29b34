"""Configuration of the api service (``HANDSHAKE_*`` environment variables)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from handshake.settings import KafkaSettings


class ApiSettings(KafkaSettings):
    """Kafka settings plus the api's own: where it listens, access tokens and stream bounds."""

    host: str = Field("127.0.0.1", description="interface to listen on")
    port: int = Field(8000, ge=0, le=65535, description="port to listen on")
    api_tokens: str = Field(
        "",
        description=(
            "comma-separated bearer tokens; empty = open access (logged at start). "
            "/healthz and the dashboard shell (/, /static/*) never need one"
        ),
    )
    sse_heartbeat_seconds: float = Field(15.0, gt=0, description="': ping' comment interval on idle streams")
    sse_client_queue: int = Field(
        1000, ge=1, description="pending events per stream client before coalescing, then disconnecting"
    )
    sse_replay_buffer: int = Field(100_000, ge=0, description="updates kept for Last-Event-ID resumption")
    sse_max_clients: int = Field(10_000, ge=1, description="concurrent stream clients; more get 503")
    fanout_batch: int = Field(
        100, ge=1, description="updates applied and fanned out before yielding to stream writers"
    )
    consumer_poll_ms: int = Field(200, ge=10, description="poll timeout of the pair-stats consumer")
    consumer_client_id: str = "handshake-api"
    consumer_stall_seconds: float = Field(
        20.0,
        gt=0,
        description="a consumer whose positions stay put this long while its topic's end is ahead is "
        "recreated (a client stuck after a broker fault)",
    )
    api_data_dir: Path = Field(
        Path(".handshake/api"),
        description="where the event index (events.sqlite3) lives; rebuilt from Kafka when lost",
    )
    index_batch: int = Field(5000, ge=1, description="records per index transaction at most")
    index_workers: int = Field(
        2, ge=1, le=32, description="processes that read a large backlog into the event index (1: no workers)"
    )
    index_catchup_batch: int = Field(
        50_000,
        ge=1,
        description="records per transaction of a catch-up worker (bulk loads write less per event)",
    )
    index_catchup_records: int = Field(
        50_000, ge=1, description="backlog (records) from which the index starts catch-up workers"
    )
    reconcile_interval_seconds: float = Field(
        30.0, gt=0, description="how often the api reconciles the aggregates with the event index"
    )

    @field_validator("api_tokens")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()

    def tokens(self) -> tuple[str, ...]:
        """The configured tokens (empty tuple = open access)."""
        return tuple(t.strip() for t in self.api_tokens.split(",") if t.strip())
