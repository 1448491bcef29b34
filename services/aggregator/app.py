"""The faust app: two thin agents around the pure functions of :mod:`services.aggregator.domain`.

Stage 1 reads the events topic in batches, keeps event states and per-partition partials in the
``state`` table (its units of writes: :mod:`services.aggregator.stage1`) and publishes each
touched partial to ``{app_id}-pair-partials`` (in bundles, partitioned by pair:
:mod:`services.aggregator.partials`). Stage 2 reads that topic, keeps
``(pair, partition) -> partial`` in the ``pairs`` table and publishes every changed pair's
merged snapshot to the pair-stats topic (:mod:`services.aggregator.stage2`). Tables are read and
written a batch at a time through :mod:`services.aggregator.store` (changelog first, then the
local store). Both stages await their sends before the batch is acknowledged, so a committed
offset always has its output on Kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import faust
import orjson
from faust.types import EventT
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from schemas.records import RecordError, decode_event, encode_dead_letter
from services.aggregator import batching, domain, hooks, partials
from services.aggregator.delivery import (
    FirstBatches,
    LogProbe,
    SourcePositions,
    in_generation,
    seek_sources_after_recovery,
    start_offset,
    unacknowledge,
)
from services.aggregator.metrics import Metrics
from services.aggregator.settings import AggregatorSettings
from services.aggregator.stage1 import process_units, reader
from services.aggregator.stage2 import Stage2
from services.aggregator.store import Publisher, TableState

log = logging.getLogger("services.aggregator")


def _broker_urls(bootstrap: str) -> list[str]:
    return [f"kafka://{h.strip()}" for h in bootstrap.split(",") if h.strip()]


@dataclass
class Aggregator:
    """The wired app: faust app, topics, tables, metrics (built by :func:`create_app`)."""

    settings: AggregatorSettings
    app: faust.App
    metrics: Metrics
    events_topic: Any
    partials_topic: Any
    pair_stats_topic: Any
    dead_letter_topic: Any
    state: Any
    pairs: Any

    def is_ready(self) -> tuple[bool, dict[str, Any]]:
        app = self.app
        detail: dict[str, Any] = {}
        try:
            recovery = cast(Any, app.tables).recovery
            detail["recovered"] = recovery.completed.is_set() and not app.in_recovery
            detail["rebalancing"] = bool(app.rebalancing)
            assignment = app.consumer.assignment() if app.consumer.state == "running" else set()
            detail["assigned"] = sorted(
                tp.partition for tp in assignment if tp.topic == self.events_topic.get_topic_name()
            )
            detail["consumer_running"] = app.consumer.state == "running"
        except Exception as exc:  # not started yet
            return False, {"error": f"{type(exc).__name__}: {exc}"}
        ready = (
            detail["recovered"]
            and not detail["rebalancing"]
            and detail["consumer_running"]
            and bool(detail["assigned"])
        )
        return ready, detail

    def update_gauges(self) -> None:
        ready, _ = self.is_ready()
        self.metrics.recovered.set(1 if ready else 0)
        with contextlib.suppress(Exception):
            self.metrics.recovery_remaining.set(cast(Any, self.app.tables).recovery.active_remaining_total())
        with contextlib.suppress(Exception):
            consumer = self.app.consumer
            name = self.events_topic.get_topic_name()
            for tp in consumer.assignment():
                if tp.topic != name:
                    continue
                highwater = consumer.highwater(tp)
                position = self._positions.get(tp.partition)
                if highwater is not None and position is not None:
                    self.metrics.lag.labels(str(tp.partition)).set(max(0, highwater - position))

    def __post_init__(self) -> None:
        self._positions: dict[int, int] = {}


def _headers(headers: Any) -> list[tuple[str, bytes]]:
    if not headers:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(str(k), v) for k, v in items]


#: Each table keeps one RocksDB per partition (12 by default, two tables): faust's defaults give
#: every one a 2 GiB block cache and up to 3 x 64 MiB memtables. These keep a worker's memory
#: bounded (24 stores: ≤ 24 x (2 x 8 + 16) MiB) at a cost measured in bench/README.md.
ROCKSDB_OPTIONS = {
    "driver": "rocksdict",
    "write_buffer_size": 8 * 1024 * 1024,
    "max_write_buffer_number": 2,
    "target_file_size_base": 16 * 1024 * 1024,
    "block_cache_size": 16 * 1024 * 1024,
}


def broker_credentials(settings: AggregatorSettings) -> faust.SASLCredentials | None:
    """SCRAM over TLS for faust's consumer, producer and admin client (None: an open broker)."""
    if not settings.secured:
        return None
    config = settings.aiokafka_config()  # what the log probe's aiokafka consumer gets too
    return faust.SASLCredentials(
        username=config["sasl_plain_username"],
        password=config["sasl_plain_password"],
        mechanism=config["sasl_mechanism"],
        ssl_context=config["ssl_context"],
    )


