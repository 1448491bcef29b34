"""The ingest service the routes call: per-key locks, the revision rule against the events view,
rate limits, sending to Kafka, and a batch's per-record results."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fastapi import Response

from handshake.http import Problem
from schemas.events import ExchangeEvent
from schemas.records import PartnerRecord, encode_accepted, event_key
from services.ingest.batchwork import BatchEncoder, BatchRecords, Encoded, Invalid
from services.ingest.bodies import json_response
from services.ingest.domain import (
    Accept,
    Conflict,
    Duplicate,
    RateLimiter,
    ViewEntry,
    decide,
    retry_after_header,
)
from services.ingest.metrics import IngestMetrics
from services.ingest.partners import Partners
from services.ingest.producer import Outcome, Publisher, Record
from services.ingest.settings import IngestSettings
from services.ingest.view import EventsView

log = logging.getLogger(__name__)


class KeyLocks:
    """Serialises requests touching the same record key (racing resends, cancels).

    A request takes all its keys at once, or waits until none of them is held: no lock
    order, no deadlock, and a batch of 1,000 fresh keys costs no awaits.
    """

    def __init__(self) -> None:
        self._held: dict[str, asyncio.Future[None]] = {}

    def hold(self, keys: Iterable[str]) -> _Holding:
        """``async with locks.hold(keys):`` (a plain class: the hot path's cheapest context manager)."""
        return _Holding(self._held, keys)

    def __len__(self) -> int:
        return len(self._held)


class _Holding:
    __slots__ = ("held", "released", "wanted")

    def __init__(self, held: dict[str, asyncio.Future[None]], keys: Iterable[str]) -> None:
        self.held = held
        self.wanted = set(keys)
        self.released: asyncio.Future[None] | None = None

    async def __aenter__(self) -> None:
        held, wanted = self.held, self.wanted
        while busy := {held[k] for k in wanted if k in held}:
            await asyncio.wait(busy)
        self.released = released = asyncio.get_running_loop().create_future()
        for key in wanted:
            held[key] = released

    async def __aexit__(self, *exc_info: object) -> None:
        held = self.held
        for key in self.wanted:
            del held[key]
        assert self.released is not None
        self.released.set_result(None)


@dataclass
class Pending:
    """One record on its way to Kafka."""

    key: str
    entry: ViewEntry
    record: Record
    outcome: Outcome | None = None


@dataclass
class Ingest:
    """The service the routes call: adapters, the revision rule, rate limits and sending."""

    settings: IngestSettings
    publisher: Publisher
    partners: Partners
    view: EventsView
    metrics: IngestMetrics
    limiter: RateLimiter
    encoder: BatchEncoder
    locks: KeyLocks = field(default_factory=KeyLocks)

    def checks(self) -> dict[str, bool]:
        return {
            "partners": self.partners.ready(),
            "events_view": self.view.ready(),
            "kafka": self.publisher.connected(),
        }

    def require_view(self) -> None:
        if not self.view.ready():
            raise Problem(
                503,
                "ingest is still reading the events topic; retry shortly",
                headers={"Retry-After": str(self.settings.retry_after_s)},
            )

    def unavailable(self, detail: str) -> Problem:
        return Problem(503, detail, headers={"Retry-After": str(self.settings.retry_after_s)})

    def rate(self, partner: PartnerRecord, n: int) -> None:
        wait = self.limiter.take(partner.partner_id, partner.rate_per_second, n, time.monotonic())
        if wait > 0:
            self.metrics.count(partner.partner_id, "rejected", "rate_limited", n)
            raise self._over_rate(partner, wait)

    def rate_allows_one(self, partner: PartnerRecord) -> None:
        """429 at once when not even one record would pass: a batch over the rate is refused
        before its body is read and decoded (the work a flood would otherwise cost)."""
        wait = self.limiter.wait(partner.partner_id, partner.rate_per_second, 1, time.monotonic())
        if wait > 0:
            raise self._over_rate(partner, wait)

    def _over_rate(self, partner: PartnerRecord, wait: float) -> Problem:
        return Problem(
            429,
            f"over the rate of {partner.rate_per_second:g} events per second; retry later",
            headers={"Retry-After": retry_after_header(wait)},
        )

    def prepare(
        self, partner_id: str, event: ExchangeEvent, received_at: datetime, overlay: dict[str, ViewEntry]
    ) -> tuple[str, Accept | Duplicate | Conflict, Pending | None]:
        key = event_key(partner_id, event.event_id)
        record, digest = encode_accepted(event, partner_id, received_at)
        decision, pending = self.judge(key, event.revision, event.status.value, digest, record, overlay)
        return key, decision, pending

    def judge(
        self, key: str, revision: int, status: str, digest: str, record: Record, overlay: dict[str, ViewEntry]
    ) -> tuple[Accept | Duplicate | Conflict, Pending | None]:
        """The revision rule against the view and ``overlay`` (this request's earlier records)."""
        decision = decide(overlay.get(key) or self.view.get(key), revision, digest)
        if not isinstance(decision, Accept):
            return decision, None
        entry = ViewEntry(revision, digest, status, record[1])
        overlay[key] = entry
        return decision, Pending(key, entry, record)

    async def send(self, pending: list[Pending]) -> None:
        if not pending:
            return
        self.metrics.in_flight_records += len(pending)
        started = time.perf_counter()
        try:
            outcomes = await self.publisher.publish([p.record for p in pending], self.settings.ack_timeout_s)
        finally:
            self.metrics.in_flight_records -= len(pending)
        self.metrics.produce_latency.observe(time.perf_counter() - started)
        failed = 0
        for p, outcome in zip(pending, outcomes, strict=True):
            p.outcome = outcome
            if outcome.ok:
                self.view.put(p.key, p.entry)
            else:
                failed += 1
        if failed:
            first = next(p for p in pending if p.outcome and not p.outcome.ok)
            log.warning(
                "records not acknowledged",
                extra={
                    "count": failed,
                    "of": len(pending),
                    "first_key": first.key,
                    "error": first.outcome and first.outcome.error,
                },
            )


def uses_kafka(svc: Ingest) -> bool:
    from services.ingest.producer import KafkaPublisher

    return isinstance(svc.publisher, KafkaPublisher)


async def process_batch(svc: Ingest, partner: PartnerRecord, records: BatchRecords) -> Response:
    pid = partner.partner_id
    results: list[dict[str, Any]] = []
    pending: list[tuple[dict[str, Any], Pending]] = []
    counts = {"accepted": 0, "duplicate": 0, "rejected": 0, "conflict": 0, "unavailable": 0}
    async with svc.locks.hold(r.key for r in records if type(r) is Encoded):
        overlay: dict[str, ViewEntry] = {}
        for r in records:
            result: dict[str, Any] = {"index": r.position}
            if r.line is not None:
                result["line"] = r.line
            results.append(result)
            if type(r) is Invalid:
                result["status"] = "rejected"
                result["errors"] = r.errors
                continue
            assert type(r) is Encoded
            decision, p = svc.judge(r.key, r.revision, r.status, r.digest, r.record, overlay)
            result["key"] = r.key
            result["revision"] = r.revision
            if isinstance(decision, Duplicate):
                result["status"] = "duplicate"
            elif isinstance(decision, Conflict):
                result["status"] = "conflict"
                result["errors"] = [
                    {"pointer": "/revision", "message": decision.reason, "code": "revision_conflict"}
                ]
            else:
                assert p is not None
                pending.append((result, p))
        await svc.send([p for _, p in pending])
    for result, p in pending:
        assert p.outcome is not None
        if p.outcome.ok:
            result["status"] = "accepted"
        else:
            result["status"] = "unavailable"
            result["errors"] = [
                {
                    "pointer": "",
                    "message": "Kafka did not acknowledge this record in time; resend it",
                    "code": "unavailable",
                }
            ]
    for result in results:
        counts[result["status"]] += 1
    svc.metrics.count(pid, "accepted", "", counts["accepted"])
    svc.metrics.count(pid, "duplicate", "", counts["duplicate"])
    svc.metrics.count(pid, "rejected", "invalid", counts["rejected"])
    svc.metrics.count(pid, "conflict", "revision", counts["conflict"])
    svc.metrics.count(pid, "unavailable", "not_acknowledged", counts["unavailable"])
    if pending and counts["unavailable"] == len(pending):
        raise svc.unavailable(
            "Kafka did not acknowledge the batch in time; resend it (duplicates are detected)"
        )
    return json_response({**counts, "results": results}, 200)
