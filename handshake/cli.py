"""The ``handshake`` command line (DESIGN.md section 5)."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from handshake.errors import HandshakeError

if TYPE_CHECKING:
    from handshake.settings import KafkaSettings

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="Handshake: citizen-diplomacy event platform."
)
kafka_app = typer.Typer(no_args_is_help=True, help="The native Apache Kafka broker (KRaft, no Docker).")
app.add_typer(kafka_app, name="kafka")

DEFAULT_DATA = Path(".handshake")


def _register_optional() -> None:
    """Sub-commands that live next to the code they drive."""
    from handshake import cli_analysts, cli_events, cli_partners, cli_platform, cli_subscribe

    app.add_typer(cli_partners.app, name="partners")
    app.add_typer(cli_analysts.app, name="analysts")
    app.command("subscribe")(cli_subscribe.subscribe)
    app.command("events")(cli_events.events)
    cli_platform.register(app)


@kafka_app.command("start")
def kafka_start(
    port: int = typer.Option(9092, help="first broker port (controllers use port+100)"),
    data_dir: Path = typer.Option(DEFAULT_DATA / "kafka", help="where the broker keeps its data"),
    brokers: int = typer.Option(1, help="1, or 3 for a local three-node KRaft cluster"),
    secure: bool = typer.Option(
        False, "--secure", help="SASL_SSL with SCRAM-SHA-512, a local CA, and least-privilege ACLs"
    ),
) -> None:
    """Start the broker and wait until it logged 'Kafka Server started'."""
    from handshake.broker import Cluster

    cluster = Cluster(data_dir, port=port, brokers=brokers, secure=secure or None)
    seconds = cluster.start()
    typer.echo(
        f"Kafka ready at {cluster.bootstrap} ({cluster.brokers} node(s), {seconds:.1f}s; data in {data_dir})"
    )
    if cluster.secure:
        _declare(cluster.admin_settings(), None)
        typer.echo(
            f"secured: SASL_SSL, SCRAM-SHA-512; CA {cluster.secrets.ca_file}; service credentials in"
            f" {cluster.secrets.credentials_file} (0600); analysts: handshake analysts add NAME --data-dir {data_dir}"
        )
    else:
        typer.echo(
            "open: no authentication, anyone who reaches 127.0.0.1 may read and write (--secure to close it)"
        )


@kafka_app.command("stop")
def kafka_stop(data_dir: Path = typer.Option(DEFAULT_DATA / "kafka")) -> None:
    """Stop the broker cleanly (SIGTERM, then wait)."""
    from handshake.broker import Cluster

    cluster = Cluster(data_dir)
    was = len(cluster.running())
    cluster.stop()
    typer.echo(f"stopped {was} Kafka node(s)" if was else "Kafka was not running")


@kafka_app.command("status")
def kafka_status(data_dir: Path = typer.Option(DEFAULT_DATA / "kafka")) -> None:
    """Show each node and whether it runs; exit 1 when none does."""
    from handshake.broker import Cluster

    cluster = Cluster(data_dir)
    rows = cluster.status()
    typer.echo(json.dumps({"bootstrap": cluster.bootstrap, "nodes": rows}))
    if not any(r["running"] for r in rows):
        raise typer.Exit(1)


@kafka_app.command("topics")
def kafka_topics(
    bootstrap: str | None = typer.Option(None, help="default: HANDSHAKE_KAFKA_BOOTSTRAP or 127.0.0.1:9092"),
    replication_factor: int | None = typer.Option(None, help="default: HANDSHAKE_REPLICATION_FACTOR or 1"),
    data_dir: Path | None = typer.Option(
        None, help="a native broker's data dir: secured, its admin credential is used and the ACLs applied"
    ),
) -> None:
    """Declare the four Handshake topics (and, secured, the ACLs); report (exit 1) any topic whose policy differs."""
    from handshake.settings import KafkaSettings

    settings = KafkaSettings()
    if data_dir is not None:
        from handshake.broker import Cluster

        cluster = Cluster(data_dir)
        settings = settings.model_copy(update={"kafka_bootstrap": cluster.bootstrap})
        if cluster.secure:
            from handshake.security import ADMIN

            settings = cluster.secrets.login(settings, ADMIN)
    if bootstrap:
        settings = settings.model_copy(update={"kafka_bootstrap": bootstrap})
    _declare(settings, replication_factor)


def _owner(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    uid, _, gid = text.partition(":")
    if not (uid.isdigit() and gid.isdigit()):
        raise HandshakeError(f"owner {text!r}: expected UID:GID, e.g. 1000:1000")
    return int(uid), int(gid)


@kafka_app.command("secrets")
def kafka_secrets(
    directory: Path = typer.Argument(..., help="where the secrets live (created once, then reused)"),
    host: list[str] = typer.Option(..., help="a name clients dial, put in the broker's certificate"),
    listener: list[str] = typer.Option(
        ..., help="NAME=BIND/ADVERTISED, e.g. SASL_SSL=:9092/kafka:9092 (the first is inter-broker)"
    ),
    controller: str = typer.Option("127.0.0.1:9093", help="the internal KRaft controller listener"),
    log_dir: str = typer.Option("/var/lib/kafka/data", help="the broker's data folder in its container"),
    mount: Path | None = typer.Option(None, help="where containers see DIRECTORY (default: itself)"),
    broker_owner: str | None = typer.Option(None, help="UID:GID owning broker/ (run as root)"),
    client_owner: str | None = typer.Option(None, help="UID:GID owning clients/ (run as root)"),
) -> None:
    """A secured broker's files for containers: broker/ (its settings, certificate, start script)
    and clients/ (the CA, one password file per principal); see deploy/README.md."""
    from handshake.kafka_secrets import Listener, export

    layout = export(
        directory,
        hosts=tuple(host),
        listeners=[Listener.parse(text) for text in listener],
        controller=controller,
        log_dir=log_dir,
        mount=mount,
        broker_owner=_owner(broker_owner),
        client_owner=_owner(client_owner),
    )
    typer.echo(f"broker    {layout.broker} (seen as {layout.seen(layout.broker)})")
    typer.echo(f"clients   {layout.clients} (seen as {layout.seen(layout.clients)})")


def _declare(settings: KafkaSettings, replication_factor: int | None) -> None:
    """Topics, and on a secured broker (logged in as admin) the ACLs."""
    from handshake.topics import ensure_topics

    report = ensure_topics(
        settings.kafka_bootstrap,
        settings.topic_specs(),
        replication_factor or settings.replication_factor,
        settings.kafka_python_config(),
    )
    if settings.secured:
        from handshake.access import declare
        from handshake.security import acl_rules

        created = declare(settings, acl_rules(settings))
        for rule in created:
            typer.echo(f"acl       {rule}")
        typer.echo(f"acls      {len(acl_rules(settings))} declared, {len(created)} created")
    for name in report.created:
        typer.echo(f"created   {name}")
    for name in report.unchanged:
        typer.echo(f"unchanged {name}")
    for problem in report.problems:
        typer.echo(f"MISMATCH  {problem}", err=True)
    if report.problems:
        raise typer.Exit(1)


class Service(StrEnum):
    ingest = "ingest"
    aggregator = "aggregator"
    api = "api"


@app.command("serve")
def serve(service: Service) -> None:
    """Run one service on its own (configured by HANDSHAKE_* environment variables)."""
    import importlib

    importlib.import_module(f"services.{service.value}.main").serve()


def main() -> None:
    _register_optional()
    try:
        app()
    except HandshakeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
