"""The aggregator's peer in Quix Streams: the same aggregation, on the same broker, in the same run.

    .venv-peer/bin/python bench/peer_quix.py BOOTSTRAP EVENTS_TOPIC OUT_TOPIC STARTED.json

Run by ``bench_aggregator.py`` (in its own venv, ``.venv-peer``: quixstreams pins pydantic
below the platform's version). It reads the events topic from the start and publishes
:class:`~schemas.records.PairStats` snapshots to ``OUT_TOPIC`` until it is stopped (SIGTERM);
the bench times it from the first event in (written to STARTED.json) to the moment every pair's
latest snapshot equals the ground truth.

What it computes is the aggregator's, through the same functions (only the engine differs):

1. per event (the events topic's key), Quix state keeps the accepted revision, content hash and
   contribution; the contract's ``judge`` decides; an applied record emits, for each pair of its
   old and new contribution, a delta carrying both (a correction or cancellation retracts the
   old contribution);
2. ``group_by(pair)`` repartitions the deltas (Quix's repartition topic);
3. per pair, Quix state keeps the running totals (the aggregator's ``empty_partial`` and
   ``add_contribution``: active events, participants, by kind / status / direction / month,
   cancelled, first/last date, checksum), and the day counts of each month in a key of their
   own (:class:`StateDays`, as the aggregator does), and publishes a snapshot
   (``to_pair_stats``) per delta.

Exactly-once (Kafka transactions), RocksDB state with changelog topics, and the aggregator's
commit interval (1 s).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from handshake.runtime import AGGREGATOR_GC_THRESHOLD, tune_gc  # noqa: E402
from schemas.acceptance import Verdict, judge  # noqa: E402
from schemas.events import content_hash  # noqa: E402
from schemas.records import RecordError, decode_event, encode_pair_stats  # noqa: E402
from services.aggregator.domain import (  # noqa: E402
    add_contribution,
    contribution,
    empty_partial,
    pairs_of,
)
from services.aggregator.merge import to_pair_stats  # noqa: E402

COMMIT_INTERVAL = 1.0  # the aggregator's default (AggregatorSettings.commit_interval)


def stage1(started: Path) -> Any:
    """Per event: judge the record against the stored revision; deltas for every pair it touches."""
    first = [True]

    def apply(value: bytes, key: bytes, timestamp: int, headers: Any, state: Any) -> list[dict[str, Any]]:
        if first[0]:
            first[0] = False
            started.write_text(json.dumps({"first_record_at": time.time()}))
        try:
            event = decode_event(key, value, headers)
        except RecordError:
            return []  # the aggregator dead-letters it; no records of the bench are invalid
        stored = state.get("e")
        chash = content_hash(event)
        verdict = judge(
            stored["revision"] if stored else None, stored["hash"] if stored else None, event.revision, chash
        )
        if verdict is not Verdict.applied:
            return []
        old = stored["current"] if stored else None
        new = contribution(event)
        state.set("e", {"revision": event.revision, "hash": chash, "current": new})
        return [{"pair": pair, "old": old, "new": new} for pair in sorted(pairs_of(old) | pairs_of(new))]

    return apply


class StateDays:
    """The aggregator's ``DayCounts`` in a pair's Quix state: one key per month."""

    def __init__(self, state: Any) -> None:
        self.state = state

    def days(self, month: str) -> dict[str, int]:
        return self.state.get(f"d:{month}") or {}

    def bump(self, month: str, day: str, delta: int) -> int:
        counts = self.days(month)
        left = counts.get(day, 0) + delta
        if left:
            counts[day] = left
        else:
            counts.pop(day, None)
        self.state.set(f"d:{month}", counts)
        return left


def stage2(delta: dict[str, Any], state: Any) -> bytes:
    """Per pair: retract the old contribution, add the new one, publish the pair's snapshot."""
    pair = delta["pair"]
    partial = state.get("p") or empty_partial()
    days = StateDays(state)
    if delta["old"] is not None:
        add_contribution(partial, delta["old"], pair, -1, days)
    if delta["new"] is not None:
        add_contribution(partial, delta["new"], pair, +1, days)
    partial["updates"] += 1
    state.set("p", partial)
    return encode_pair_stats(to_pair_stats(pair, partial, version=partial["updates"]))[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("bootstrap")
    parser.add_argument("events_topic")
    parser.add_argument("out_topic")
    parser.add_argument("started", type=Path, help="where to write the time of the first record")
    args = parser.parse_args()
    from quixstreams import Application  # the peer venv's (.venv-peer)

    app = Application(
        broker_address=args.bootstrap,
        consumer_group=f"quix-peer-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        processing_guarantee="exactly-once",
        commit_interval=COMMIT_INTERVAL,
        state_dir=tempfile.mkdtemp(prefix="quix-peer-"),
        loglevel="WARNING",
    )
    events = app.topic(args.events_topic, key_deserializer="bytes", value_deserializer="bytes")
    out = app.topic(args.out_topic, key_serializer="str", value_serializer="bytes")
    sdf = app.dataframe(events)
    sdf = sdf.apply(stage1(args.started), stateful=True, metadata=True, expand=True)
    sdf = sdf.group_by(lambda delta: delta["pair"], name="pair")
    sdf = sdf.apply(stage2, stateful=True)
    sdf.to_topic(out)
    tune_gc(AGGREGATOR_GC_THRESHOLD)  # as the aggregator's worker does: like is compared with like
    app.run()


if __name__ == "__main__":
    main()
