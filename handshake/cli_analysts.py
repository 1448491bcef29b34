"""``handshake analysts add|list|revoke``: analysts' read-only credentials on a secured broker."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import typer
from kafka.admin import KafkaAdminClient

from handshake.errors import HandshakeError

app = typer.Typer(no_args_is_help=True, help="Analysts' credentials on a secured broker (read-only).")

DATA_DIR = typer.Option(
    None,
    help="the secured native broker's data dir (or the platform's, holding kafka/); without it,"
    " the HANDSHAKE_KAFKA_* settings log in as admin (in a container)",
)


@dataclass(frozen=True)
class Broker:
    """Where analysts will connect: the bootstrap servers and the CA file they trust."""

    bootstrap: str
    ca_file: str


@contextmanager
def _admin(data_dir: Path | None) -> Iterator[tuple[KafkaAdminClient, Broker]]:
    from handshake.broker import Cluster
    from handshake.security import ADMIN
    from handshake.settings import KafkaSettings
    from handshake.topics import admin_client

    settings = KafkaSettings()
    if data_dir is None and settings.secured:
        if settings.kafka_username != ADMIN:
            raise HandshakeError(
                f"HANDSHAKE_KAFKA_USERNAME is {settings.kafka_username!r}; analysts need {ADMIN!r}"
            )
        broker = Broker(settings.kafka_bootstrap, str(settings.kafka_ca_file or ""))
    else:
        data_dir = data_dir or Path(".handshake/kafka")
        if not (data_dir / "layout").exists() and (data_dir / "kafka" / "layout").exists():
            data_dir = data_dir / "kafka"
        if not (data_dir / "layout").exists():
            raise HandshakeError(f"no native broker in {data_dir}")
        cluster = Cluster(data_dir)
        if not cluster.secure:
            raise HandshakeError(f"the broker in {data_dir} is open (no credentials); start it with --secure")
        settings = cluster.admin_settings()
        broker = Broker(cluster.bootstrap, str(cluster.secrets.ca_file))
    admin = admin_client(settings.kafka_bootstrap, timeout=10, security=settings.kafka_python_config())
    try:
        yield admin, broker
    finally:
        admin.close()


@app.command("add")
def add(
    name: str,
    data_dir: Path | None = DATA_DIR,
    java: bool = typer.Option(False, "--java", help="the Java clients' properties instead of librdkafka's"),
    bootstrap: str | None = typer.Option(None, help="the address analysts dial, if not the broker's own"),
    ca_file: str | None = typer.Option(None, help="where analysts keep the CA file, if elsewhere"),
) -> None:
    """Create analyst NAME and print, once, its client configuration (kcat -F FILE)."""
    from handshake.access import add_analyst, client_properties
    from handshake.security import ANALYST_PREFIX
    from handshake.settings import KafkaSettings

    with _admin(data_dir) as (admin, broker):
        password = add_analyst(admin, KafkaSettings(), name)
        typer.echo(
            client_properties(
                bootstrap or broker.bootstrap,
                ANALYST_PREFIX + name,
                password,
                ca_file or broker.ca_file,
                java=java,
            ),
            nl=False,
        )
    typer.echo(
        f"# analyst {name}: reads the events, pair-stats and dead-letter topics; consumer groups"
        f" {ANALYST_PREFIX}{name}.*; this password is shown once",
        err=True,
    )


@app.command("list")
def list_(data_dir: Path | None = DATA_DIR) -> None:
    """The analysts that hold a credential."""
    from handshake.access import list_analysts

    with _admin(data_dir) as (admin, _):
        for name in list_analysts(admin):
            typer.echo(name)


@app.command("revoke")
def revoke(name: str, data_dir: Path | None = DATA_DIR) -> None:
    """Delete analyst NAME's credential and rights (new connections are refused at once)."""
    from handshake.access import revoke_analyst
    from handshake.settings import KafkaSettings

    with _admin(data_dir) as (admin, _):
        revoke_analyst(admin, KafkaSettings(), name)
    typer.echo(f"revoked analyst {name}")
