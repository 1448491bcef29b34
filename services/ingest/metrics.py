"""ingest's Prometheus metrics (request metrics are handshake.http's)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from handshake.http import LabelCache


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.records = Counter(
            "ingest_records_total",
            "records by partner and outcome (accepted, duplicate, rejected, conflict, unavailable)",
            ["partner", "outcome", "reason"],
            registry=registry,
        )
        self._records = LabelCache(self.records)
        self.produce_latency = Histogram(
            "ingest_produce_seconds",
            "time from send to broker acknowledgement, per publish call",
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        # a plain int read at scrape time: the event loop is its only writer
        self.in_flight_records = 0
        self.in_flight = Gauge(
            "ingest_in_flight_records", "records sent and not yet acknowledged", registry=registry
        )
        self.in_flight.set_function(lambda: self.in_flight_records)
        self.ready = Gauge("ingest_ready", "1 when /readyz answers 200", registry=registry)
        self.batch_workers = Gauge(
            "ingest_batch_workers",
            "processes encoding batch bodies off the event loop (0 until the first big batch starts them)",
            registry=registry,
        )
        self.producer_io_on_loop = Gauge(
            "ingest_producer_io_on_loop",
            "1 while the event loop drives the Kafka producer's network I/O; 0 while the producer's "
            "own thread does (connecting, obtaining its producer id, shutting down)",
            registry=registry,
        )

    def count(self, partner: str, outcome: str, reason: str = "", n: int = 1) -> None:
        if n:
            self._records(partner, outcome, reason).inc(n)
