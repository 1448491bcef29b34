"""`handshake up|down|push|demo-feed`: the whole platform and the partner-side tools."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from handshake.errors import HandshakeError


def up(
    data_dir: Path = typer.Option(
        Path(".handshake"), help="state kept between runs (Kafka, aggregator, logs)"
    ),
    kafka_port: int = typer.Option(9092),
    ingest_port: int = typer.Option(8001),
    api_port: int = typer.Option(8000),
    aggregator_port: int = typer.Option(8002),
    no_demo: bool = typer.Option(False, "--no-demo", help="no demo partner and feed"),
    demo_rate: float = typer.Option(5.0, help="demo events per second"),
    secure: bool = typer.Option(
        False, "--secure", help="the broker speaks SASL_SSL/SCRAM with ACLs; each service its own principal"
    ),
) -> None:
    """Run broker, topics, ingest, aggregator, api and a demo partner feed; Ctrl-C stops all."""
    from handshake.logs import setup_logging
    from handshake.platform import PlatformConfig
    from handshake.platform import up as run_up

    setup_logging("up", "WARNING")
    run_up(
        PlatformConfig(
            data_dir=data_dir,
            kafka_port=kafka_port,
            ingest_port=ingest_port,
            api_port=api_port,
            aggregator_port=aggregator_port,
            demo=not no_demo,
            demo_rate=demo_rate,
            secure=secure,
        )
    )


def down(data_dir: Path = typer.Option(Path(".handshake"))) -> None:
    """Stop a platform started by `handshake up` (services in order, then Kafka)."""
    from handshake.platform import down as run_down

    typer.echo("stopped" if run_down(data_dir) else "nothing was running")


def demo_feed(
    rate: float = typer.Option(5.0, help="actions per second"),
    url: str = typer.Option("http://127.0.0.1:8001", help="ingest base URL"),
    key: str = typer.Option(
        "", envvar="HANDSHAKE_PARTNER_KEY", help="partner key (or HANDSHAKE_PARTNER_KEY)"
    ),
    count: int | None = typer.Option(None, help="stop after this many actions (default: run until stopped)"),
    seed: int = typer.Option(7),
) -> None:
    """Push realistic demo exchanges (new events, corrections, cancellations) through ingest."""
    from handshake.demo import run_feed
    from handshake.logs import setup_logging

    if not key:
        raise HandshakeError("a partner key is needed: --key or HANDSHAKE_PARTNER_KEY")
    setup_logging("demo-feed")
    totals = run_feed(url, key, rate, count=count, seed=seed)
    typer.echo(totals)


def push(
    file: Path = typer.Argument(..., help="NDJSON (.ndjson/.jsonl) or CSV (.csv) file of events"),
    url: str = typer.Option("http://127.0.0.1:8001", help="ingest base URL"),
    key: str = typer.Option(
        "", envvar="HANDSHAKE_PARTNER_KEY", help="partner key (or HANDSHAKE_PARTNER_KEY)"
    ),
    rejections: Path | None = typer.Option(
        None, help="where to write rejected records (default FILE.rejected.ndjson)"
    ),
) -> None:
    """Upload a file of events through the batch endpoint, with progress and retries."""
    from rich.progress import Progress

    from handshake.push import count_records, push_file

    if not key:
        raise HandshakeError("a partner key is needed: --key or HANDSHAKE_PARTNER_KEY")
    if not file.exists():
        raise HandshakeError(f"{file} does not exist")
    out = rejections or file.with_name(file.name + ".rejected.ndjson")
    total = count_records(file)
    with Progress(disable=not os.isatty(2)) as progress:
        task = progress.add_task(f"pushing {file.name}", total=total)
        summary = push_file(file, url, key, rejections_file=out, progress=lambda n: progress.advance(task, n))
    typer.echo(
        f"{summary.records} records: {summary.accepted} accepted, {summary.duplicate} duplicate, "
        f"{summary.rejected} rejected ({summary.retries} retries)"
    )
    if summary.rejected:
        typer.echo(f"rejections with reasons: {out}")
        raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    """Attach the platform commands to the main app."""
    app.command("up")(up)
    app.command("down")(down)
    app.command("demo-feed")(demo_feed)
    app.command("push")(push)
