"""The aggregator's adapters without a broker: settings, declared topics, crash marker, metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from services.aggregator.main import (
    LAYOUT,
    LAYOUT_FILE,
    UNCLEAN_MARKER,
    mark_clean,
    prepare_data_dir,
    topic_specs,
)
from services.aggregator.metrics import Metrics
from services.aggregator.settings import AggregatorSettings


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HANDSHAKE_KAFKA_BOOTSTRAP", "k1:9092,k2:9092")
    monkeypatch.setenv("HANDSHAKE_AGGREGATOR_APP_ID", "agg-x")
    monkeypatch.setenv("HANDSHAKE_AGGREGATOR_WEB_PORT", "9123")
    monkeypatch.setenv("HANDSHAKE_AGGREGATOR_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HANDSHAKE_EVENTS_TOPIC", "my.events")
    settings = AggregatorSettings()
    assert (settings.kafka_bootstrap, settings.app_id, settings.web_port) == (
        "k1:9092,k2:9092",
        "agg-x",
        9123,
    )
    assert settings.data_dir == tmp_path and settings.events_topic == "my.events"
    assert settings.partials_topic == "agg-x-pair-partials"
    assert AggregatorSettings(app_id="other").app_id == "other"


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("APP_ID", "WEB_PORT", "STORE", "DATA_DIR"):
        monkeypatch.delenv(f"HANDSHAKE_AGGREGATOR_{name}", raising=False)
        monkeypatch.delenv(f"HANDSHAKE_{name}", raising=False)
    settings = AggregatorSettings()
    assert (settings.app_id, settings.web_port, settings.store) == (
        "handshake-aggregator",
        8002,
        "rocksdb://",
    )


def test_topic_specs_include_internal_topics() -> None:
    specs = {s.name: s for s in topic_specs(AggregatorSettings(app_id="agg-y"))}
    for name in ("agg-y-state-changelog", "agg-y-pairs-changelog"):
        assert specs[name].partitions == 12
        assert specs[name].config == {"cleanup.policy": "compact"}
    # bundles of partials: never compacted (none supersedes another), purged once taken
    assert specs["agg-y-pair-partials"].partitions == 12
    assert specs["agg-y-pair-partials"].config == {"cleanup.policy": "delete", "retention.ms": "-1"}
    assert len(specs) == 7


def test_unclean_shutdown_keeps_local_tables_of_the_current_layout(tmp_path: Path) -> None:
    settings = AggregatorSettings(data_dir=tmp_path / "w")
    assert prepare_data_dir(settings) is False
    (settings.data_dir / "faust" / "tables").mkdir(parents=True)
    # still marked running: the worker was killed; its local state is a changelog prefix
    assert prepare_data_dir(settings) is False
    assert (settings.data_dir / "faust" / "tables").exists()
    mark_clean(settings.data_dir)
    assert not (settings.data_dir / UNCLEAN_MARKER).exists()
    assert prepare_data_dir(settings) is False
    assert (settings.data_dir / "faust").exists()


def test_unclean_shutdown_wipes_tables_of_an_older_layout(tmp_path: Path) -> None:
    settings = AggregatorSettings(data_dir=tmp_path / "w")
    (settings.data_dir / "faust" / "tables").mkdir(parents=True)
    (settings.data_dir / UNCLEAN_MARKER).write_text("running\n")  # killed, no layout file: old release
    assert prepare_data_dir(settings) is True
    assert not (settings.data_dir / "faust").exists()
    assert (settings.data_dir / LAYOUT_FILE).read_text().strip() == LAYOUT
    # a clean stop of an old release: its tables are consistent and kept
    (settings.data_dir / "faust" / "tables").mkdir(parents=True)
    (settings.data_dir / LAYOUT_FILE).unlink()
    mark_clean(settings.data_dir)
    assert prepare_data_dir(settings) is False
    assert (settings.data_dir / "faust" / "tables").exists()


def test_metrics_render_on_own_registry() -> None:
    metrics = Metrics()
    metrics.events.labels("civic", "applied").inc()
    metrics.dead_letters.labels("invalid_json").inc(2)
    metrics.lag.labels("3").set(7)
    text = generate_latest(metrics.registry).decode()
    assert 'handshake_aggregator_events_total{kind="civic",result="applied"} 1.0' in text
    assert 'handshake_aggregator_dead_letters_total{reason="invalid_json"} 2.0' in text
    assert 'handshake_aggregator_consumer_lag{partition="3"} 7.0' in text
    assert Metrics().registry is not metrics.registry


def test_batches_keep_only_the_current_generation_in_offset_order() -> None:
    from types import SimpleNamespace

    from services.aggregator.delivery import in_generation

    def event(partition: int, offset: int, generation: int) -> SimpleNamespace:
        message = SimpleNamespace(partition=partition, offset=offset, generation_id=generation, acked=False)
        return SimpleNamespace(message=message)

    stale = [event(0, 24, 1), event(0, 25, 1)]  # fetched before the rebalance, still in the buffer
    fresh = [event(0, 20, 2), event(1, 7, 2), event(0, 21, 2), event(0, 20, 2)]
    unacked = _IdentitySet(e.message for e in stale + fresh)
    kept = in_generation([*stale, *fresh], 2, unacked)
    assert [(e.message.partition, e.message.offset) for e in kept] == [(0, 20), (0, 21), (1, 7)]
    assert all(e.message.acked for e in stale) and not any(e.message.acked for e in fresh)
    assert not any(e.message in unacked for e in stale)
    assert in_generation(stale, None, _IdentitySet()) == sorted(stale, key=lambda e: e.message.offset)


class _IdentitySet:
    """The consumer's unacked-message set, for objects compared by identity."""

    def __init__(self, items: Any = ()) -> None:
        self.ids = {id(item): item for item in items}

    def discard(self, item: Any) -> None:
        self.ids.pop(id(item), None)

    def __contains__(self, item: Any) -> bool:
        return id(item) in self.ids


