"""The event index's writer: opening the file (rebuilding what cannot be read) and applying records.

One writer (the index's consumer thread) applies batches of Kafka records; each batch's rows and
the next offset of every partition it read commit in one transaction, so after any crash the
file holds exactly the records before the stored offsets and the consumer resumes from them.
The acceptance rule is the contract's (:func:`schemas.acceptance.judge`), the records are read
with the contract's decoder (:func:`schemas.records.decode_event`); a record the decoder refuses
is skipped and counted (the aggregator dead-letters the same records).

Tables (:mod:`services.api.index.schema`):

- ``events``: one row per event (its accepted state); ``doc`` is the event's API JSON, ready to
  serve; the text columns feed ``events_fts`` (FTS5, external content, kept in step here);
- ``event_pairs`` / ``event_countries``: one row per pair / country of an event, keyed by
  (pair or country, starts_on, id) so that a pair's or a country's events are read in date
  order from their primary key; ``event_pairs`` also holds the event's checksum halves and
  whether it is active, all that :func:`pair_figures` needs to reconcile with the aggregates;
- ``offsets`` (partition -> next offset) and ``meta`` (schema version, topic, counters).

Speed: new events (all of them while rebuilding) are written with one ``executemany`` per table
per batch, with ids assigned here; an event whose stored row changes is written at once. The
content hash, which only tells a duplicate from a conflict at equal revisions, is computed
only then (for a stored row, from its doc), so it is not stored.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from schemas.acceptance import Verdict, is_active, judge
from schemas.events import AcceptedEvent, ExchangeEvent, content_hash, fields_hash
from schemas.pairs import event_checksum, pair_keys
from schemas.records import RecordError, decode_event, event_key
from services.api.index.schema import DDL, SCHEMA_VERSION, connect, day, micros, remove_files

log = logging.getLogger(__name__)

Record = tuple[int, int, bytes | None, bytes | None, Any]  # partition, offset, key, value, headers
COUNTERS = ("applied", "duplicate", "stale", "conflict", "skipped")
_PARTNER_FIELDS = tuple(ExchangeEvent.model_fields)
_EVENT_COLUMNS = (
    "id, key, partner_id, revision, kind, status, starts_on, received_at, pairs, countries,"
    " title, city, organizer, description, tags, doc"
)
_INSERT_EVENT = f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES ({','.join('?' * 16)})"
_INSERT_FTS = "INSERT INTO events_fts (rowid, title, city, organizer, description, tags) VALUES (?,?,?,?,?,?)"
_INSERT_PAIR = "INSERT INTO event_pairs VALUES (?,?,?,?,?,?)"
_INSERT_COUNTRY = "INSERT INTO event_countries VALUES (?,?,?)"


@dataclass(frozen=True, slots=True)
class Change:
    """An accepted change of an event, as the live event stream publishes it."""

    change: str  # new | corrected | cancelled
    key: str
    kinds: frozenset[str]  # its kind, and the one it had before a correction
    countries: frozenset[str]  # its countries, and those it had before
    pairs: frozenset[str]  # its pairs, and those it had before
    doc: bytes


@dataclass(slots=True)
class Stored:
    """What the writer needs of a stored row (from the file, or written earlier in this batch)."""

    id: int
    revision: int
    status: str
    kind: str
    starts_on: int
    pairs: list[str]
    countries: list[str]
    texts: tuple[str | None, ...]
    doc: bytes


def stored_hash(row: Stored) -> str:
    """The content hash of a stored row, from its doc (needed only at equal revisions)."""
    data = orjson.loads(row.doc)
    return fields_hash({name: data[name] for name in _PARTNER_FIELDS})


def _texts(event: AcceptedEvent) -> tuple[str | None, ...]:
    tags = "\n".join(event.tags) if event.tags else None
    return (event.title, event.city, event.organizer, event.description, tags)


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

    def _load(self, keys: list[str]) -> dict[str, Stored]:
        out: dict[str, Stored] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            rows = self.conn.execute(
                "SELECT key, id, revision, status, kind, starts_on, pairs, countries,"
                f" title, city, organizer, description, tags, doc FROM events WHERE key IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            for r in rows:
                out[r[0]] = Stored(
                    r[1], r[2], r[3], r[4], r[5], r[6].split(), r[7].split(), tuple(r[8:13]), r[13]
                )
        return out

    # --- writing ------------------------------------------------------------------------

    def apply(self, records: Iterable[Record]) -> tuple[list[Change], dict[str, int]]:
        """Apply records in log order and store the next offsets, in one transaction.

        Returns the changes (for the live stream) and this batch's count per verdict.
        """
        counts = dict.fromkeys(COUNTERS, 0)
        nexts: dict[int, int] = {}
        events: list[AcceptedEvent] = []
        for partition, offset, key, value, headers in records:
            nexts[partition] = max(nexts.get(partition, 0), offset + 1)
            try:
                events.append(decode_event(key, value, headers))
            except RecordError as exc:
                counts["skipped"] += 1
                log.warning(
                    "skipping a record the contract cannot read",
                    extra={"partition": partition, "offset": offset, "reason": exc.reason},
                )
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            batch = _Batch(self, [event_key(e.partner_id, e.event_id) for e in events])
            for event in events:
                counts[batch.apply(event).value] += 1
            batch.flush()
            conn.executemany("INSERT OR REPLACE INTO offsets VALUES (?, ?)", sorted(nexts.items()))
            conn.executemany(
                "UPDATE meta SET v = CAST(v AS INTEGER) + ? WHERE k = ?",
                [(n, f"count_{name}") for name, n in counts.items() if n],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return batch.changes, counts


class _Batch:
    """One transaction's writes: new rows buffered for executemany, changed rows written at once."""

    def __init__(self, store: IndexStore, keys: list[str]) -> None:
        self.conn = store.conn
        self.stored = store._load(sorted(set(keys)))
        self.next_id = (self.conn.execute("SELECT max(id) FROM events").fetchone()[0] or 0) + 1
        self.pending: set[str] = set()  # keys of buffered (not yet written) rows
        self.rows: list[tuple[Any, ...]] = []
        self.fts: list[tuple[Any, ...]] = []
        self.pair_rows: list[tuple[Any, ...]] = []
        self.country_rows: list[tuple[Any, ...]] = []
        self.changes: list[Change] = []

    def apply(self, event: AcceptedEvent) -> Verdict:
        key = event_key(event.partner_id, event.event_id)
        old = self.stored.get(key)
        if old is not None and old.revision == event.revision:
            verdict = judge(old.revision, stored_hash(old), event.revision, content_hash(event))
        else:
            verdict = judge(None if old is None else old.revision, None, event.revision, "")
        if verdict is not Verdict.applied:
            return verdict
        codes = event.countries
        pairs = pair_keys(codes)
        countries = sorted(codes)  # distinct: the contract forbids a delegation from the host
        data = event.model_dump(mode="json")
        data["key"] = key
        data["pairs"] = pairs
        doc = orjson.dumps(data)
        starts, status, texts = day(event.starts_on), event.status.value, _texts(event)
        active = int(is_active(status))
        if old is None:
            rowid = self.next_id
            self.next_id += 1
            change = "new" if active else "cancelled"
            before_pairs: list[str] = []
            before_countries: list[str] = []
            kinds = frozenset((event.kind.value,))
        else:
            rowid = old.id
            if key in self.pending:
                self.flush()
            self._remove(old)
            change = "cancelled" if is_active(old.status) and not active else "corrected"
            before_pairs, before_countries = old.pairs, old.countries
            kinds = frozenset((event.kind.value, old.kind))
        row = (
            rowid, key, event.partner_id, event.revision, event.kind.value, status, starts,
            micros(event.received_at), " ".join(pairs), " ".join(countries), *texts, doc,
        )  # fmt: skip
        checksum = event_checksum(event.partner_id, event.event_id)
        self.rows.append(row)
        self.fts.append((rowid, *texts))
        self.pair_rows.extend(
            (p, starts, rowid, active, checksum >> 32, checksum & 0xFFFFFFFF) for p in pairs
        )
        self.country_rows.extend((c, starts, rowid) for c in countries)
        self.pending.add(key)
        self.stored[key] = Stored(
            rowid, event.revision, status, event.kind.value, starts, pairs, countries, texts, doc
        )
        self.changes.append(
            Change(
                change=change,
                key=key,
                kinds=kinds,
                countries=frozenset(countries) | frozenset(before_countries),
                pairs=frozenset(pairs) | frozenset(before_pairs),
                doc=doc,
            )
        )
        return verdict

    def _remove(self, old: Stored) -> None:
        """Delete a written row and its dependents (the new state is then inserted again)."""
        conn = self.conn
        conn.execute(
            "INSERT INTO events_fts (events_fts, rowid, title, city, organizer, description, tags)"
            " VALUES ('delete', ?, ?, ?, ?, ?, ?)",
            (old.id, *old.texts),
        )
        conn.execute("DELETE FROM events WHERE id = ?", (old.id,))
        conn.executemany(
            "DELETE FROM event_pairs WHERE pair = ? AND starts_on = ? AND id = ?",
            [(p, old.starts_on, old.id) for p in old.pairs],
        )
        conn.executemany(
            "DELETE FROM event_countries WHERE country = ? AND starts_on = ? AND id = ?",
            [(c, old.starts_on, old.id) for c in old.countries],
        )

    def flush(self) -> None:
        conn = self.conn
        if self.rows:
            conn.executemany(_INSERT_EVENT, self.rows)
            conn.executemany(_INSERT_FTS, self.fts)
            conn.executemany(_INSERT_PAIR, self.pair_rows)
            conn.executemany(_INSERT_COUNTRY, self.country_rows)
        self.rows, self.fts, self.pair_rows, self.country_rows = [], [], [], []
        self.pending.clear()


def pair_figures(conn: sqlite3.Connection) -> Iterator[tuple[str, int, int]]:
    """(pair, active events, checksum) of every pair with an active event, recomputed from rows."""
    rows = conn.execute(
        "SELECT pair, count(*), sum(ck_hi), sum(ck_lo) FROM event_pairs WHERE active = 1 GROUP BY pair"
    )
    for pair, count, hi, lo in rows:
        yield pair, count, ((hi << 32) + lo) % 2**64
