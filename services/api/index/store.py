"""The event index's writer: opening the file (rebuilding what cannot be read) and applying records.

One writer (the index's consumer thread) applies batches of Kafka records; each batch's rows and
the next offset of every partition it read commit in one transaction, so after any crash the
file holds exactly the records before the stored offsets and the consumer resumes from them.
The acceptance rule is the contract's (:func:`schemas.acceptance.judge`), the records are read
with the contract's decoder (:func:`schemas.records.decode_event`); a record the decoder refuses
is skipped and counted (the aggregator dead-letters the same records).

Tables (:mod:`services.api.index.schema`):

- ``events``: one row per event (its accepted state); ``doc`` is the event's API JSON, ready to
  serve; the text columns are what ``events_fts`` (FTS5, contentless, rowid = ``ord``) was
  given, so that a changed event's old terms can be deleted from it;
- ``event_pairs`` / ``event_countries``: one row per pair / country of an event, keyed by
  (pair or country, ord), so in date order (ids order by date, see the schema module), with
  the event's kind and status copied so that those filters need no lookup of the event;
  ``event_pairs`` also holds the event's checksum halves and whether it is active, all that
  :func:`pair_figures` needs to reconcile with the aggregates;
- ``offsets`` (partition -> next offset) and ``meta`` (schema version, topic, counters, the
  next id sequence number).

Speed: new events (all of them while rebuilding) are written with one ``executemany`` per table
per batch, with ids assigned here (the sequence is read and written back in the transaction); an event whose stored row changes is written at once. The
content hash, which only tells a duplicate from a conflict at equal revisions, is computed
only then (for a stored row, from its doc), so it is not stored.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from pydantic import TypeAdapter

from schemas.acceptance import Verdict, is_active, judge
from schemas.events import AcceptedEvent, ExchangeEvent, fields_hash
from schemas.pairs import event_checksum, pair_keys
from schemas.records import RecordError, decode_event, event_key
from services.api.index.schema import DDL, SCHEMA_VERSION, connect, day, micros, remove_files, row_id

log = logging.getLogger(__name__)

Record = tuple[int, int, bytes | None, bytes | None, Any]  # partition, offset, key, value, headers
COUNTERS = ("applied", "duplicate", "stale", "conflict", "skipped")
_PARTNER_FIELDS = tuple(ExchangeEvent.model_fields)
EVENT_COLUMNS = (
    "ord, key, partner_id, revision, kind, status, received_at, pairs, countries,"
    " title, city, organizer, description, tags, doc"
)
_INSERT_EVENT = f"INSERT INTO events ({EVENT_COLUMNS}) VALUES ({','.join('?' * 15)})"
_INSERT_FTS = "INSERT INTO events_fts (rowid, title, city, organizer, description, tags) VALUES (?,?,?,?,?,?)"
_INSERT_PAIR = "INSERT INTO event_pairs VALUES (?,?,?,?,?,?,?)"
_INSERT_COUNTRY = "INSERT INTO event_countries VALUES (?,?,?,?)"


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

    ord: int
    revision: int
    status: str
    kind: str
    pairs: list[str]
    countries: list[str]
    texts: tuple[str | None, ...]
    doc: bytes


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs ~3 µs per event here
class Prepared:
    """An accepted event's row values, computed before the write lock is taken."""

    key: str
    partner_id: str
    revision: int
    kind: str
    status: str
    starts_on: int
    received_at: int
    pairs: list[str]
    countries: list[str]
    texts: tuple[str | None, ...]
    checksum: int
    doc: bytes


_DUMP = TypeAdapter(AcceptedEvent).dump_json