def _at(partition: int, offset: int) -> Any:
    from types import SimpleNamespace

    from faust.types import TP

    tp = TP("events", partition)
    return SimpleNamespace(message=SimpleNamespace(tp=tp, partition=partition, offset=offset))


def test_source_positions_cut_a_batch_at_skipped_offsets_and_seek_back() -> None:
    from services.aggregator.delivery import SourcePositions

    positions = SourcePositions()
    start = {0: 10, 1: 0}
    offsets = lambda evs: [(e.message.partition, e.message.offset) for e in evs]  # noqa: E731
    # partition 0 starts at its committed offset 10; 8 and 9 are replays, 13 follows a hole
    kept, dropped, seeks = positions.admit(
        [_at(0, 8), _at(0, 9), _at(0, 10), _at(0, 11), _at(0, 13), _at(0, 14), _at(1, 0)],
        7,
        lambda tp: start[tp.partition],
    )
    assert offsets(kept) == [(0, 8), (0, 9), (0, 10), (0, 11), (1, 0)]
    assert offsets(dropped) == [(0, 13), (0, 14)]
    assert {tp.partition: o for tp, o in seeks.items()} == {0: 12}
    # records still in flight from before the seek are cut again; the re-delivery goes on from 12
    kept, dropped, seeks = positions.admit([_at(0, 15)], 7, lambda tp: 0)
    assert (offsets(kept), offsets(dropped), len(seeks)) == ([], [(0, 15)], 1)
    kept, dropped, seeks = positions.admit([_at(0, 12), _at(0, 13), _at(1, 1)], 7, lambda tp: 0)
    assert (offsets(kept), dropped, seeks) == ([(0, 12), (0, 13), (1, 1)], [], {})
    # a hole in the log itself (retention, compaction): the same record comes first after the seek
    kept, dropped, seeks = positions.admit([_at(1, 5)], 7, lambda tp: 0)
    assert (kept, {tp.partition: o for tp, o in seeks.items()}) == ([], {1: 2})
    kept, dropped, seeks = positions.admit([_at(1, 5), _at(1, 6)], 7, lambda tp: 0)
    assert (offsets(kept), dropped, seeks) == ([(1, 5), (1, 6)], [], {})
    # a new generation starts again from the committed offsets
    kept, dropped, seeks = positions.admit([_at(0, 30)], 8, lambda tp: 30)
    assert (offsets(kept), dropped, seeks) == ([(0, 30)], [], {})
    # after a failed batch (31-32 not processed) the next one is checked from the committed offset
    positions.forget()
    kept, dropped, seeks = positions.admit([_at(0, 33)], 8, lambda tp: 31)
    assert (kept, offsets(dropped), {tp.partition: o for tp, o in seeks.items()}) == ([], [(0, 33)], {0: 31})


def test_known_log_holes_are_read_through_and_survive_a_new_generation() -> None:
    from services.aggregator.delivery import SourcePositions

    positions = SourcePositions()
    offsets = lambda evs: [(e.message.partition, e.message.offset) for e in evs]  # noqa: E731
    events = [_at(0, 10), _at(0, 14), _at(0, 15), _at(0, 20)]
    before = positions.snapshot()
    kept, dropped, seeks = positions.admit(events, 3, lambda tp: 10)
    assert (offsets(kept), {tp.partition: o for tp, o in seeks.items()}) == ([(0, 10)], {0: 11})
    # a probe from 11 found records at 14, 15, 17 and 18 (the rest was compacted away)
    tp = next(iter(seeks))
    positions.restore(before)
    positions.known[tp] = (11, [14, 15, 17, 18])
    assert [positions.first_existing(tp, o) for o in (10, 11, 16, 18, 19)] == [10, 14, 17, 18, 19]
    kept, dropped, seeks = positions.admit(events, 3, lambda tp: 10)
    assert (offsets(kept), offsets(dropped), {tp.partition: o for tp, o in seeks.items()}) == (
        [(0, 10), (0, 14), (0, 15)],
        [(0, 20)],
        {0: 17},  # 17 exists and did not come: skipped, so sought back to (it is covered: no probe)
    )
    assert positions.covers(tp, 17) and not positions.covers(tp, 19)
    # a new generation starting inside a hole goes on at the next record, without a seek
    kept, dropped, seeks = positions.admit([_at(0, 14)], 4, lambda tp: 12)
    assert (offsets(kept), dropped, seeks) == ([(0, 14)], [], {})


