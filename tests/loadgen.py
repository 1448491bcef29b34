"""A load generator that records every request's outcome, and the ground truth it implies.

Outcomes: acknowledged (2xx), rejected (4xx), ambiguous (timeout, reset, 5xx) — an ambiguous
request is retried with the same event id and revision until it resolves, exactly as a careful
partner would. The ground truth is computed from acknowledged events only, with nothing but the
contract's pure functions (``schemas.pairs``), independently of the aggregator's code.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import httpx

from schemas.events import ExchangeEvent
from schemas.pairs import CHECKSUM_MOD, contributions, event_checksum
from schemas.records import checksum_hex

COUNTRIES = ["US", "CN", "FR", "DE", "JP", "BR", "IN", "KE", "MX", "GB", "SUHH", "DDDE"]


@dataclass
class Outcomes:
    acknowledged: int = 0
    rejected: int = 0
    ambiguous: int = 0  # requests that had to be retried (each counted once per failed attempt)
    statuses: Counter[int] = field(default_factory=Counter)
    #: (partner_id, event_id) -> the latest acknowledged event body
    truth_events: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    #: events sent but not yet resolved (ambiguous in flight), for the upper bound during faults
    in_doubt: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    false_acks_while_down: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def make_event(rng: random.Random, event_id: str, revision: int = 1) -> dict[str, Any]:
    host = rng.choice(COUNTRIES)
    others = [c for c in COUNTRIES if c != host]
    delegations = [
        {"country": c, "participants": rng.randint(1, 50)}
        for c in rng.sample(others, rng.choice([1, 1, 2, 3]))
    ]
    start = date(2026, 1, 1) + timedelta(days=rng.randint(0, 400))
    return {
        "event_id": event_id,
        "revision": revision,
        "kind": rng.choice(["athletic", "cultural", "scientific", "civic"]),
        "title": f"load {event_id}",
        "host_country": host,
        "delegations": delegations,
        "starts_on": start.isoformat(),
        "status": rng.choice(["announced", "confirmed", "completed"]),
    }


class LoadGenerator:
    """Threads that push new events and corrections to ingest, recording every outcome."""

    def __init__(
        self,
        ingest_url: str,
        partners: dict[str, str],
        rate: float = 100.0,
        threads: int = 4,
        seed: int = 1,
        correction_ratio: float = 0.15,
        cancel_ratio: float = 0.05,
        request_timeout: float = 10.0,
    ) -> None:
        self.url = ingest_url
        self.partners = partners  # partner_id -> key
        self.rate = rate
        self.threads = threads
        self.seed = seed
        self.correction_ratio = correction_ratio
        self.cancel_ratio = cancel_ratio
        self.timeout = request_timeout
        self.outcomes = Outcomes()
        self.stop_event = threading.Event()
        self._workers: list[threading.Thread] = []
        # set by a scenario right after it stopped Kafka, cleared right before Kafka comes back
        self.broker_down = threading.Event()

    def start(self) -> None:
        for i in range(self.threads):
            t = threading.Thread(target=self._run, args=(i,), daemon=True, name=f"loadgen-{i}")
            t.start()
            self._workers.append(t)

    def stop(self, timeout: float = 120.0) -> None:
        self.stop_event.set()
        for t in self._workers:
            t.join(timeout)

    def _send(
        self, client: httpx.Client, key: str, verb: str, body: dict[str, Any] | str
    ) -> httpx.Response | None:
        try:
            if verb == "post":
                return client.post("/v1/events", json=body, headers={"Authorization": f"Bearer {key}"})
            return client.delete(f"/v1/events/{body}", headers={"Authorization": f"Bearer {key}"})
        except httpx.HTTPError:
            return None

    def _resolve(
        self,
        client: httpx.Client,
        partner: str,
        key: str,
        verb: str,
        body: Any,
        ident: tuple[str, str],
        state: dict[str, Any] | None,
    ) -> bool:
        """Send until the answer is not ambiguous; return whether it was acknowledged."""
        out = self.outcomes
        with out.lock:
            if state is not None:
                out.in_doubt[ident] = state
        while True:
            down = self.broker_down.is_set()
            response = self._send(client, key, verb, body)
            status = response.status_code if response is not None else 0
            with out.lock:
                out.statuses[status] += 1
            if response is not None and 200 <= status < 300:
                with out.lock:
                    out.acknowledged += 1
                    # sent after the broker stopped and answered before it came back: impossible if correct
                    if down and self.broker_down.is_set():
                        out.false_acks_while_down += 1
                    if state is not None:
                        out.truth_events[ident] = state
                    out.in_doubt.pop(ident, None)
                return True
            if response is not None and 400 <= status < 500 and status != 429:
                with out.lock:
                    out.rejected += 1
                    out.in_doubt.pop(ident, None)
                return False
            with out.lock:
                out.ambiguous += 1
            retry_after = 0.5
            if response is not None:
                try:
                    retry_after = min(5.0, float(response.headers.get("Retry-After", "0.5")))
                except ValueError:
                    retry_after = 0.5
            time.sleep(retry_after)

    def _run(self, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        partner_ids = sorted(self.partners)
        per_thread = self.rate / self.threads
        interval = 1.0 / per_thread if per_thread > 0 else 0.0
        mine: list[tuple[str, dict[str, Any]]] = []
        counter = 0
        next_at = time.monotonic()
        with httpx.Client(base_url=self.url, timeout=self.timeout) as client:
            while not self.stop_event.is_set():
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                next_at = max(next_at + interval, time.monotonic() - 1)
                roll = rng.random()
                if mine and roll < self.correction_ratio:
                    partner, last = rng.choice(mine)
                    if last["status"] == "cancelled":
                        continue
                    fixed = make_event(rng, last["event_id"], last["revision"] + 1)
                    if self._resolve(
                        client,
                        partner,
                        self.partners[partner],
                        "post",
                        fixed,
                        (partner, last["event_id"]),
                        fixed,
                    ):
                        mine[mine.index((partner, last))] = (partner, fixed)
                elif mine and roll < self.correction_ratio + self.cancel_ratio:
                    partner, last = rng.choice(mine)
                    if last["status"] == "cancelled":
                        continue
                    cancelled = {**last, "status": "cancelled", "revision": last["revision"] + 1}
                    if self._resolve(
                        client,
                        partner,
                        self.partners[partner],
                        "delete",
                        last["event_id"],
                        (partner, last["event_id"]),
                        cancelled,
                    ):
                        mine[mine.index((partner, last))] = (partner, cancelled)
                else:
                    counter += 1
                    partner = rng.choice(partner_ids)
                    event = make_event(rng, f"lg{self.seed}-{index}-{counter}")
                    if self._resolve(
                        client,
                        partner,
                        self.partners[partner],
                        "post",
                        event,
                        (partner, event["event_id"]),
                        event,
                    ):
                        mine.append((partner, event))


@dataclass
class PairTruth:
    active_events: int = 0
    participants: int = 0
    checksum: int = 0


def ground_truth(events: dict[tuple[str, str], dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """pair -> {active_events, participants, checksum} from the latest acknowledged state of each event."""
    pairs: dict[str, PairTruth] = {}
    for (partner, event_id), body in events.items():
        event = ExchangeEvent.model_validate(body)
        if event.status == "cancelled":
            continue
        check = event_checksum(partner, event_id)
        for c in contributions(event):
            t = pairs.setdefault(c.pair, PairTruth())
            t.active_events += 1
            t.participants += c.participants
            t.checksum = (t.checksum + check) % CHECKSUM_MOD
    return {
        p: {
            "active_events": t.active_events,
            "participants": t.participants,
            "checksum": checksum_hex(t.checksum),
        }
        for p, t in pairs.items()
        if t.active_events
    }


def api_pairs(api_url: str, headers: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Every pair the API shows with active events: pair -> {active_events, participants, checksum}."""
    out: dict[str, dict[str, Any]] = {}
    offset = 0
    with httpx.Client(base_url=api_url, timeout=10, headers=headers) as client:
        while True:
            answer = client.get("/v1/pairs", params={"limit": 500, "offset": offset})
            answer.raise_for_status()  # a problem answer is not an empty view
            page = answer.json()
            items = page.get("items") or page.get("pairs") or []
            for item in items:
                if item.get("active_events", 0):
                    out[item["pair"]] = {
                        "active_events": item["active_events"],
                        "participants": item["participants"],
                        "checksum": item["checksum"],
                    }
            offset += len(items)
            if not items or offset >= page.get("total", 0):
                return out