def prepare(event: AcceptedEvent) -> Prepared:
    """Everything the index stores of an event (pure)."""
    key = event_key(event.partner_id, event.event_id)
    codes = event.countries
    pairs = pair_keys(codes)
    tags = "\n".join(event.tags) if event.tags else None
    # the doc: the event's JSON (pydantic's serializer, as the api's models would write it)
    # with its key and pairs added before the closing brace
    doc = b"".join(
        (_DUMP(event)[:-1], b',"key":', orjson.dumps(key), b',"pairs":', orjson.dumps(pairs), b"}")
    )
    return Prepared(
        key=key,
        partner_id=event.partner_id,
        revision=event.revision,
        kind=event.kind.value,
        status=event.status.value,
        starts_on=day(event.starts_on),
        received_at=micros(event.received_at),
        pairs=pairs,
        countries=sorted(codes),  # distinct: the contract forbids a delegation from the host
        texts=(event.title, event.city, event.organizer, event.description, tags),
        checksum=event_checksum(event.partner_id, event.event_id),
        doc=doc,
    )


def doc_hash(doc: bytes) -> str:
    """The contract's content hash of the event in a doc (needed only at equal revisions)."""
    data = orjson.loads(doc)
    return fields_hash({name: data[name] for name in _PARTNER_FIELDS})


def decide(old_revision: int | None, old_doc: Callable[[], bytes], p: Prepared) -> Verdict:
    """The contract's acceptance rule for ``p`` against the stored state of its event (if any).

    The content hashes matter only at equal revisions, so the stored doc is read only then."""
    if old_revision is not None and old_revision == p.revision:
        return judge(old_revision, doc_hash(old_doc()), p.revision, doc_hash(p.doc))
    return judge(old_revision, None, p.revision, "")


def event_row(p: Prepared, ord_: int) -> tuple[Any, ...]:
    """The ``events`` row of an accepted event (columns as in ``EVENT_COLUMNS``)."""
    return (
        ord_, p.key, p.partner_id, p.revision, p.kind, p.status, p.received_at,
        " ".join(p.pairs), " ".join(p.countries), *p.texts, p.doc,
    )  # fmt: skip


