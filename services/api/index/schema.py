"""The index file's tables and connections (see :mod:`services.api.index.store` for the rules).

Every event has an ``ord`` that orders by date: ``(starts_on ordinal << 40) | sequence``
(:func:`row_id`). Each pair's and country's rows, the full-text index (its rowid) and an index
of the events table hold events in ``starts_on`` order, so a page of a pair, of a country or of
a search sorted by date is read from an index in order and stops after ``limit`` rows, and a
date range is an ``ord`` range. A correction gets a new ``ord``. The events table itself is
keyed by an append-only rowid (its big rows are written in order, never in the middle).
``received_at`` is microseconds since the epoch.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from datetime import UTC, date, datetime
from pathlib import Path

SCHEMA_VERSION = "6"

DDL = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS offsets (partition INTEGER PRIMARY KEY, next INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    ord INTEGER NOT NULL,
    key TEXT NOT NULL,
    partner_id TEXT NOT NULL,
    revision INTEGER NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    pairs TEXT NOT NULL,
    countries TEXT NOT NULL,
    title TEXT NOT NULL,
    city TEXT,
    organizer TEXT,
    description TEXT,
    tags TEXT,
    doc BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS event_pairs (
    pair TEXT NOT NULL,
    ord INTEGER NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    active INTEGER NOT NULL,
    ck_hi INTEGER NOT NULL,
    ck_lo INTEGER NOT NULL,
    PRIMARY KEY (pair, ord)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS event_countries (
    country TEXT NOT NULL,
    ord INTEGER NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    PRIMARY KEY (country, ord)
) WITHOUT ROWID;
CREATE VIRTUAL TABLE IF NOT EXISTS events_fts USING fts5 (
    title, city, organizer, description, tags,
    content = '',
    tokenize = 'unicode61 remove_diacritics 2'
);
"""

# the events table's indexes, apart so that a bulk load (:mod:`services.api.index.bulk`) can
# build them once over all its rows (a sort) instead of inserting every row into each of them
INDEXES = {
    "events_ord": "CREATE UNIQUE INDEX IF NOT EXISTS events_ord ON events (ord)",
    "events_key": "CREATE UNIQUE INDEX IF NOT EXISTS events_key ON events (key)",
    "events_received": "CREATE INDEX IF NOT EXISTS events_received ON events (received_at, ord)",
    "events_partner": "CREATE INDEX IF NOT EXISTS events_partner ON events (partner_id, ord)",
}
DDL += "".join(f"{ddl};\n" for ddl in INDEXES.values())

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


SEQ_BITS = 40


def day(d: date) -> int:
    return d.toordinal()


def row_id(starts_on: int, seq: int) -> int:
    """The id of an event starting on day ``starts_on`` (ordinal) with sequence number ``seq``."""
    return (starts_on << SEQ_BITS) | seq


def first_id(d: date) -> int:
    """The lowest id of an event starting on ``d``."""
    return d.toordinal() << SEQ_BITS


def micros(t: datetime) -> int:
    delta = t - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        conn.execute("PRAGMA query_only = ON")
    else:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA page_size = 8192")  # a new file's (bulk writes ~7% faster than 4 KiB)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")  # WAL: a crash never corrupts, loses no commit
    conn.execute("PRAGMA busy_timeout = 60000")  # catch-up workers write the same file in turn
    conn.execute("PRAGMA cache_size = -64000")
    conn.execute("PRAGMA temp_store = MEMORY")
    return conn


def remove_files(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")
