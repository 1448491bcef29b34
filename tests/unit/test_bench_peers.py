"""The benchmarks' own logic: the Quix peer computes the aggregator's figures, and the latency
bench matches acknowledgements to snapshots as it says.

The peer's two stages are plain functions of (record, state); here each Quix state is a dict
per key, as Quix scopes state to the message key. On a stream with corrections (other
countries, cancellations) and duplicates, the last snapshot of every pair must equal the
aggregator's ground truth: a peer that computed less would make the comparison meaningless.
"""

from __future__ import annotations

import random
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas.records import decode_pair_stats, encode_event
from services.aggregator.merge import differences, recompute
from services.aggregator.testing import event_stream

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import bench_latency
import bench_restart
import peer_quix


class DictState:
    """The two methods of Quix's ``State`` the peer uses, on a dict."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_quix_peer_ends_at_the_ground_truth(seed: int, tmp_path: Path) -> None:
    events = list(event_stream(random.Random(seed), 400, correction_rate=0.3))
    stage1 = peer_quix.stage1(tmp_path / "started.json")
    per_event: dict[bytes, DictState] = defaultdict(DictState)
    per_pair: dict[str, DictState] = defaultdict(DictState)
    latest = {}
    for event in events:
        key, value, headers = encode_event(event)
        for delta in stage1(value, key, 0, headers, per_event[key]):
            latest[delta["pair"]] = decode_pair_stats(peer_quix.stage2(delta, per_pair[delta["pair"]]))
    assert (tmp_path / "started.json").exists()
    assert differences(recompute(events), latest) == {}
    assert any(e.revision > 1 for e in events), "the stream has corrections"


def test_a_duplicate_or_stale_record_emits_nothing(tmp_path: Path) -> None:
    first, *_ = event_stream(random.Random(7), 1)
    stage1 = peer_quix.stage1(tmp_path / "started.json")
    state = DictState()
    key, value, headers = encode_event(first)
    assert stage1(value, key, 0, headers, state)
    assert stage1(value, key, 0, headers, state) == []  # the same revision again


def test_latency_matching_counts_acknowledgements_in_order_and_never_before_them() -> None:
    acks = [("A-B", 1.0), ("A-B", 1.2), ("C-D", 1.1), ("A-B", 5.0)]
    snapshots = [
        (1.05, "A-B", 1),  # counts the first A-B event
        (1.15, "C-D", 1),
        (1.30, "A-B", 3),  # counts three, but the third was acknowledged later, at 5.0
        (5.10, "A-B", 3),  # the first snapshot after the third acknowledgement
    ]
    got = sorted(bench_latency.match(acks, snapshots))
    assert [(at, round(ms)) for at, ms in got] == [(1.0, 50), (1.1, 50), (1.2, 100), (5.0, 100)]


def test_latency_matching_leaves_out_events_never_reflected() -> None:
    got = bench_latency.match([("A-B", 1.0), ("A-B", 2.0)], [(1.5, "A-B", 1)])
    assert [(at, round(ms)) for at, ms in got] == [(1.0, 500)]


def test_restart_bench_rates_interpolate_between_samples() -> None:
    # 100 events/s for 10 s, then 50 events/s: samples every 4 s straddle the change
    progress = [(t, 100.0 * min(t, 10) + 50.0 * max(0, t - 10)) for t in (4.0, 8.0, 12.0, 16.0, 20.0)]
    assert bench_restart.rate_between(progress, 0, 800) == pytest.approx(100.0)
    assert bench_restart.rate_between(progress, 1_100, 1_500) == pytest.approx(50.0)
    with pytest.raises(ValueError):
        bench_restart.rate_between(progress, 0, 5_000)


def test_restart_bench_cpu_per_event_interpolates_by_events_taken() -> None:
    # 100 events/s at 0.01 CPU s per second (100 µs per event), then 50 events/s at the same CPU
    # rate (200 µs per event); the first sample is the worker being ready after 2 s of start-up
    progress = [(2.0, 0.0, 1.5)] + [
        (t, 100.0 * min(t - 2, 10) + 50.0 * max(0, t - 12), 1.5 + 0.01 * (t - 2))
        for t in (6.0, 10.0, 14.0, 18.0)
    ]
    assert bench_restart.cpu_us_between(progress, 0, 800) == pytest.approx(100.0)
    assert bench_restart.cpu_us_between(progress, 1_100, 1_250) == pytest.approx(200.0)
    assert bench_restart.rate_between(progress, 0, 800) == pytest.approx(100.0)  # from ready


def test_restart_bench_counts_stage2_share_per_event() -> None:
    # stage 1 takes 100 events/s throughout; stage 2 takes 50 partials/s, then 150 once it catches up
    progress = [(t, 100.0 * t, 0.01 * t, 50.0 * min(t, 10) + 150.0 * max(0, t - 10)) for t in range(1, 21)]
    assert bench_restart.per_event_between(progress, 0, 1_000, 3) == pytest.approx(0.5)
    assert bench_restart.per_event_between(progress, 1_000, 2_000, 3) == pytest.approx(1.5)


def test_latency_events_are_unique_across_runs() -> None:
    """Ids that restart at each rate made the first run's events duplicates in the second: acknowledged
    but never reflected, they showed up as a two-second "stall" at the start of the 1,000/s run."""
    ids = {
        orjson.loads(bench_latency.body(run, n)[1])["event_id"] for run in ("100", "1000") for n in range(50)
    }
    assert len(ids) == 100