def compare(truth: dict[str, dict[str, Any]], seen: dict[str, dict[str, Any]]) -> dict[str, int]:
    """lost/duplicated event counts over all pairs, and the number of pairs that differ."""
    lost = duplicated = differing = 0
    for pair in set(truth) | set(seen):
        want = truth.get(pair, {"active_events": 0, "participants": 0, "checksum": "0" * 16})
        got = seen.get(pair, {"active_events": 0, "participants": 0, "checksum": "0" * 16})
        diff = got["active_events"] - want["active_events"]
        lost += max(0, -diff)
        duplicated += max(0, diff)
        if got != want:
            differing += 1
    return {"lost": lost, "duplicated": duplicated, "pairs_differing": differing}


def wait_exact(
    api_url: str, truth: dict[str, dict[str, Any]], timeout: float
) -> tuple[dict[str, int], float]:
    """Poll until the API equals the truth and two reads 1 s apart agree; return figures and seconds.

    Raises if no read succeeded before ``timeout``, with the last failure: an API that cannot
    answer is not a view that lost events."""
    started = time.monotonic()
    last: dict[str, dict[str, Any]] | None = None
    figures = compare(truth, {})
    failure: str | None = None
    while time.monotonic() - started < timeout:
        try:
            seen = api_pairs(api_url)
        except httpx.HTTPStatusError as exc:
            failure = f"{exc.response.status_code} {exc.response.text[:500]}"
            time.sleep(1)
            continue
        except (httpx.HTTPError, ValueError) as exc:
            failure = repr(exc)
            time.sleep(1)
            continue
        figures = compare(truth, seen)
        if seen == last and figures["pairs_differing"] == 0:
            return figures, time.monotonic() - started
        last = seen
        time.sleep(1)
    if last is None:
        raise AssertionError(f"GET /v1/pairs never answered in {timeout:.0f}s; last: {failure}")
    return figures, time.monotonic() - started
