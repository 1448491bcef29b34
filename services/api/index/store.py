"""The event index's SQLite file: schema, opening (rebuilding what cannot be read) and the writer.

One writer (the index's consumer thread) applies batches of Kafka records; each batch's rows and
the next offset of every partition it read commit in one transaction, so after any crash the
file holds exactly the records before the stored offsets and the consumer resumes from them.
The acceptance rule is the contract's (:func:`schemas.acceptance.judge`), the records are read
with the contract's decoder (:func:`schemas.records.decode_event`); a record the decoder refuses
is skipped and counted (the aggregator dead-letters the same records).

Tables:

- ``events``: one row per event (its accepted state); ``doc`` is the event's API JSON, ready to
  serve; the text columns feed ``events_fts`` (FTS5, external content, kept in step here);
- ``event_pairs`` / ``event_countries``: one row per pair / country of an event, with the sort
  columns copied so that a pair's or a country's events are read in order from an index;
  ``event_pairs`` also holds the event's checksum halves and whether it is active, which is all
  :func:`pair_figures` needs to reconcile against the aggregates;
- ``offsets`` (partition -> next offset) and ``meta`` (schema version, topic, counters).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from schemas.acceptance import Verdict, is_active, judge
from schemas.events import AcceptedEvent, content_hash
from schemas.pairs import contributions, event_checksum
from schemas.records import RecordError, decode_event, event_key

log = logging.getLogger(__name__)

SCHEMA_VERSION = "1"
Record = tuple[int, int, bytes | None, bytes | None, Any]  # partition, offset, key, value, headers

DDL = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS offsets (partition INTEGER PRIMARY KEY, next INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    partner_id TEXT NOT NULL,
    revision INTEGER NOT NULL,
    hash TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    starts_on TEXT NOT NULL,
    received_at TEXT NOT NULL,
    title TEXT NOT NULL,
    city TEXT,
    organizer TEXT,
    description TEXT,
    tags TEXT,
    doc BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_starts ON events (starts_on, id);
CREATE INDEX IF NOT EXISTS events_received ON events (received_at, id);
CREATE INDEX IF NOT EXISTS events_partner_starts ON events (partner_id, starts_on, id);
CREATE INDEX IF NOT EXISTS events_partner_received ON events (partner_id, received_at, id);
CREATE TABLE IF NOT EXISTS event_pairs (
    pair TEXT NOT NULL,
    id INTEGER NOT NULL,
    starts_on TEXT NOT NULL,
    received_at TEXT NOT NULL,
    active INTEGER NOT NULL,
    ck_hi INTEGER NOT NULL,
    ck_lo INTEGER NOT NULL,
    PRIMARY KEY (pair, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS event_pairs_id ON event_pairs (id);
CREATE INDEX IF NOT EXISTS event_pairs_starts ON event_pairs (pair, starts_on, id);
CREATE INDEX IF NOT EXISTS event_pairs_received ON event_pairs (pair, received_at, id);
CREATE TABLE IF NOT EXISTS event_countries (
    country TEXT NOT NULL,
    id INTEGER NOT NULL,
    starts_on TEXT NOT NULL,
    received_at TEXT NOT NULL,
    PRIMARY KEY (country, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS event_countries_id ON event_countries (id);
CREATE INDEX IF NOT EXISTS event_countries_starts ON event_countries (country, starts_on, id);
CREATE INDEX IF NOT EXISTS event_countries_received ON event_countries (country, received_at, id);
CREATE VIRTUAL TABLE IF NOT EXISTS events_fts USING fts5 (
    title, city, organizer, description, tags,
    content = 'events', content_rowid = 'id',
    tokenize = 'unicode61 remove_diacritics 2'
);
"""
TEXT_COLUMNS = ("title", "city", "organizer", "description", "tags")
COUNTERS = ("applied", "duplicate", "stale", "conflict", "skipped")


def received_text(event: AcceptedEvent) -> str:
    """``received_at`` at fixed width (microseconds always), so text order is time order."""
    return event.received_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class Change:
    """An accepted change of an event, as the live event stream publishes it."""

    change: str  # new | corrected | cancelled
    key: str
    kinds: frozenset[str]  # its kind, and the one it had before a correction
    countries: frozenset[str]  # its countries, and those it had before
    pairs: frozenset[str]  # its pairs, and those it had before
    doc: bytes


