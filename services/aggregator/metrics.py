"""Prometheus metrics of the aggregator, on its own registry."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.events = Counter(
            "handshake_aggregator_events_total",
            "records processed, by kind and result (applied, duplicate, stale, conflict, replayed)",
            ["kind", "result"],
            registry=r,
        )
        self.dead_letters = Counter(
            "handshake_aggregator_dead_letters_total",
            "records sent to the dead-letter topic",
            ["reason"],
            registry=r,
        )
        self.partials_published = Counter(
            "handshake_aggregator_partials_published_total",
            "partial aggregates sent to the internal topic",
            registry=r,
        )
        self.partials_republished = Counter(
            "handshake_aggregator_partials_republished_total",
            "partials republished with all their months in a partition's first batch since a (re)start",
            registry=r,
        )
        self.partials_consumed = Counter(
            "handshake_aggregator_partials_consumed_total", "partial aggregates read by stage 2", registry=r
        )
        self.restored_records = Gauge(
            "handshake_aggregator_restored_records",
            "changelog records this worker restored into empty local tables at start",
            registry=r,
        )
        self.partials_log_start = Gauge(
            "handshake_aggregator_partials_log_start",
            "first offset the partials topic keeps after this worker's last purge, per partition",
            ["partition"],
            registry=r,
        )
        self.stale_dropped = Counter(
            "handshake_aggregator_stale_generation_dropped_total",
            "buffered records of an older consumer generation dropped (faust re-delivers them)",
            registry=r,
        )
        self.source_gaps = Counter(
            "handshake_aggregator_source_gaps_total",
            "batches cut at an offset gap (records faust skipped; the partition is sought back)",
            ["stage"],
            registry=r,
        )
        self.log_holes = Counter(
            "handshake_aggregator_log_holes_total",
            "offset gaps that are holes in the log itself (compaction, retention), as the broker answered",
            ["stage"],
            registry=r,
        )
        self.batch_failures = Counter(
            "handshake_aggregator_batch_failures_total",
            "batches whose processing failed (not acknowledged; read again from the committed offset)",
            ["stage"],
            registry=r,
        )
        self.oversize_units = Counter(
            "handshake_aggregator_oversize_units_total",
            "events whose table writes exceeded one record batch (written in order, not atomically)",
            registry=r,
        )
        self.unit_retries = Counter(
            "handshake_aggregator_unit_retries_total",
            "stage-1 units processed again with fewer events (their writes exceeded one record batch)",
            registry=r,
        )
        self.stage_cpu = Counter(
            "handshake_aggregator_stage_cpu_seconds_total",
            "CPU seconds of a stage's own batch work (decoding, processing, serialising; not the waits on Kafka)",
            ["stage"],
            registry=r,
        )
        self.snapshots_published = Counter(
            "handshake_aggregator_snapshots_published_total", "pair snapshots sent to pair-stats", registry=r
        )
        self.batch_seconds = Histogram(
            "handshake_aggregator_batch_seconds",
            "time to process one batch (stage 1 and 2)",
            ["stage"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.latency = Histogram(
            "handshake_aggregator_processing_latency_seconds",
            "time from a record's timestamp to its batch being acknowledged",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.lag = Gauge(
            "handshake_aggregator_consumer_lag",
            "records not yet processed, per events-topic partition",
            ["partition"],
            registry=r,
        )
        self.recovered = Gauge(
            "handshake_aggregator_recovered", "1 when table recovery is complete and streams run", registry=r
        )
        self.recovery_remaining = Gauge(
            "handshake_aggregator_recovery_remaining", "changelog records still to recover", registry=r
        )
