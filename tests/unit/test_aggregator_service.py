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


def test_topic_specs_include_internal_compacted_topics() -> None:
    specs = {s.name: s for s in topic_specs(AggregatorSettings(app_id="agg-y"))}
    for name in ("agg-y-pair-partials", "agg-y-state-changelog", "agg-y-pairs-changelog"):
        assert specs[name].partitions == 12
        assert specs[name].config == {"cleanup.policy": "compact"}
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

    from services.aggregator.app import in_generation

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
