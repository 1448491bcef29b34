"""The event index without Kafka: acceptance, rows against ground truth, queries, cursors, export."""

from __future__ import annotations

import csv
import io
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.acceptance import latest_revisions
from schemas.records import decode_event
from services.aggregator.merge import recompute_partials
from services.api.index import query as iq
from services.api.index.export import csv_header, csv_rows
from services.api.index.store import IndexStore, pair_figures
from services.api.testing import RecordMaker
from tests.samples import EVENT

T0 = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> IndexStore:
    return IndexStore(tmp_path / "events.sqlite3", "events")


def docs(store: IndexStore, **filters: object) -> list[dict[str, object]]:
    q = iq.EventQuery(**filters)  # type: ignore[arg-type]
    return [orjson.loads(d) for d in iq.page(store.conn, q).docs]


def test_acceptance_rule_revisions_duplicates_conflicts_cancellations(store: IndexStore) -> None:
    make = RecordMaker()
    changes, counts = store.apply(
        [
            make(EVENT),
            make(EVENT),  # duplicate
            make({**EVENT, "title": "Other"}),  # same revision, other content: conflict
            make({**EVENT, "revision": 3, "title": "Corrected"}),
            make({**EVENT, "revision": 2, "title": "Late"}),  # stale
            (0, 99, b"p1/x", b"not json", [("ce_type", b"org.handshake.exchange.v1")]),
        ]
    )
    assert counts == {"applied": 2, "duplicate": 1, "stale": 1, "conflict": 1, "skipped": 1}
    assert [c.change for c in changes] == ["new", "corrected"]
    (row,) = docs(store)
    assert row["title"] == "Corrected" and row["revision"] == 3 and row["key"] == "p1/e-1"
    assert row["pairs"] == ["DE-FR"]
    assert store.offsets() == {0: 100}
    changes, _ = store.apply([make({**EVENT, "revision": 4, "status": "cancelled"})])
    assert [c.change for c in changes] == ["cancelled"]
    (row,) = docs(store)
    assert row["status"] == "cancelled"  # kept, marked
    assert list(pair_figures(store.conn)) == []  # but not active
    assert store.counters()["skipped"] == 1


def test_a_correction_that_moves_countries_moves_the_event_between_pairs(store: IndexStore) -> None:
    make = RecordMaker()
    store.apply([make(EVENT)])
    changes, _ = store.apply(
        [make({**EVENT, "revision": 2, "host_country": "CN", "delegations": [{"country": "US"}]})]
    )
    assert docs(store, pair="DE-FR") == []
    assert [d["key"] for d in docs(store, pair="CN-US")] == ["p1/e-1"]
    assert docs(store, country="FR") == [] and len(docs(store, country="US")) == 1
    # the change reaches subscribers of the old pair and of the new one
    assert changes[0].pairs == {"DE-FR", "CN-US"} and changes[0].countries == {"DE", "FR", "CN", "US"}


def test_a_rollback_keeps_rows_and_offsets_together(store: IndexStore) -> None:
    make = RecordMaker()
    store.apply([make(EVENT)])
    with pytest.raises(ValueError):  # a broken batch (here: a malformed record tuple) midway
        store.apply([make({**EVENT, "event_id": "e-2"}), (0, 5, None, None, None), "boom"])  # type: ignore[list-item]
    assert store.offsets() == {0: 1} and len(docs(store)) == 1


events_st = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", "d"]),
        st.integers(1, 3),
        st.sampled_from(["FR", "DE", "US", "CN", "SUHH"]),
        st.lists(st.sampled_from(["FR", "DE", "US", "CN", "SUHH"]), min_size=1, max_size=3, unique=True),
        st.sampled_from(["announced", "confirmed", "cancelled"]),
        st.sampled_from(["cultural", "athletic"]),
    ),
    max_size=40,
)


