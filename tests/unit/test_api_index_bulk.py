"""The bulk rebuild without Kafka: staged and merged, the index equals the one applied record by record."""

from __future__ import annotations

import sqlite3
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.api.index import bulk
from services.api.index.schema import SEQ_BITS
from services.api.index.service import EventIndex
from services.api.index.store import IndexStore, Record, pair_figures
from services.api.testing import RecordMaker
from tests.samples import EVENT

CODES = ["FR", "DE", "US", "CN", "SUHH"]
events_st = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", "d", "e"]),
        st.integers(1, 3),
        st.sampled_from(CODES),
        st.lists(st.sampled_from(CODES), min_size=1, max_size=3, unique=True),
        st.sampled_from(["announced", "confirmed", "cancelled"]),
        st.sampled_from(["cultural", "athletic"]),
        st.sampled_from(["ping pong", "Bolshoi ballet", "orchestra tour", "Café Zürich"]),
        st.integers(1950, 2026),
    ),
    max_size=50,
)


def records_of(items: list[Any]) -> list[Record]:
    make = RecordMaker()
    out: list[Record] = []
    for event_id, revision, host, delegations, status, kind, title, year in items:
        event = {
            **EVENT,
            "event_id": event_id,
            "revision": revision,
            "host_country": host,
            "delegations": [{"country": c} for c in delegations if c != host] or [{"country": "JP"}],
            "status": status,
            "kind": kind,
            "title": f"{title} {event_id}",
            "starts_on": f"{year}-05-01",
            "ends_on": f"{year}-05-02",
        }
        out.append(make(event, partition=ord(event_id) % 3))  # an event's records: one partition
    out.append((1, len(out), b"p1/x", b"not json", [("ce_type", b"org.handshake.exchange.v1")]))
    return out


def state(conn: sqlite3.Connection) -> dict[str, Any]:
    """Everything the index holds, with each event's key in place of its sequence number."""
    keys = dict(conn.execute("SELECT ord, key FROM events").fetchall())
    cursor = conn.execute("SELECT * FROM events")
    names = [c[0] for c in cursor.description]
    events = {}
    for row in cursor:
        r = dict(zip(names, row, strict=True))
        events[r["key"]] = {k: v for k, v in r.items() if k not in ("id", "ord")} | {
            "doc": orjson.loads(r["doc"])
        }
    words = ["ping", "bolshoi", "orchestra", "cafe", "zurich", "a", "e"]
    return {
        "events": events,
        "pairs": sorted((p, keys[o], *rest) for p, o, *rest in conn.execute("SELECT * FROM event_pairs")),
        "countries": sorted(
            (c, keys[o], *rest) for c, o, *rest in conn.execute("SELECT * FROM event_countries")
        ),
        "search": {
            w: sorted(
                keys[r]
                for (r,) in conn.execute("SELECT rowid FROM events_fts WHERE events_fts MATCH ?", (w,))
            )
            for w in words
        },
        "figures": sorted(pair_figures(conn)),
        "offsets": dict(conn.execute("SELECT partition, next FROM offsets").fetchall()),
        "counters": dict(conn.execute("SELECT k, v FROM meta WHERE k LIKE 'count_%'").fetchall()),
    }


def bulk_load(path: Path, records: list[Record], batch: int) -> IndexStore:
    """Two workers (partitions 0 and 2, and 1) staging in batches, then the merge, installed."""
    index = EventIndex(path, "events")
    index.open()
    groups = [[0, 2], [1]]
    files = []
    for worker, group in enumerate(groups):
        stager = bulk.Stager(bulk.staging_path(path, worker), worker, len(groups))
        mine = [r for r in records if r[0] in group]
        for i in range(0, len(mine), batch):
            stager.add(mine[i : i + batch])
        stager.finish()
        files.append(bulk.staging_path(path, worker))
    store = index.install(bulk.build(path, "events", files))
    bulk.remove_staging(path)
    return store


@given(events_st, events_st, st.integers(1, 7))
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_a_bulk_rebuild_equals_the_index_applied_record_by_record(
    tmp_path_factory: pytest.TempPathFactory, items: list[Any], later: list[Any], batch: int
) -> None:
    tmp = tmp_path_factory.mktemp("bulk")
    records = records_of(items)
    one_by_one = IndexStore(tmp / "a.sqlite3", "events")
    for i in range(0, len(records), batch):
        one_by_one.apply(records[i : i + batch])
    merged = bulk_load(tmp / "b.sqlite3", records, batch)
    assert state(merged.conn) == state(one_by_one.conn)
    assert not list(tmp.glob("b.sqlite3.bulk-*"))
    # every event's ord still orders by its date
    for ord_, doc in merged.conn.execute("SELECT ord, doc FROM events"):
        assert ord_ >> SEQ_BITS == date.fromisoformat(orjson.loads(doc)["starts_on"]).toordinal()
    # and the merged file goes on as any other: corrections, new events, no id reused
    more = [(p, o + len(records), k, v, h) for p, o, k, v, h in records_of(later)]
    one_by_one.apply(more)
    merged.apply(more)
    assert state(merged.conn) == state(one_by_one.conn)
    assert merged.conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_readers_move_to_the_installed_file(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite3"
    index = EventIndex(path, "events")
    index.open()
    before = index.read_sync(lambda c: c.execute("SELECT count(*) FROM events").fetchone()[0])
    stager = bulk.Stager(bulk.staging_path(path, 0), 0, 1)
    make = RecordMaker()
    stager.add([make(EVENT), make({**EVENT, "event_id": "e-2"})])
    stager.finish()
    store = index.install(bulk.build(path, "events", [bulk.staging_path(path, 0)]))
    bulk.remove_staging(path)
    after = index.read_sync(lambda c: c.execute("SELECT count(*) FROM events").fetchone()[0])
    assert (before, after) == (0, 2)
    assert store.offsets() == {0: 2} and store.rebuilt
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "events.sqlite3",
        "events.sqlite3-shm",
        "events.sqlite3-wal",
    ]
    assert store.conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
