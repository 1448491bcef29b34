"""Queries of the event index: filters, keyset cursors, full-text terms and the SQL they make.

Pure functions plus a reader that takes a ``sqlite3.Connection``; nothing here knows HTTP.

Pagination is by keyset: a page ends with a cursor holding the sort value and row id of its
last item, and the next page starts strictly after it. Events that arrive meanwhile land before
the cursor (newest-first sorts) or are reached in order (oldest-first), so no item is repeated
or skipped while a client pages (an event corrected to another date may move).

The query is driven by the most selective table available: a pair's or a country's rows (read
in sort order from their own index), else the full-text matches, else the events table by the
sort index; the other filters are conditions on the event.
"""

from __future__ import annotations

import base64
import calendar
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

import orjson

from services.api.index.schema import first_id

Sort = Literal["starts_on", "-starts_on", "received_at", "-received_at"]
SORTS: tuple[Sort, ...] = ("starts_on", "-starts_on", "received_at", "-received_at")
DEFAULT_SORT: Sort = "-starts_on"

_PERIOD = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")
_TERM = re.compile(r'[^\s"]+')


class QueryError(ValueError):
    """A parameter that cannot be used; ``param`` names it (``query:from``, ``query:cursor``)."""

    def __init__(self, param: str, message: str) -> None:
        self.param = param
        super().__init__(f"{param}: {message}")


def period(text: str, *, end: bool, param: str) -> date:
    """First (``end=False``) or last day of ``YYYY``, ``YYYY-MM`` or ``YYYY-MM-DD``."""
    m = _PERIOD.match(text.strip())
    if not m:
        raise QueryError(param, f"{text!r} is not a date like 1971, 1971-04 or 1971-04-10")
    year, month, day = int(m.group(1)), m.group(2), m.group(3)
    try:
        if month is None:
            return date(year, 12, 31) if end else date(year, 1, 1)
        mo = int(month)
        if day is None:
            return date(year, mo, calendar.monthrange(year, mo)[1] if end else 1)
        return date(year, mo, int(day))
    except ValueError:
        raise QueryError(param, f"{text!r} is not a calendar date") from None


def fts_terms(text: str) -> str | None:
    """A safe FTS5 query from what a person typed: every word must match (prefix on the last).

    Each whitespace-separated word becomes a quoted phrase, so FTS5 syntax in the input has no
    effect and cannot fail ("ping-pong" matches the phrase "ping pong"). ``None``: no word.
    """
    text = "".join(ch if ch.isprintable() else " " for ch in text)  # no NUL or control characters
    words = _TERM.findall(text)
    if not words or not any(any(ch.isalnum() for ch in w) for w in words):
        return None
    phrases = ['"' + w.replace('"', "") + '"' for w in words if any(ch.isalnum() for ch in w)]
    phrases[-1] += "*"
    return " ".join(phrases)


@dataclass(frozen=True, slots=True)
class EventQuery:
    """Filters of ``/v1/events``; codes and pair keys canonical, dates inclusive."""

    pair: str | None = None
    country: str | None = None
    kind: str | None = None
    status: str | None = None
    date_from: date | None = None
    date_to: date | None = None
    q: str | None = None  # an FTS5 query from :func:`fts_terms`
    partner: str | None = None
    sort: Sort = DEFAULT_SORT
    limit: int = 50
    after: tuple[int, int] | None = None  # (sort value, id) of the last item of the previous page