def stage2_batch_size(settings: AggregatorSettings) -> int:
    """Records per stage-2 batch: a record is a bundle of ~20 partials, so ~50,000 partials (about
    ten stage-1 batches' worth: stage 2's work per batch is per changed pair, bench/README.md)."""
    return max(1, settings.batch_size // 2)


#: How long a stage-2 batch may wait to fill while enough partials wait in Kafka to fill it (it
#: gets the loop only between stage 1's batches when both catch up): see :mod:`batching`.
STAGE2_PATIENCE = 2.0


def create_app(settings: AggregatorSettings, metrics: Metrics | None = None) -> Aggregator:
    metrics = metrics or Metrics()
    app = faust.App(
        settings.app_id,
        broker=_broker_urls(settings.kafka_bootstrap),
        broker_credentials=broker_credentials(settings),
        store=settings.store,
        datadir=str(settings.data_dir / "faust"),
        autodiscover=False,
        processing_guarantee="at_least_once",  # the domain makes replays harmless
        producer_acks=-1,
        producer_linger=0.01,  # batch the many small changelog records into few requests
        producer_max_batch_size=900 * 1024,  # one stage-1 unit per record batch; broker limit 1 MiB
        table_standby_replicas=settings.standby_replicas,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.replication_factor,
        broker_commit_interval=settings.commit_interval,
        broker_commit_every=10_000,
        stream_wait_empty=True,
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=max(0.5, settings.session_timeout / 5),
        broker_rebalance_timeout=max(10.0, settings.session_timeout * 2),
        web_enabled=True,
        web_host=settings.web_host,
        web_port=settings.web_port,
        consumer_auto_offset_reset="earliest",
        table_key_index_size=100_000,
        stream_buffer_maxsize=max(4096, settings.batch_size * 2),
    )
    raw: dict[str, Any] = {
        "key_type": bytes,
        "value_type": bytes,
        "key_serializer": "raw",
        "value_serializer": "raw",
    }
    events_topic = app.topic(settings.events_topic, **raw)
    partials_topic = app.topic(
        settings.partials_topic,
        partitions=settings.topic_partitions,
        internal=True,
        # buffered bundles (at most 16 KiB each): one stage-2 batch, not stream_buffer_maxsize's
        # 10,000 (160 MiB when stage 2 is behind)
        maxsize=stage2_batch_size(settings),
        **raw,
    )
    pair_stats_topic = app.topic(settings.pair_stats_topic, **raw)
    dead_letter_topic = app.topic(settings.dead_letter_topic, **raw)
    table_options: dict[str, Any] = {  # bytes in and out: faust picks the raw codec
        "key_type": bytes,
        "value_type": bytes,
        "recovery_buffer_size": 10_000,
        "standby_buffer_size": 10_000,
    }
    rocks = settings.store.startswith("rocksdb")
    # a copy each: faust's Store pops keys from the options it is given (and shares the dict)
    state = app.Table("state", **table_options, options=dict(ROCKSDB_OPTIONS) if rocks else None)
    pairs = app.Table("pairs", **table_options, options=dict(ROCKSDB_OPTIONS) if rocks else None)
    agg = Aggregator(
        settings=settings,
        app=app,
        metrics=metrics,
        events_topic=events_topic,
        partials_topic=partials_topic,
        pair_stats_topic=pair_stats_topic,
        dead_letter_topic=dead_letter_topic,
        state=state,
        pairs=pairs,
    )

    state_store = TableState(app, state)
    pairs_store = TableState(app, pairs)
    publisher = Publisher(app)
    partials_name = settings.partials_topic

    async def produce(topic: str, key: bytes | None, value: bytes) -> Any:
        """Hand a record to the producer (no per-record faust Topic machinery); await the result."""
        return await app.producer.send(topic, key, value, partition=None, timestamp=None, headers=None)

    async def dead_letter(event: EventT, reason: str, error: str) -> None:
        msg = event.message
        key, value = encode_dead_letter(
            source_topic=msg.topic,
            source_partition=msg.partition,
            source_offset=msg.offset,
            key=msg.key,
            value=msg.value,
            headers=_headers(msg.headers),
            reason=reason,
            error=error,
        )
        await (await produce(settings.dead_letter_topic, key, value))
        metrics.dead_letters.labels(reason).inc()
        log.warning(
            "dead-lettered record",
            extra={"reason": reason, "error": error[:500], "partition": msg.partition, "offset": msg.offset},
        )

    positions = {"stage1": SourcePositions(), "stage2": SourcePositions()}
    sizer = batching.UnitSizer(batching.UNIT_BYTES)  # records per stage-1 unit
    probe = LogProbe(settings.kafka_bootstrap, settings.aiokafka_config())

    async def close_probe(app: Any, *args: Any, **kwargs: Any) -> None:
        await probe.close()

    app.on_before_shutdown.connect(cast(Any, close_probe))

    async def current(events: Sequence[EventT], stage: str) -> list[EventT]:
        """The batch's events to process: current generation, no offset skipped before them."""
        consumer = cast(Any, app.consumer)
        generation = app.consumer_generation_id
        ordered = in_generation(events, generation, hooks.unacked_messages(consumer))
        if len(ordered) < len(events):
            metrics.stale_dropped.inc(len(events) - len(ordered))
        pos = positions[stage]
        for round_ in range(64):  # each round learns at least one hole; the bound is a safety net
            before = pos.snapshot()
            kept, dropped, seeks = pos.admit(ordered, generation, lambda tp: start_offset(consumer, tp))
            learned = False
            for tp, offset in seeks.items():
                if pos.covers(tp, offset):
                    continue  # the record there exists: it was skipped
                found = await probe.offsets_from(tp, offset)
                if found:
                    pos.known[tp] = (offset, found)
                    holes = (found[0] > offset) + sum(b > a + 1 for a, b in itertools.pairwise(found))
                    metrics.log_holes.labels(stage).inc(holes)
                    learned = learned or found[0] > offset  # a hole there: nothing was skipped
            if not learned or round_ == 63:
                break
            pos.restore(before)  # and admit the batch again, knowing the holes
        unacknowledge(dropped, hooks.unacked_messages(consumer))  # re-delivered after the seek
        for tp, offset in seeks.items():
            metrics.source_gaps.labels(stage).inc()
            log.warning(
                "records were skipped before this batch: seeking back",
                extra={"topic": tp.topic, "partition": tp.partition, "seek_to": offset},
            )
            await consumer.seek(tp, offset)
        return kept

    first_batches = FirstBatches()

    def republished(due: Sequence[int], tps: Mapping[int, Any]) -> domain.BatchOutcome:
        """What stage 1 publishes first in the ``due`` partitions' first batch (domain.republish)."""
        out = domain.BatchOutcome()
        for partition in due:
            found = [
                (key.decode(), orjson.loads(value))
                for key, value in state_store.scan(partition, b"p:")
                if domain.split_partial_key(key.decode())[1] == partition
            ]
            since = start_offset(cast(Any, app.consumer), tps[partition])
            read = functools.partial(reader(state_store, partition, {}), partition)
            out.then(domain.republish(read, found, since))
        metrics.partials_republished.inc(len(out.touched))
        return out

    async def stage1_batch(events: Sequence[EventT]) -> None:
        started = time.perf_counter()
        events = await current(events, "stage1")
        cpu = time.thread_time()
        decoded: list[tuple[int, int, Any]] = []
        sources: list[EventT] = []
        for ev in events:
            msg = ev.message
            try:
                record = decode_event(msg.key, msg.value, _headers(msg.headers))
            except RecordError as exc:
                await dead_letter(ev, exc.reason, exc.message)
                continue
            decoded.append((msg.partition, msg.offset, record))
            sources.append(ev)

        # the partials to publish, with the months they changed (or all): first, in a partition's
        # first batch since a (re)start, what a crash may have lost (see domain.republish)
        first = first_batches.due(app.consumer_generation_id, {ev.message.partition for ev in events})
        published = republished(first, {ev.message.partition: ev.message.tp for ev in events})
        done = process_units(state_store, decoded, sizer, metrics, published)
        counts: Counter[tuple[str, str]] = Counter()
        for (_, _, record), ev, maybe in zip(decoded, sources, done.outcomes, strict=True):
            outcome = cast(domain.Outcome, maybe)
            if outcome.error is not None:
                await dead_letter(ev, "processing_error", outcome.error)
            else:
                counts[(record.kind.value, outcome.result)] += 1
        to_stage2: dict[int, list[bytes]] = {}  # partition of the partials topic -> entries
        for (pair, partition), partial in published.touched.items():
            raw = done.dumped.get((pair, partition)) or orjson.dumps(partial)
            # partitioned by pair, so stage 2 finds all partials of a pair together
            target = await publisher.partition_of(partials_name, pair.encode())
            to_stage2.setdefault(target, []).append(
                partials.entry_bytes(
                    pair,
                    partition,
                    partial["updates"],
                    raw,
                    published.months.get((pair, partition), {}),
                    (pair, partition) in published.full,
                )
            )
        metrics.stage_cpu.labels("stage1").inc(time.thread_time() - cpu)
        # raises if the broker did not acknowledge: the batch is then not acknowledged either
        await asyncio.gather(
            state_store.write(done.units), publisher.publish_to(partials_name, partials.bundle(to_stage2))
        )
        for (kind, outcome_name), n in counts.items():
            metrics.events.labels(kind, outcome_name).inc(n)
        metrics.partials_published.inc(len(published.touched))
        first_batches.succeeded(first)
        now = time.time()
        for ev in events:
            msg = ev.message
            agg._positions[msg.partition] = msg.offset + 1
            if msg.timestamp:
                metrics.latency.observe(max(0.0, now - msg.timestamp))
        metrics.batch_seconds.labels("stage1").observe(time.perf_counter() - started)

    def highwater(tp: Any) -> int | None:
        try:
            return cast(int | None, app.consumer.highwater(tp))
        except Exception:  # not assigned (any more), or the consumer is not running
            return None

    async def run_stage(
        stream: Any, stage: str, handle: Any, size: int, failed: Any = None, patience: float | None = None
    ) -> None:
        """Feed ``handle`` batches (see :mod:`batching`); a batch is acknowledged once processed,
        and one that fails is read again, never acknowledged."""
        seek_sources_after_recovery(app.consumer, {settings.events_topic, partials_name})
        delivered = batching.Positions(highwater)
        async for events in batching.batches(
            stream, size, settings.flush_interval, delivered, patience=patience
        ):
            try:
                await handle(events)
            except Exception:
                # e.g. Kafka did not acknowledge the writes in time: the records go back to the
                # committed offset (the next batch is cut at the gap and sought back)
                log.exception("batch failed: its records will be read again", extra={"stage": stage})
                metrics.batch_failures.labels(stage).inc()
                unacknowledge(events, hooks.unacked_messages(app.consumer))
                positions[stage].forget()
                delivered.forget()
                if failed is not None:
                    failed()
                await asyncio.sleep(1.0)
            else:
                for ev in events:  # as take_events did (also those left out as stale)
                    await stream.ack(ev)

    @app.agent(events_topic, name=f"{settings.app_id}.stage1")
    async def stage1(stream: Any) -> None:
        await run_stage(stream, "stage1", stage1_batch, settings.batch_size, first_batches.forget)

    take_partials = Stage2(
        pairs_store, publisher, metrics, settings.pair_stats_topic, settings.topic_partitions
    )

    async def stage2_batch(events: Sequence[EventT]) -> None:
        started = time.perf_counter()
        await take_partials.handle(await current(events, "stage2"))
        metrics.batch_seconds.labels("stage2").observe(time.perf_counter() - started)

    @app.agent(partials_topic, name=f"{settings.app_id}.stage2")
    async def stage2(stream: Any) -> None:
        await run_stage(
            stream,
            "stage2",
            stage2_batch,
            stage2_batch_size(settings),
            patience=STAGE2_PATIENCE,
        )

    purger = partials.Purger(settings.kafka_bootstrap, settings.aiokafka_config())

    @app.timer(settings.purge_interval)
    async def purge_partials() -> None:
        """Delete the partials stage 2 has taken and committed, on the partitions this worker owns."""
        owned = [tp for tp in app.consumer.assignment() if tp.topic == partials_name]
        try:
            starts = await purger.purge(settings.app_id, owned)
        except Exception as exc:  # a later round tries again; nothing depends on it but disk
            log.warning("could not purge the partials topic", extra={"error": repr(exc)})
            return
        for tp, start in starts.items():
            metrics.partials_log_start.labels(str(tp.partition)).set(start)

    async def close_purger(app: Any, *args: Any, **kwargs: Any) -> None:
        await purger.close()

    app.on_before_shutdown.connect(cast(Any, close_purger))

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        ready, detail = agg.is_ready()
        return web.json({"status": "ready" if ready else "not ready", **detail}, status=200 if ready else 503)

    @app.page("/metrics")
    async def metrics_view(web: Any, request: Any) -> Any:
        agg.update_gauges()
        return web.bytes(generate_latest(metrics.registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    return agg
