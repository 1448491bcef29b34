"""Stage 2's batch: take the partials stage 1 published, keep them, publish the changed pairs.

Stage 2 keeps, in the ``pairs`` table, each pair's partials, their months one year per key and
the pair's months summed (:class:`services.aggregator.merge.PairsState`), and publishes every
changed pair's snapshot to the pair-stats topic. A pair's writes in a batch are one unit (one
Kafka record batch on the changelog: kept whole or lost), several pairs packed in a unit up to
:data:`~services.aggregator.batching.UNIT_BYTES`. Its writes and the snapshots are awaited
together before the batch is acknowledged.
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
from services.aggregator import batching, merge, partials
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
        states: dict[int, merge.PairsState] = {}  # partition of the partials topic -> its pairs
        taken = 0
        for ev in events:
            msg = ev.message
            try:
                bundle = partials.entries(msg.value)
            except Exception as exc:  # our own topic: should never happen
                log.error("unreadable partials record", extra={"error": repr(exc), "offset": msg.offset})
                continue
            taken += len(bundle)
            state = states.get(msg.partition)
            if state is None:
                state = states[msg.partition] = merge.PairsState(self._reader(msg.partition), self.partitions)
            for entry in bundle:
                state.take(
                    entry["pair"], entry["partition"], entry["partial"], entry["months"], entry["full"]
                )
        writes: dict[int, list[list[batching.Item]]] = {}
        at = datetime.now(UTC)
        snapshots = []
        for partition, state in states.items():
            units = [
                [(key.encode(), None if value is None else orjson.dumps(value)) for key, value in unit]
                for unit in state.writes().values()
            ]  # a pair's writes are one unit: see merge.PairsState
            writes[partition] = batching.pack(units, batching.UNIT_BYTES)
            for pair in state.changed:
                key_bytes, value_bytes = encode_pair_stats(state.snapshot(pair, updated_at=at))
                snapshots.append((key_bytes, key_bytes, value_bytes))
        self.metrics.stage_cpu.labels("stage2").inc(time.thread_time() - cpu)
        await asyncio.gather(
            self.store.write(writes), self.publisher.publish(self.pair_stats_topic, snapshots)
        )
        self.metrics.snapshots_published.inc(len(snapshots))
        self.metrics.partials_consumed.inc(taken)

    def _reader(self, partition: int) -> merge.Reader:
        def read(key: str) -> Any:
            return loads(self.store.get(partition, key.encode()))

        return read
