"""`handshake events`: export the events behind the numbers from the api's event index.

Streams ``GET /v1/events`` as CSV (default), NDJSON or JSON pages to stdout or a file, with a
progress bar on stderr (when it is a terminal) sized by the query's ``total``.
"""

from __future__ import annotations

import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import IO

import httpx
import typer


class Format(StrEnum):
    csv = "csv"
    ndjson = "ndjson"


def _fail(response: httpx.Response) -> None:
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    typer.echo(f"error: {response.status_code}: {detail}", err=True)
    raise typer.Exit(1)


def events(
    pair: str | None = typer.Option(None, "--pair", help="e.g. CN-US (any order, alpha-3, former codes)"),
    country: str | None = typer.Option(None, "--country", help="host or delegation, e.g. FR"),
    kind: str | None = typer.Option(None, "--kind", help="e.g. athletic"),
    status: str | None = typer.Option(None, "--status", help="e.g. cancelled"),
    date_from: str | None = typer.Option(None, "--from", help="YYYY, YYYY-MM or YYYY-MM-DD (starts_on)"),
    date_to: str | None = typer.Option(None, "--to", help="YYYY, YYYY-MM or YYYY-MM-DD, inclusive"),
    q: str | None = typer.Option(None, "--q", help="words in title, city, organizer, description, tags"),
    partner: str | None = typer.Option(None, "--partner", help="a partner id"),
    sort: str = typer.Option("starts_on", "--sort", help="starts_on, -starts_on, received_at, -received_at"),
    fmt: Format = typer.Option(Format.csv, "--format", help="csv (with a header row) or ndjson"),
    output: Path | None = typer.Option(None, "--output", "-o", help="file to write (default: stdout)"),
    url: str = typer.Option("http://127.0.0.1:8000", "--url", help="the api's base URL"),
    token: str | None = typer.Option(None, "--token", help="bearer token (default: HANDSHAKE_API_TOKEN)"),
) -> None:
    """Export every matching event (streamed; memory stays flat for any size)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    params = {
        k: v
        for k, v in {
            "pair": pair,
            "country": country,
            "kind": kind,
            "status": status,
            "from": date_from,
            "to": date_to,
            "q": q,
            "partner": partner,
            "sort": sort,
        }.items()
        if v is not None
    }
    token = token or os.environ.get("HANDSHAKE_API_TOKEN") or None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    written = 0
    with httpx.Client(base_url=url, headers=headers, timeout=httpx.Timeout(30.0, read=300.0)) as client:
        try:
            first = client.get("/v1/events", params={**params, "limit": 1})
        except httpx.HTTPError as exc:
            typer.echo(f"error: cannot reach the api at {url}: {exc}", err=True)
            raise typer.Exit(1) from None
        if first.status_code != 200:
            _fail(first)
        total = int(first.json()["total"])
        sink: IO[bytes] = output.open("wb") if output else sys.stdout.buffer
        newline = b"\r\n" if fmt is Format.csv else b"\n"
        stderr = Console(stderr=True)
        columns = (TextColumn("events"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        try:
            with (
                Progress(*columns, console=stderr, disable=not stderr.is_terminal) as progress,
                client.stream("GET", "/v1/events", params={**params, "format": fmt.value}) as r,
            ):
                task = progress.add_task("export", total=total)
                if r.status_code != 200:
                    r.read()
                    _fail(r)
                header = fmt is Format.csv
                for chunk in r.iter_bytes():
                    sink.write(chunk)
                    rows = chunk.count(newline)
                    if header and rows:
                        rows, header = rows - 1, False
                    written += rows
                    progress.update(task, completed=min(written, total))
        finally:
            sink.flush()
            if output:
                sink.close()
    typer.echo(f"# {written} events written" + (f" to {output}" if output else ""), err=True)
