"""Stage 1's work on a decoded batch: the domain over the ``state`` table, one unit at a time.

Per source partition, a batch's records are processed in *units* whose writes fit one Kafka
record batch: the changelog and the local store keep a unit whole or lose it whole (see
:mod:`services.aggregator.domain`: no partial is ever half-applied). A unit's size is known only
once processed; :class:`~services.aggregator.batching.UnitSizer` says how many records to try.
No faust and no Kafka I/O here: :mod:`services.aggregator.app` decodes the records, awaits the
writes and the partials' publication, and acknowledges the batch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from schemas.events import AcceptedEvent
from services.aggregator import batching, domain
from services.aggregator.metrics import Metrics
from services.aggregator.store import TableState, loads

log = logging.getLogger("services.aggregator")


def reader(store: TableState, partition: int, carried: Mapping[bytes, bytes]) -> domain.PartitionGetter:
    """``process_batch``'s reader of one source partition: this batch's earlier units (``carried``,
    not stored yet) first, then the store."""

    def read(_partition: int, key: str) -> Any:
        raw_key = key.encode()
        raw = carried.get(raw_key)
        return loads(raw if raw is not None else store.get(partition, raw_key))

    return read


@dataclass
class Units:
    """A batch processed: each record's outcome, each partition's units of writes, and the bytes
    of every partial written (serialised once: written, then published)."""

    outcomes: list[domain.Outcome | None]
    units: dict[int, list[list[batching.Item]]] = field(default_factory=dict)
    dumped: dict[tuple[str, int], bytes] = field(default_factory=dict)


def process_units(
    store: TableState,
    decoded: Sequence[tuple[int, int, AcceptedEvent]],
    sizer: batching.UnitSizer,
    metrics: Metrics,
    published: domain.BatchOutcome,
) -> Units:
    """Process ``decoded`` (partition, offset, event) records, unit by unit per partition; lay
    what each unit publishes over ``published`` (a later unit's counts are newer)."""
    by_partition: dict[int, list[int]] = {}
    for i, (partition, _, _) in enumerate(decoded):
        by_partition.setdefault(partition, []).append(i)
    out = Units(outcomes=[None] * len(decoded))
    for partition, indexes in by_partition.items():
        carried: dict[bytes, bytes] = {}  # this batch's earlier units, not stored yet
        read = reader(store, partition, carried)
        pending = indexes
        while pending:
            n = sizer.first(len(pending))
            while True:
                result = domain.process_batch(read, [decoded[i] for i in pending[:n]], fresh=True)
                items = [(key.encode(), orjson.dumps(value)) for _, key, value in result.writes]
                size = batching.unit_bytes(items)
                if sizer.fits(n, size):
                    break
                if n == 1:  # one record's writes alone exceed a record batch (many pairs)
                    metrics.oversize_units.inc()
                    log.error(
                        "an event's writes exceed one record batch: sent in order, not atomically",
                        extra={"bytes": size, "partition": partition, "offset": decoded[pending[0]][1]},
                    )
                    break
                metrics.unit_retries.inc()  # too big for one record batch: fewer records
                n = sizer.retry(n, size)
            for i, outcome in zip(pending[:n], result.outcomes, strict=True):
                out.outcomes[i] = outcome
            out.units.setdefault(partition, []).append(items)
            for (_, key, _), (raw_key, raw) in zip(result.writes, items, strict=True):
                carried[raw_key] = raw
                if key.startswith("p:"):
                    out.dumped[domain.split_partial_key(key)] = raw
            published.then(result)
            pending = pending[n:]
    return out