def decode_all(records: Iterable[Record]) -> tuple[list[Prepared], dict[int, int], int]:
    """Decode and prepare records: (prepared events, next offset per partition, skipped count)."""
    nexts: dict[int, int] = {}
    prepared: list[Prepared] = []
    skipped = 0
    for partition, offset, key, value, headers in records:
        nexts[partition] = max(nexts.get(partition, 0), offset + 1)
        try:
            prepared.append(prepare(decode_event(key, value, headers)))
        except RecordError as exc:
            skipped += 1
            log.warning(
                "skipping a record the contract cannot read",
                extra={"partition": partition, "offset": offset, "reason": exc.reason},
            )
    return prepared, nexts, skipped


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
        for name in (*(f"count_{c}" for c in COUNTERS), "next_seq"):
            conn.execute("INSERT OR IGNORE INTO meta VALUES (?, '0')", (name,))

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

    def is_empty(self) -> bool:
        return self.conn.execute("SELECT 1 FROM events LIMIT 1").fetchone() is None

    def counters(self) -> dict[str, int]:
        rows = self.conn.execute("SELECT k, v FROM meta WHERE k LIKE 'count_%'").fetchall()
        return {k.removeprefix("count_"): int(v) for k, v in rows}

    def _load(self, keys: list[str]) -> dict[str, Stored]:
        out: dict[str, Stored] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            rows = self.conn.execute(
                "SELECT key, ord, revision, status, kind, pairs, countries,"
                f" title, city, organizer, description, tags, doc FROM events WHERE key IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            for r in rows:
                out[r[0]] = Stored(r[1], r[2], r[3], r[4], r[5].split(), r[6].split(), tuple(r[7:12]), r[12])
        return out

    # --- writing ------------------------------------------------------------------------

    def apply(self, records: Iterable[Record], changes: bool = True) -> tuple[list[Change], dict[str, int]]:
        """Apply records in log order and store the next offsets, in one transaction.

        Decoding and preparing happen before the write lock is taken (other writers, the
        catch-up workers, go on meanwhile). Returns the changes (for the live stream; none when
        ``changes`` is false) and this batch's count per verdict.
        """
        prepared, nexts, skipped = decode_all(records)
        counts = dict.fromkeys(COUNTERS, 0)
        counts["skipped"] = skipped
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            batch = _Batch(self, [p.key for p in prepared], changes)
            for p in prepared:
                counts[batch.apply(p).value] += 1
            batch.flush()
            conn.execute("UPDATE meta SET v = ? WHERE k = 'next_seq'", (str(batch.next_seq),))
            conn.executemany(
                "INSERT INTO offsets VALUES (?, ?) ON CONFLICT (partition) DO UPDATE SET next = max(next, excluded.next)",
                sorted(nexts.items()),
            )
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

    def __init__(self, store: IndexStore, keys: list[str], changes: bool) -> None:
        self.conn = store.conn
        self.stored = store._load(sorted(set(keys)))
        self.next_seq = int(self.conn.execute("SELECT v FROM meta WHERE k = 'next_seq'").fetchone()[0])
        self.pending: set[str] = set()  # keys of buffered (not yet written) rows
        self.rows: list[tuple[Any, ...]] = []
        self.fts: list[tuple[Any, ...]] = []
        self.pair_rows: list[tuple[Any, ...]] = []
        self.country_rows: list[tuple[Any, ...]] = []
        self.want_changes = changes
        self.changes: list[Change] = []

    def apply(self, p: Prepared) -> Verdict:
        old = self.stored.get(p.key)
        verdict = decide(None if old is None else old.revision, lambda: old.doc if old else b"", p)
        if verdict is not Verdict.applied:
            return verdict
        active = int(is_active(p.status))
        if old is not None:
            if p.key in self.pending:
                self.flush()
            self._remove(old)
        rowid = row_id(p.starts_on, self.next_seq)
        self.next_seq += 1
        self.rows.append(event_row(p, rowid))
        self.fts.append((rowid, *p.texts))
        hi, lo = p.checksum >> 32, p.checksum & 0xFFFFFFFF
        kind, status = p.kind, p.status
        self.pair_rows.extend((pair, rowid, kind, status, active, hi, lo) for pair in p.pairs)
        self.country_rows.extend((c, rowid, kind, status) for c in p.countries)
        self.pending.add(p.key)
        self.stored[p.key] = Stored(rowid, p.revision, p.status, p.kind, p.pairs, p.countries, p.texts, p.doc)
        if self.want_changes:
            self.changes.append(self._change(p, old))
        return verdict

    @staticmethod
    def _change(p: Prepared, old: Stored | None) -> Change:
        if old is None:
            change = "new" if is_active(p.status) else "cancelled"
            return Change(
                change, p.key, frozenset((p.kind,)), frozenset(p.countries), frozenset(p.pairs), p.doc
            )
        change = "cancelled" if is_active(old.status) and not is_active(p.status) else "corrected"
        return Change(
            change,
            p.key,
            frozenset((p.kind, old.kind)),
            frozenset(p.countries) | frozenset(old.countries),
            frozenset(p.pairs) | frozenset(old.pairs),
            p.doc,
        )

    def _remove(self, old: Stored) -> None:
        """Delete a written row and its dependents (the new state is then inserted again)."""
        conn = self.conn
        conn.execute(  # a contentless FTS5 table forgets a row given the values it was given
            "INSERT INTO events_fts (events_fts, rowid, title, city, organizer, description, tags)"
            " VALUES ('delete', ?, ?, ?, ?, ?, ?)",
            (old.ord, *old.texts),
        )
        conn.execute("DELETE FROM events WHERE ord = ?", (old.ord,))
        conn.executemany(
            "DELETE FROM event_pairs WHERE pair = ? AND ord = ?", [(p, old.ord) for p in old.pairs]
        )
        conn.executemany(
            "DELETE FROM event_countries WHERE country = ? AND ord = ?", [(c, old.ord) for c in old.countries]
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