@given(events_st, st.integers(1, 7))
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_rows_and_pair_figures_equal_ground_truth(
    tmp_path_factory: pytest.TempPathFactory, items: list, batch: int
) -> None:
    store = IndexStore(tmp_path_factory.mktemp("ix") / "e.sqlite3", "events")
    make = RecordMaker()
    records = []
    for event_id, revision, host, delegations, status, kind in items:
        dels = [{"country": c} for c in delegations if c != host] or [{"country": "JP"}]
        event = {
            **EVENT,
            "event_id": event_id,
            "revision": revision,
            "host_country": host,
            "delegations": dels,
            "status": status,
            "kind": kind,
            "title": f"{event_id} r{revision} {status}",
        }
        records.append(make(event, partition=ord(event_id) % 2))
    for i in range(0, len(records), batch):
        store.apply(records[i : i + batch])
    truth = latest_revisions(decode_event(k, v, h) for _, _, k, v, h in records)
    rows = {d["key"]: d for d in docs(store, limit=500)}
    assert set(rows) == set(truth)
    for key, event in truth.items():
        assert rows[key]["revision"] == event.revision and rows[key]["title"] == event.title
    expected = {
        p: (t["active_events"], t["checksum"])
        for p, t in recompute_partials(decode_event(k, v, h) for _, _, k, v, h in records).items()
        if t["active_events"]
    }
    assert {p: (n, c) for p, n, c in pair_figures(store.conn)} == expected


@pytest.fixture
def history(store: IndexStore) -> IndexStore:
    make = RecordMaker()
    rows = [
        (
            "pp-1971",
            "US",
            "CN",
            "1971-04-10",
            "athletic",
            "US table tennis team visits China (ping-pong)",
            None,
        ),
        (
            "pp-1972",
            "CN",
            "US",
            "1972-04-12",
            "athletic",
            "Chinese table tennis team tours the United States",
            None,
        ),
        ("phil-1973", "US", "CN", "1973-09-14", "cultural", "Philadelphia Orchestra in Beijing", "Beijing"),
        ("bolshoi-1959", "SUHH", "US", "1959-04-16", "cultural", "Bolshoi Ballet tours the US", "New York"),
        ("moscow-1980", "US", "SUHH", "1980-07-19", "athletic", "Moscow Olympics", "Moskva"),
        ("expo-1959", "US", "SUHH", "1959-07-24", "cultural", "American National Exhibition", "Moscow"),
    ]
    for i, (eid, visitor, host, day, kind, title, city) in enumerate(rows):
        event = {
            **EVENT,
            "event_id": eid,
            "host_country": host,
            "delegations": [{"country": visitor}],
            "starts_on": day,
            "kind": kind,
            "title": title,
            "city": city,
        }
        if eid == "moscow-1980":
            event["status"] = "cancelled"
        store.apply([make(event, "hist" if i % 2 else "demo", received_at=T0 + timedelta(minutes=i))])
    return store


def test_filters(history: IndexStore) -> None:
    keys = lambda **f: [d["event_id"] for d in docs(history, **f)]  # noqa: E731
    assert keys(pair="CN-US") == ["phil-1973", "pp-1972", "pp-1971"]  # newest first by default
    assert keys(pair="CN-US", sort="starts_on") == ["pp-1971", "pp-1972", "phil-1973"]
    assert keys(country="SUHH", status="cancelled") == ["moscow-1980"]
    assert keys(
        kind="cultural",
        date_from=iq.period("1959", end=False, param="from"),
        date_to=iq.period("1959", end=True, param="to"),
    ) == ["expo-1959", "bolshoi-1959"]
    assert keys(
        date_from=iq.period("1959-07", end=False, param="f"),
        date_to=iq.period("1959-07", end=True, param="t"),
    ) == ["expo-1959"]
    assert keys(q=iq.fts_terms("ping-pong")) == ["pp-1971"]
    assert keys(q=iq.fts_terms("table TENN")) == ["pp-1972", "pp-1971"]  # every word, the last a prefix
    assert keys(q=iq.fts_terms("moscow")) == ["moscow-1980", "expo-1959"]  # title or city; diacritics folded
    assert keys(partner="hist", sort="received_at") == ["pp-1972", "bolshoi-1959", "expo-1959"]
    assert keys(pair="CN-US", country="US", q=iq.fts_terms("orchestra")) == ["phil-1973"]
    assert iq.count(history.conn, iq.EventQuery(country="US")) == 6