def encode_cursor(sort: Sort, value: int, rowid: int) -> str:
    raw = orjson.dumps([sort, value, rowid])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, sort: Sort) -> tuple[int, int]:
    """(value, id) of a cursor made for ``sort``; QueryError naming ``query:cursor`` otherwise."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        made_for, value, rowid = orjson.loads(raw)
        if type(value) is not int or type(rowid) is not int or made_for not in SORTS:
            raise ValueError
    except (ValueError, TypeError, orjson.JSONDecodeError):
        raise QueryError("query:cursor", "not a cursor from this api (use next_cursor as given)") from None
    if made_for != sort:
        raise QueryError("query:cursor", f"this cursor pages sort={made_for}, not sort={sort}")
    return value, rowid


@dataclass(frozen=True, slots=True)
class Sql:
    base: str  # FROM ... WHERE ... (without the keyset condition)
    params: tuple[object, ...]
    count: str  # SELECT count(*) ... of the same rows, joining only what the filters need
    count_params: tuple[object, ...]
    sort_col: str  # equals id_col when sorting by date (ids order by date)
    id_col: str
    descending: bool


def build(query: EventQuery) -> Sql:
    conditions: list[str] = []
    params: list[object] = []
    needs_event = query.partner is not None
    if query.pair is not None:
        table, ident = "event_pairs d", "d.ord"
        conditions.append("d.pair = ?")
        params.append(query.pair)
        if query.country is not None:
            conditions.append("d.ord IN (SELECT ord FROM event_countries WHERE country = ?)")
            params.append(query.country)
    elif query.country is not None:
        table, ident = "event_countries d", "d.ord"
        conditions.append("d.country = ?")
        params.append(query.country)
    elif query.q is not None:
        table, ident = "events_fts f", "f.rowid"
        conditions.append("events_fts MATCH ?")
        params.append(query.q)
    else:
        table, ident, needs_event = "events e", "e.ord", True
    if query.q is not None and table != "events_fts f":
        conditions.append(f"{ident} IN (SELECT rowid FROM events_fts WHERE events_fts MATCH ?)")
        params.append(query.q)
    if query.date_from is not None:  # a date range is an id range
        conditions.append(f"{ident} >= ?")
        params.append(first_id(query.date_from))
    if query.date_to is not None:
        conditions.append(f"{ident} < ?")
        params.append(first_id(query.date_to + timedelta(days=1)))
    on_driver = "d" if table.endswith(" d") else "e"  # pair and country rows carry kind and status
    if on_driver == "e" and (query.kind is not None or query.status is not None):
        needs_event = True
    for name, value in (("kind", query.kind), ("status", query.status)):
        if value is not None:
            conditions.append(f"{on_driver}.{name} = ?")
            params.append(value)
    driver_only, driver_params = list(conditions), tuple(params)  # a count without the event
    if query.partner is not None:
        conditions.append("e.partner_id = ?")
        params.append(query.partner)
    join = "" if table == "events e" else f" CROSS JOIN events e ON e.ord = {ident}"
    where = (" WHERE " + " AND ".join(conditions)) if conditions else ""
    if needs_event:
        count, count_params = f"SELECT count(*) FROM {table}{join}{where}", tuple(params)
    else:
        count = f"SELECT count(*) FROM {table}" + (
            " WHERE " + " AND ".join(driver_only) if driver_only else ""
        )
        count_params = driver_params
    by_date = query.sort.lstrip("-") == "starts_on"
    return Sql(
        base=f"FROM {table}{join}{where}",
        params=tuple(params),
        count=count,
        count_params=count_params,
        sort_col=ident if by_date else "e.received_at",
        id_col=ident if by_date else "e.ord",
        descending=query.sort.startswith("-"),
    )


@dataclass(frozen=True, slots=True)
class Page:
    docs: list[bytes]
    total: int
    next_cursor: str | None


def _rows(conn: sqlite3.Connection, sql: Sql, after: tuple[int, int] | None, limit: int) -> list[tuple]:
    order = "DESC" if sql.descending else "ASC"
    where, params = sql.base, list(sql.params)
    by_id = sql.sort_col == sql.id_col
    if after is not None:
        op = "<" if sql.descending else ">"
        glue = " AND " if " WHERE " in where else " WHERE "
        if by_id:
            where += f"{glue}{sql.id_col} {op} ?"
            params.append(after[1])
        else:
            where += f"{glue}({sql.sort_col}, {sql.id_col}) {op} (?, ?)"
            params.extend(after)
    order_by = f"{sql.id_col} {order}" if by_id else f"{sql.sort_col} {order}, {sql.id_col} {order}"
    text = f"SELECT e.doc, {sql.sort_col}, {sql.id_col} {where} ORDER BY {order_by} LIMIT ?"
    return conn.execute(text, (*params, limit)).fetchall()


def count(conn: sqlite3.Connection, query: EventQuery) -> int:
    sql = build(query)
    return int(conn.execute(sql.count, sql.count_params).fetchone()[0])


def page(conn: sqlite3.Connection, query: EventQuery) -> Page:
    sql = build(query)
    rows = _rows(conn, sql, query.after, query.limit + 1)
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    cursor = encode_cursor(query.sort, rows[-1][1], rows[-1][2]) if more else None
    total = int(conn.execute(sql.count, sql.count_params).fetchone()[0])
    return Page(docs=[r[0] for r in rows], total=total, next_cursor=cursor)


def scan(conn: sqlite3.Connection, query: EventQuery, chunk: int = 1000) -> Iterator[list[bytes]]:
    """Every matching doc from ``query.after`` on, ``chunk`` at a time, each chunk its own read."""
    sql = build(query)
    after = query.after
    while True:
        rows = _rows(conn, sql, after, chunk)
        if not rows:
            return
        yield [r[0] for r in rows]
        if len(rows) < chunk:
            return
        after = (rows[-1][1], rows[-1][2])


def get(conn: sqlite3.Connection, key: str) -> bytes | None:
    row = conn.execute("SELECT doc FROM events WHERE key = ?", (key,)).fetchone()
    return None if row is None else bytes(row[0])
