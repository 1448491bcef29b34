"""Stage 2's batch: take the partials stage 1 published, keep them, publish the changed pairs.

Stage 2 keeps ``(pair, source partition) -> partial`` in the ``pairs`` table, each with its count
per month (:func:`services.aggregator.merge.apply_entry`), and publishes every changed pair's
merged snapshot to the pair-stats topic. Its writes and the snapshots are awaited together
before the batch is acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from schemas.records import encode_pair_stats
from services.aggregator import domain, merge, partials
from services.aggregator.metrics import Metrics
from services.aggregator.store import Publisher, TableState, loads

log = logging.getLogger("services.aggregator")


class Stage2:
    def __init__(
        self,
        store: TableState,
        publisher: Publisher,
        metrics: Metrics,
        pair_stats_topic: str,
        partitions: int,
    ) -> None:
        self.store, self.publisher, self.metrics = store, publisher, metrics
        self.pair_stats_topic, self.partitions = pair_stats_topic, partitions

    async def handle(self, events: Sequence[Any]) -> None:
        """Take a batch of the partials topic's records (faust events, current generation)."""
        cpu = time.thread_time()
        latest: dict[str, domain.Partial | None] = {}  # stage-2 key -> partial, read or accepted
        dirty: dict[str, int] = {}  # stage-2 keys to write -> partition of the partials topic
        changed: dict[str, int] = {}  # pairs to republish -> partition of the partials topic
        taken = 0
        for ev in events:
            msg = ev.message
            try:
                bundle = partials.entries(msg.value)
            except Exception as exc:  # our own topic: should never happen
                log.error("unreadable partials record", extra={"error": repr(exc), "offset": msg.offset})
                continue
            taken += len(bundle)
            for entry in bundle:
                pair = entry["pair"]
                key = merge.stage2_key(pair, entry["partition"])
                if key not in latest:
                    latest[key] = loads(self.store.get(msg.partition, key.encode()))
                applied = merge.apply_entry(latest[key], entry["partial"], entry["months"], entry["full"])
                if applied is not None:
                    latest[key] = applied
                    dirty[key] = msg.partition
                    changed[pair] = msg.partition
        writes: dict[int, list[list[tuple[bytes, bytes]]]] = {}  # one unit per partition
        for key, source in dirty.items():
            writes.setdefault(source, [[]])[0].append((key.encode(), orjson.dumps(latest[key])))
        at = datetime.now(UTC)
        snapshots = []
        for pair, source in changed.items():
            parts: dict[str, domain.Partial] = {}
            for partition in range(self.partitions):
                key = merge.stage2_key(pair, partition)
                value = latest[key] if key in latest else loads(self.store.get(source, key.encode()))
                if value is not None:
                    parts[str(partition)] = value
            key_bytes, value_bytes = encode_pair_stats(merge.merge_partials(pair, parts, updated_at=at))
            snapshots.append((key_bytes, key_bytes, value_bytes))
        self.metrics.stage_cpu.labels("stage2").inc(time.thread_time() - cpu)
        await asyncio.gather(
            self.store.write(writes), self.publisher.publish(self.pair_stats_topic, snapshots)
        )
        self.metrics.snapshots_published.inc(len(changed))
        self.metrics.partials_consumed.inc(taken)