def test_unacknowledged_events_are_never_acknowledged_by_faust() -> None:
    from services.aggregator.delivery import unacknowledge

    events = [_at(0, 1), _at(0, 2)]
    for ev in events:
        ev.message.acked = False
    unacked = _IdentitySet(ev.message for ev in events)
    unacknowledge(events[:1], unacked)
    # faust's Consumer.ack only records offsets of messages not yet marked acknowledged
    acked = [ev.message.offset for ev in events if not ev.message.acked]
    assert acked == [2] and events[0].message not in unacked and events[1].message in unacked


def test_post_recovery_seek_covers_partitions_without_a_committed_offset() -> None:
    import asyncio

    from faust.types import TP

    from services.aggregator.delivery import seek_sources_after_recovery

    tps = [TP(t, p) for t, p in [("ev", 0), ("ev", 1), ("ev", 2), ("log", 0)]]
    sought: list[tuple[str, int, int]] = []

    class FakeConsumer:
        def __init__(self) -> None:
            self._committed_offset: dict[Any, int | None] = {}

        async def perform_seek(self) -> None:  # faust: seeks only where committed > 0
            self._committed_offset[tps[0]] = 40

        def assignment(self) -> list[Any]:
            return tps

        async def seek(self, tp: Any, offset: int) -> None:
            sought.append((tp.topic, tp.partition, offset))

    consumer = FakeConsumer()
    seek_sources_after_recovery(consumer, {"ev"})
    seek_sources_after_recovery(consumer, {"ev"})  # installed once
    asyncio.run(consumer.perform_seek())
    assert sought == [("ev", 0, 40), ("ev", 1, 0), ("ev", 2, 0)]


def test_both_tables_open_rocksdb_with_bounded_memory(tmp_path: Path) -> None:
    """faust's defaults give each partition's RocksDB a 2 GiB block cache and 3 x 64 MiB
    memtables; the aggregator's options reach both tables' stores (faust pops keys from the
    options dict it is given, so each table needs its own copy)."""
    from services.aggregator.app import ROCKSDB_OPTIONS, create_app

    app = create_app(AggregatorSettings(data_dir=tmp_path, store="rocksdb://"), Metrics())
    for table in (app.state, app.pairs):
        options = table.data.rocksdb_options
        assert options.use_rocksdict is True, table.name
        assert options.block_cache_size == ROCKSDB_OPTIONS["block_cache_size"] == 16 * 1024 * 1024
        assert options.write_buffer_size == ROCKSDB_OPTIONS["write_buffer_size"]
        assert options.max_write_buffer_number == ROCKSDB_OPTIONS["max_write_buffer_number"]
    assert ROCKSDB_OPTIONS["driver"] == "rocksdict", "the module's dict was mutated by faust"


@pytest.mark.parametrize("store", ["rocksdb://", "memory://"])
def test_a_table_scan_gives_the_keys_of_a_prefix_in_order(tmp_path: Path, store: str) -> None:
    from services.aggregator.app import create_app
    from services.aggregator.store import TableState

    app = create_app(AggregatorSettings(data_dir=tmp_path, store=store), Metrics())
    state = TableState(app, app.state)
    items = [(b"p:CN-US:3", b"1"), (b"d:CN-US:3:1950-01", b"2"), (b"p:AB-CD:3", b"3"), (b"q:x", b"4")]
    state.store_locally(3, items, 7)
    state.store_locally(4, [(b"p:CN-US:4", b"5")], 1)
    want = [(b"p:AB-CD:3", b"3"), (b"p:CN-US:3", b"1")]
    got = state.scan(3, b"p:")
    # the memory store keeps every partition in one map: the caller tells them apart by key
    assert got == want if store == "rocksdb://" else got == [*want, (b"p:CN-US:4", b"5")]


def test_first_batches_are_due_once_per_generation_and_again_after_a_failure() -> None:
    from services.aggregator.delivery import FirstBatches

    first = FirstBatches()
    assert first.due(1, {0, 3}) == [0, 3]
    first.succeeded([0, 3])
    assert first.due(1, {0, 3, 5}) == [5]
    first.forget()  # a batch failed: delivery starts again at the committed offsets
    assert first.due(1, {3}) == [3]
    first.succeeded([0, 3])
    assert first.due(2, {0}) == [0]  # a rebalance
