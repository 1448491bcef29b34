"""Rebuilding the index from nothing: workers stage rows in files of their own, one pass builds the file.

A rebuild (a new, deleted or damaged file, or a recreated topic) reads the whole topic into an
empty index. Written row by row, each event is an insert into five B-trees at places all over
them (the key and date indexes, the pair and country tables, the full-text index), and the
catch-up workers, writing the same file in turn, keep invalidating each other's page caches.
Here instead:

1. each catch-up worker (:mod:`services.api.index.catchup`) owns a disjoint set of partitions
   and writes a staging file of its own (``<index>.bulk-<n>``, no journal, no index but the
   rowid): one ``staged`` row per accepted event, appended. The acceptance rule is the same as
   the writer's (:func:`services.api.index.store.decide`, the contract's :func:`judge`), against
   an in-memory map key -> (revision, sequence): an event's records all live in one partition,
   so a worker sees all of them. A row that a later record replaces is deleted from the file
   (by rowid) or from the not-yet-written buffer;
2. at its end each worker splits its rows' pair and country lists into pair and country rows
   and sorts them, and its full-text columns by ``ord``, in tables of its own (in parallel);
3. when every worker has finished, :func:`build` writes a new index file from the staging
   files: the events, then the pair and country rows and the full-text index, each read from
   the workers' sorted tables at once (SQLite interleaves sorted inputs without sorting) so
   each is written from left to right; the events table's indexes built by sorting once
   (:data:`~services.api.index.schema.INDEXES`), the next offset of every partition, the
   counters. It is as if the records had been applied one by one, except for each event's
   sequence number (its ``ord`` still orders by date; ids are never exposed as such);
4. the writer replaces the empty index file with it (:meth:`EventIndex.install`): readers
   reopen, and the source goes on from the offsets it holds.

A rebuild interrupted (the api stopped or killed, a worker failed) leaves the index empty and
is started again from the beginning at the next start: a rebuild is all or nothing. Staging
files are deleted before and after.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import Any

from schemas.acceptance import Verdict, is_active
from services.api.index.schema import INDEXES, remove_files, row_id
from services.api.index.store import (
    COUNTERS,
    EVENT_COLUMNS,
    IndexStore,
    Record,
    decide,
    decode_all,
    event_row,
)

log = logging.getLogger(__name__)

STAGED = f"seq INTEGER PRIMARY KEY, {EVENT_COLUMNS}, active INTEGER NOT NULL, ck_hi INTEGER NOT NULL, ck_lo INTEGER NOT NULL"
_STAGED_COLUMNS = f"seq, {EVENT_COLUMNS}, active, ck_hi, ck_lo"
_INSERT = f"INSERT INTO staged ({_STAGED_COLUMNS}) VALUES ({','.join('?' * 19)})"
_DOC = [c.strip() for c in _STAGED_COLUMNS.split(",")].index("doc")  # in a staged row


def staging_path(index: Path, name: int | str) -> Path:
    """A worker's staging file (``name`` its number), or the merged file (``"merged"``)."""
    return index.with_name(f"{index.name}.bulk-{name}")


def remove_staging(index: Path) -> None:
    for path in index.parent.glob(f"{index.name}.bulk-*"):
        remove_files(path)


class Stager:
    """One worker's staging file: accepted events appended, each batch in one transaction.

    Sequence numbers are ``worker``, ``worker + workers``, ... so that the workers' ids never
    collide (each event's ``ord`` is its date and its sequence number)."""

    def __init__(self, path: Path, worker: int, workers: int) -> None:
        remove_files(path)
        # used by one thread at a time (the worker hands batches to a thread, one after another)
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA page_size = 8192")
        self.conn.execute("PRAGMA journal_mode = OFF")  # all or nothing: a failed rebuild starts over
        self.conn.execute("PRAGMA synchronous = OFF")
        self.conn.execute(f"CREATE TABLE staged ({STAGED})")
        self.conn.execute("CREATE TABLE offsets (partition INTEGER PRIMARY KEY, next INTEGER NOT NULL)")
        self.conn.execute("CREATE TABLE counts (name TEXT PRIMARY KEY, n INTEGER NOT NULL)")
        self.seen: dict[str, tuple[int, int]] = {}  # key -> (revision, seq) of its staged row
        self.next_seq = worker
        self.step = workers
        self.buffer: dict[int, tuple[Any, ...]] = {}  # seq -> row, not yet written
        self.nexts: dict[int, int] = {}
        self.counts = dict.fromkeys(COUNTERS, 0)

    def _doc(self, seq: int) -> bytes:
        row = self.buffer.get(seq)
        if row is not None:
            doc: bytes = row[_DOC]
            return doc
        return bytes(self.conn.execute("SELECT doc FROM staged WHERE seq = ?", (seq,)).fetchone()[0])

    def add(self, records: Iterable[Record]) -> None:
        """Decode, judge and stage ``records`` (in log order) in one transaction."""
        prepared, nexts, skipped = decode_all(records)
        self.counts["skipped"] += skipped
        for partition, offset in nexts.items():
            self.nexts[partition] = max(self.nexts.get(partition, 0), offset)
        self.conn.execute("BEGIN")
        for p in prepared:
            old = self.seen.get(p.key)
            # the stored doc is read only when the rule needs it (equal revisions); with nothing
            # stored it is never read
            stored_doc = partial(bytes) if old is None else partial(self._doc, old[1])
            verdict = decide(None if old is None else old[0], stored_doc, p)
            self.counts[verdict.value] += 1
            if verdict is not Verdict.applied:
                continue
            if old is not None and self.buffer.pop(old[1], None) is None:
                self.conn.execute("DELETE FROM staged WHERE seq = ?", (old[1],))
            seq = self.next_seq
            self.next_seq += self.step
            active = int(is_active(p.status))
            self.buffer[seq] = (
                seq,
                *event_row(p, row_id(p.starts_on, seq)),
                active,
                p.checksum >> 32,
                p.checksum & 0xFFFFFFFF,
            )
            self.seen[p.key] = (p.revision, seq)
        self.conn.executemany(_INSERT, self.buffer.values())
        self.buffer.clear()
        self.conn.execute("COMMIT")

    def finish(self) -> None:
        """Sort what the merge reads in order, store the next offsets and the counters.

        The pair and country rows (split from the staged rows' lists) and the full-text
        columns are written sorted into tables of their own here, in every worker at once, so
        that the merge reads each worker's rows in order and only interleaves them."""
        conn = self.conn
        conn.execute("BEGIN")
        conn.execute(f"CREATE TABLE pairs ({_PAIRS}, PRIMARY KEY (pair, ord)) WITHOUT ROWID")
        conn.execute(
            "INSERT INTO pairs SELECT j.value, s.ord, s.kind, s.status, s.active, s.ck_hi, s.ck_lo"
            f" FROM staged AS s, {_split('pairs')} AS j ORDER BY 1, 2"
        )
        conn.execute(f"CREATE TABLE countries ({_COUNTRIES}, PRIMARY KEY (country, ord)) WITHOUT ROWID")
        conn.execute(
            "INSERT INTO countries SELECT j.value, s.ord, s.kind, s.status"
            f" FROM staged AS s, {_split('countries')} AS j ORDER BY 1, 2"
        )
        conn.execute(f"CREATE TABLE texts (ord INTEGER PRIMARY KEY, {_TEXTS})")
        conn.execute(f"INSERT INTO texts SELECT ord, {_TEXTS} FROM staged ORDER BY ord")
        conn.executemany("INSERT INTO offsets VALUES (?, ?)", sorted(self.nexts.items()))
        conn.executemany(
            "INSERT INTO counts VALUES (?, ?)", [*sorted(self.counts.items()), ("next_seq", self.next_seq)]
        )
        conn.execute("COMMIT")
        conn.close()