def item_doc(event: AcceptedEvent, key: str, pairs: list[str]) -> bytes:
    """The event's API JSON (``EventItem``): the accepted event with its key and pair keys."""
    data = event.model_dump(mode="json")
    data["key"] = key
    data["pairs"] = pairs
    return orjson.dumps(data)


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        conn.execute("PRAGMA query_only = ON")
    else:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")  # WAL: a crash never corrupts, loses no commit
    conn.execute("PRAGMA cache_size = -32000")
    conn.execute("PRAGMA temp_store = MEMORY")
    return conn


def remove_files(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")


class IndexStore:
    """The writer side of the index file (one per process; used by one thread at a time)."""

    def __init__(self, path: Path, topic: str) -> None:
        self.path = path
        self.topic = topic
        self.rebuilt = False  # True when the file had to be (re)created from nothing
        self.conn = self._open()

    # --- opening ----------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        existed = self.path.exists()
        try:
            conn = connect(self.path)
            reason = self._incompatible(conn) if existed else None
            if reason is None:
                conn.executescript(DDL)
                self._init_meta(conn)
                self.rebuilt = not existed
                return conn
            conn.close()
        except sqlite3.DatabaseError as exc:
            reason = f"unreadable: {exc}"
        log.warning(
            "rebuilding the event index from the topic", extra={"path": str(self.path), "reason": reason}
        )
        remove_files(self.path)
        conn = connect(self.path)
        conn.executescript(DDL)
        self._init_meta(conn)
        self.rebuilt = True
        return conn

    def _incompatible(self, conn: sqlite3.Connection) -> str | None:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "meta" not in tables:
            return "no meta table" if tables else None
        meta = dict(conn.execute("SELECT k, v FROM meta").fetchall())
        if meta.get("schema_version") != SCHEMA_VERSION:
            return f"schema version {meta.get('schema_version')!r}, this code writes {SCHEMA_VERSION!r}"
        if meta.get("topic") != self.topic:
            return f"built from topic {meta.get('topic')!r}, not {self.topic!r}"
        conn.execute("SELECT count(*) FROM offsets").fetchone()  # raises on a damaged file
        return None

    def _init_meta(self, conn: sqlite3.Connection) -> None:
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('topic', ?)", (self.topic,))
        for name in COUNTERS:
            conn.execute("INSERT OR IGNORE INTO meta VALUES (?, '0')", (f"count_{name}",))

    def reset(self) -> None:
        """Delete the file and start an empty one (the topic was recreated, or the file broke)."""
        self.conn.close()
        remove_files(self.path)
        self.conn = connect(self.path)
        self.conn.executescript(DDL)
        self._init_meta(self.conn)
        self.rebuilt = True

    def close(self) -> None:
        self.conn.close()

    # --- reading the writer's own state -------------------------------------------------

    def offsets(self) -> dict[int, int]:
        return dict(self.conn.execute("SELECT partition, next FROM offsets").fetchall())

    def counters(self) -> dict[str, int]:
        rows = self.conn.execute("SELECT k, v FROM meta WHERE k LIKE 'count_%'").fetchall()
        return {k.removeprefix("count_"): int(v) for k, v in rows}

    # --- writing ------------------------------------------------------------------------

    def apply(self, records: Iterable[Record]) -> tuple[list[Change], dict[str, int]]:
        """Apply records in log order and store the next offsets, in one transaction.

        Returns the changes (for the live stream) and this batch's count per verdict.
        """
        counts = dict.fromkeys(COUNTERS, 0)
        changes: list[Change] = []
        nexts: dict[int, int] = {}
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for partition, offset, key, value, headers in records:
                nexts[partition] = max(nexts.get(partition, 0), offset + 1)
                try:
                    event = decode_event(key, value, headers)
                except RecordError as exc:
                    counts["skipped"] += 1
                    log.warning(
                        "skipping a record the contract cannot read",
                        extra={"partition": partition, "offset": offset, "reason": exc.reason},
                    )
                    continue
                verdict, change = self._apply_event(event)
                counts[verdict.value] += 1
                if change is not None:
                    changes.append(change)
            conn.executemany("INSERT OR REPLACE INTO offsets VALUES (?, ?)", sorted(nexts.items()))
            conn.executemany(
                "UPDATE meta SET v = CAST(v AS INTEGER) + ? WHERE k = ?",
                [(n, f"count_{name}") for name, n in counts.items() if n],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return changes, counts

    def _apply_event(self, event: AcceptedEvent) -> tuple[Verdict, Change | None]:
        conn = self.conn
        key = event_key(event.partner_id, event.event_id)
        chash = content_hash(event)
        old = conn.execute(
            "SELECT id, revision, hash, status, title, city, organizer, description, tags, kind"
            " FROM events WHERE key = ?",
            (key,),
        ).fetchone()
        verdict = judge(old[1] if old else None, old[2] if old else None, event.revision, chash)
        if verdict is not Verdict.applied:
            return verdict, None
        pairs = [c.pair for c in contributions(event)]
        doc = item_doc(event, key, pairs)
        received = received_text(event)
        starts = event.starts_on.isoformat()
        texts = (
            event.title,
            event.city,
            event.organizer,
            event.description,
            "\n".join(event.tags) if event.tags else None,
        )
        row = (
            key,
            event.partner_id,
            event.revision,
            chash,
            event.kind.value,
            event.status.value,
            starts,
            received,
        )
        before: set[str] = set()
        was_in: set[str] = set()
        kinds = {event.kind.value}
        if old is None:
            cur = conn.execute(
                "INSERT INTO events (key, partner_id, revision, hash, kind, status, starts_on, received_at,"
                " title, city, organizer, description, tags, doc) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (*row, *texts, doc),
            )
            rowid = cur.lastrowid
            assert rowid is not None
            change = "cancelled" if not is_active(event.status.value) else "new"
        else:
            rowid = old[0]
            conn.execute(
                "INSERT INTO events_fts (events_fts, rowid, title, city, organizer, description, tags)"
                " VALUES ('delete', ?, ?, ?, ?, ?, ?)",
                (rowid, *old[4:9]),
            )
            conn.execute(
                "UPDATE events SET key=?, partner_id=?, revision=?, hash=?, kind=?, status=?, starts_on=?,"
                " received_at=?, title=?, city=?, organizer=?, description=?, tags=?, doc=? WHERE id=?",
                (*row, *texts, doc, rowid),
            )
            before = {
                r[0] for r in conn.execute("DELETE FROM event_pairs WHERE id = ? RETURNING pair", (rowid,))
            }
            was_in = {
                r[0]
                for r in conn.execute("DELETE FROM event_countries WHERE id = ? RETURNING country", (rowid,))
            }
            kinds.add(old[9])
            was_active = is_active(old[3])
            change = "cancelled" if was_active and not is_active(event.status.value) else "corrected"
        conn.execute(
            "INSERT INTO events_fts (rowid, title, city, organizer, description, tags) VALUES (?,?,?,?,?,?)",
            (rowid, *texts),
        )
        checksum = event_checksum(event.partner_id, event.event_id)
        active = int(is_active(event.status.value))
        conn.executemany(
            "INSERT INTO event_pairs VALUES (?,?,?,?,?,?,?)",
            [(p, rowid, starts, received, active, checksum >> 32, checksum & 0xFFFFFFFF) for p in pairs],
        )
        countries = set(event.countries)
        conn.executemany(
            "INSERT INTO event_countries VALUES (?,?,?,?)",
            [(c, rowid, starts, received) for c in sorted(countries)],
        )
        return verdict, Change(
            change=change,
            key=key,
            kinds=frozenset(kinds),
            countries=frozenset(countries | was_in),
            pairs=frozenset(set(pairs) | before),
            doc=doc,
        )


def pair_figures(conn: sqlite3.Connection) -> Iterator[tuple[str, int, int]]:
    """(pair, active events, checksum) of every pair with an active event, recomputed from rows."""
    rows = conn.execute(
        "SELECT pair, count(*), sum(ck_hi), sum(ck_lo) FROM event_pairs WHERE active = 1 GROUP BY pair"
    )
    for pair, count, hi, lo in rows:
        yield pair, count, ((hi << 32) + lo) % 2**64
