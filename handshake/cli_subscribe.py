"""`handshake subscribe`: tail the api's live stream of pair snapshots (Server-Sent Events).

Reconnects on its own and resumes with ``Last-Event-ID``, so no update is lost while the api
keeps running; after an ``event: reset`` (the api restarted, or the gap is too old) it says so.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import typer


@dataclass
class ServerSentEvent:
    event: str = "message"
    data: str = ""
    id: str | None = None


@dataclass
class SSEParser:
    """Incremental text/event-stream parser (enough of the WHATWG rules for our stream)."""

    _buffer: str = ""
    _data: list[str] = field(default_factory=list)
    _event: str = ""
    _id: str | None = None
    last_id: str | None = None

    def feed(self, chunk: str) -> list[ServerSentEvent]:
        self._buffer += chunk
        out: list[ServerSentEvent] = []
        while True:
            cut = self._buffer.find("\n")
            if cut < 0:
                return out
            line, self._buffer = self._buffer[:cut].rstrip("\r"), self._buffer[cut + 1 :]
            if not line:
                if self._data or self._event:
                    out.append(ServerSentEvent(self._event or "message", "\n".join(self._data), self._id))
                self._data, self._event, self._id = [], "", None
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                self._data.append(value)
            elif name == "event":
                self._event = value
            elif name == "id":
                self._id = value
                self.last_id = value


def describe(stats: dict[str, Any]) -> str:
    """One readable line for a PairStats snapshot."""
    kinds: dict[str, int] = stats.get("by_kind") or {}
    kind_text = ", ".join(f"{k} {n}" for k, n in sorted(kinds.items(), key=lambda kv: -kv[1]))
    last = stats.get("last_date") or "-"
    return (
        f"{stats.get('pair')}  events {stats.get('active_events')}  participants {stats.get('participants')}"
        f"  cancelled {stats.get('cancelled', 0)}  [{kind_text or 'no kinds'}]  last {last}"
        f"  v{stats.get('version')}"
    )


def describe_change(change: dict[str, Any]) -> str:
    """One readable line for an EventChange of /v1/stream/events."""
    item = change.get("item") or {}
    visitors = ",".join(str(d.get("country")) for d in item.get("delegations") or [])
    return (
        f"{change.get('change', '?'):9}  {item.get('starts_on')}  {visitors}>{item.get('host_country')}"
        f"  {item.get('kind')}  {item.get('title')}  [{item.get('key')} r{item.get('revision')}]"
    )


def stream_events(
    url: str,
    *,
    params: dict[str, str],
    token: str | None,
    last_id: str | None = None,
    retry_seconds: float = 2.0,
    max_reconnects: int | None = None,
    path: str = "/v1/stream",
) -> Iterator[ServerSentEvent]:
    """Yield events forever, reconnecting with Last-Event-ID after errors."""
    reconnects = 0
    while True:
        headers = {"Accept": "text/event-stream"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if last_id:
            headers["Last-Event-ID"] = last_id
        parser = SSEParser(last_id=last_id)
        try:
            with (
                httpx.Client(timeout=httpx.Timeout(10.0, read=60.0)) as client,
                client.stream("GET", url.rstrip("/") + path, params=params, headers=headers) as r,
            ):
                if r.status_code in (400, 401, 403, 404):
                    r.read()
                    detail = (
                        r.json().get("detail")
                        if r.headers.get("content-type", "").endswith("json")
                        else r.text
                    )
                    raise typer.BadParameter(f"{r.status_code}: {detail}")
                r.raise_for_status()
                for chunk in r.iter_text():
                    yield from parser.feed(chunk)
                    last_id = parser.last_id or last_id
        except (httpx.HTTPError, OSError) as exc:
            typer.echo(f"# stream interrupted ({exc.__class__.__name__}); reconnecting", err=True)
        reconnects += 1
        if max_reconnects is not None and reconnects > max_reconnects:
            return
        time.sleep(retry_seconds)


def subscribe(
    pair: str | None = typer.Option(None, "--pair", help="one pair, e.g. CN-US"),
    country: str | None = typer.Option(None, "--country", help="pairs with this country, e.g. FR"),
    kind: str | None = typer.Option(None, "--kind", help="pairs with this kind of event, e.g. athletic"),
    url: str = typer.Option("http://127.0.0.1:8000", "--url", help="the api's base URL"),
    token: str | None = typer.Option(
        None, "--token", help="bearer token (default: HANDSHAKE_API_TOKEN when the api requires one)"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the raw JSON lines"),
    events: bool = typer.Option(
        False,
        "--events",
        help="the accepted events as they arrive (new, corrected, cancelled), not pair figures",
    ),
) -> None:
    """Tail the live stream of pair snapshots, or of events with --events (resumes after a disconnect)."""
    params = {k: v for k, v in {"pair": pair, "country": country, "kind": kind}.items() if v}
    token = token or os.environ.get("HANDSHAKE_API_TOKEN") or None
    what = "events" if events else "pairs"
    typer.echo(f"# subscribed to {url} {params or f'(all {what})'}; Ctrl-C stops", err=True)
    path = "/v1/stream/events" if events else "/v1/stream"
    try:
        for event in stream_events(url, params=params, token=token, path=path):
            if event.event == "pair":
                typer.echo(event.data if as_json else describe(orjson.loads(event.data)))
            elif event.event == "event":
                typer.echo(event.data if as_json else describe_change(orjson.loads(event.data)))
            elif event.event == "reset":
                typer.echo(
                    "# the api restarted or the gap is too old: some updates were not replayed", err=True
                )
    except KeyboardInterrupt:
        pass