_PAIRS = "pair, ord, kind, status, active, ck_hi, ck_lo"
_COUNTRIES = "country, ord, kind, status"
_TEXTS = "title, city, organizer, description, tags"


def _split(column: str) -> str:
    """A table-valued expression of the codes in a space-separated column (pairs, countries)."""
    # the codes are [A-Z]{2,4} or two of them joined by '-' (the contract): no quoting needed
    return f"""json_each('["' || replace(s.{column}, ' ', '","') || '"]')"""


def _interleaved(names: list[str], table: str, columns: str, order: str) -> str:
    """The rows of ``table`` of every staging file in ``order``: each file's are sorted by it
    (its primary key), so SQLite merges them (a compound SELECT's ORDER BY) without sorting."""
    arms = " UNION ALL ".join(f"SELECT {columns} FROM {name}.{table}" for name in names)
    return f"{arms} ORDER BY {order}"


def build(index: Path, topic: str, files: list[Path]) -> Path:
    """Merge the staging ``files`` into a new index file beside ``index``; returns its path.

    The file is private until :meth:`EventIndex.install` moves it into place, so it is written
    without a journal (a WAL would write every page twice) and in one go; a failure leaves a
    file that the next rebuild deletes."""
    target = staging_path(index, "merged")
    remove_files(target)
    IndexStore(target, topic).close()  # the schema and meta of any index file
    conn = sqlite3.connect(target, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("PRAGMA threads = 2")  # the sorts of CREATE INDEX: the workers are done
        _merge(conn, files)
        conn.execute("PRAGMA journal_mode = WAL")  # as every index file
    finally:
        conn.close()
    return target


def _merge(conn: sqlite3.Connection, files: list[Path]) -> None:
    names = [f"bulk{i}" for i in range(len(files))]
    for name, path in zip(names, files, strict=True):
        conn.execute(f"ATTACH DATABASE ? AS {name}", (str(path),))
    conn.execute("BEGIN")
    for name in INDEXES:
        conn.execute(f"DROP INDEX {name}")
    staged = " UNION ALL ".join(f"SELECT {EVENT_COLUMNS} FROM {name}.staged" for name in names)
    conn.execute(f"INSERT INTO events ({EVENT_COLUMNS}) {staged}")
    conn.execute(f"INSERT INTO event_pairs {_interleaved(names, 'pairs', _PAIRS, 'pair, ord')}")
    conn.execute(
        f"INSERT INTO event_countries {_interleaved(names, 'countries', _COUNTRIES, 'country, ord')}"
    )
    # FTS5 writes a run of ascending rowids into one segment; out of order, it flushes
    conn.execute(
        f"INSERT INTO events_fts (rowid, {_TEXTS}) {_interleaved(names, 'texts', f'ord, {_TEXTS}', 'ord')}"
    )
    for ddl in INDEXES.values():
        conn.execute(ddl)
    for name in names:
        conn.execute(f"INSERT INTO offsets SELECT partition, next FROM {name}.offsets")
        conn.execute(
            "UPDATE meta SET v = CAST(v AS INTEGER) + coalesce((SELECT n FROM"
            f" {name}.counts WHERE 'count_' || name = meta.k), 0) WHERE k LIKE 'count_%'"
        )
    next_seq = " UNION ALL ".join(f"SELECT n FROM {name}.counts WHERE name = 'next_seq'" for name in names)
    conn.execute(f"UPDATE meta SET v = (SELECT max(n) FROM ({next_seq})) WHERE k = 'next_seq'")
    conn.execute("COMMIT")
    for name in names:
        conn.execute(f"DETACH DATABASE {name}")
    merged = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    log.info("event index bulk merge done", extra={"events": merged, "files": len(files)})