def test_query_words_cannot_break_the_search() -> None:
    assert iq.fts_terms('NEAR( "x" OR * ^') == '"NEAR(" "x" "OR"*'
    assert iq.fts_terms("  -- ** ") is None


def test_cursor_pages_stay_stable_while_events_arrive(history: IndexStore) -> None:
    first = iq.page(history.conn, iq.EventQuery(limit=2, sort="-received_at"))
    assert first.total == 6 and first.next_cursor
    history.apply([RecordMaker()({**EVENT, "event_id": "new-1"}, "late")])  # arrives between pages
    seen = [orjson.loads(d)["event_id"] for d in first.docs]
    cursor = first.next_cursor
    while cursor:
        after = iq.decode_cursor(cursor, "-received_at")
        p = iq.page(history.conn, iq.EventQuery(limit=2, sort="-received_at", after=after))
        seen += [orjson.loads(d)["event_id"] for d in p.docs]
        cursor = p.next_cursor
    assert len(seen) == len(set(seen)) == 6 and "new-1" not in seen
    with pytest.raises(iq.QueryError, match="query:cursor"):
        iq.decode_cursor(first.next_cursor, "starts_on")
    with pytest.raises(iq.QueryError, match="query:cursor"):
        iq.decode_cursor("bm9wZQ", "starts_on")


def test_periods() -> None:
    assert iq.period("1970", end=False, param="f").isoformat() == "1970-01-01"
    assert iq.period("1979", end=True, param="t").isoformat() == "1979-12-31"
    assert iq.period("2024-02", end=True, param="t").isoformat() == "2024-02-29"
    with pytest.raises(iq.QueryError, match="query:to"):
        iq.period("2023-02-30", end=True, param="query:to")


def test_csv_export_round_trips(history: IndexStore) -> None:
    chunks = list(iq.scan(history.conn, iq.EventQuery(sort="starts_on"), chunk=4))
    assert [len(c) for c in chunks] == [4, 2]
    text = (csv_header() + b"".join(csv_rows(c) for c in chunks)).decode()
    assert "\r\n" in text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["event_id"] for r in rows][:2] == ["bolshoi-1959", "expo-1959"]
    assert rows[0]["delegations"] == "SUHH" and rows[0]["pairs"] == "SUHH-US"


def test_a_damaged_file_is_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite3"
    store = IndexStore(path, "events")
    store.apply([RecordMaker()(EVENT)])
    store.close()
    assert not IndexStore(path, "events").rebuilt  # reopened as it was
    path.write_bytes(b"this is not a database" * 100)
    again = IndexStore(path, "events")
    assert again.rebuilt and again.offsets() == {} and docs(again) == []
    again.close()
    assert IndexStore(path, "other-topic").rebuilt  # built from another topic: not reused


def test_catch_up_workers_share_the_partitions_out() -> None:
    from services.api.index.catchup import split

    assert split(list(range(12)), 2) == [[0, 2, 4, 6, 8, 10], [1, 3, 5, 7, 9, 11]]
    assert split([0, 1], 4) == [[0], [1]]  # never an idle worker


def test_a_reset_index_is_not_ready_and_replays_nothing_live(tmp_path: Path) -> None:
    from services.api.index.service import EventIndex

    index = EventIndex(tmp_path / "events.sqlite3", "events")
    index.mark_caught_up()
    index.apply([RecordMaker()(EVENT)])
    assert index.ready and index.publish_live
    index.reset()  # the file broke: rebuilt from the topic
    assert not index.ready and not index.publish_live
    assert index.apply([RecordMaker()(EVENT)]) == []  # history is not published to stream clients


@given(st.text(max_size=60))
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
def test_any_text_is_a_valid_search(store_conn: sqlite3.Connection, text: str) -> None:
    q = iq.fts_terms(text)
    if q is not None:  # FTS5 accepts it (a NUL once ended the query string early)
        store_conn.execute("SELECT count(*) FROM events_fts WHERE events_fts MATCH ?", (q,)).fetchone()


@pytest.fixture(scope="module")
def store_conn(tmp_path_factory: pytest.TempPathFactory) -> sqlite3.Connection:
    return IndexStore(tmp_path_factory.mktemp("fts") / "e.sqlite3", "events").conn
