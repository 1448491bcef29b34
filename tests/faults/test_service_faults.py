"""Aggregator and API faults (issue 8, scenarios 4, 6, 7, 8 and 9)."""

from __future__ import annotations

import contextlib
import json
import random
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from schemas.events import AcceptedEvent
from schemas.records import decode_dead_letter, encode_event
from tests.faults.common import StreamFollower, record, scale, wait_until
from tests.harness import Harness
from tests.loadgen import LoadGenerator, api_pairs, compare, ground_truth, make_event, wait_exact

pytestmark = pytest.mark.integration

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "v1"


@pytest.fixture(scope="module")
def acknowledged() -> dict[tuple[str, str], dict[str, Any]]:
    return {}


def _settle(
    scenario: str, platform: Harness, truth_events: dict[Any, Any], started: float, **extra: Any
) -> dict[str, int]:
    truth = ground_truth(truth_events)
    figures, seconds = wait_exact(platform["api"].url, truth, 120)
    record(
        scenario,
        lost=figures["lost"],
        duplicated=figures["duplicated"],
        pairs_differing=figures["pairs_differing"],
        recovery_s=round(seconds, 1),
        total_s=round(time.monotonic() - started, 1),
        **extra,
    )
    assert figures == {"lost": 0, "duplicated": 0, "pairs_differing": 0}
    return figures


def test_aggregator_sigkilled_repeatedly_even_in_recovery_and_without_local_state(
    platform: Harness, partner_keys: dict[str, str], acknowledged: dict[Any, Any]
) -> None:
    started = time.monotonic()
    load = LoadGenerator(platform["ingest"].url, partner_keys, rate=scale(50, 100), threads=4, seed=44)
    load.start()
    aggregator = platform["aggregator"]
    kills = int(scale(3, 5))
    rng = random.Random(4)
    for i in range(kills):
        time.sleep(rng.uniform(1.5, 4))
        aggregator.kill()
        if i == 1:
            platform.wipe_state()  # rebuild from the changelog alone
        aggregator.start()
        if i == 0:
            time.sleep(rng.uniform(0.5, 2.0))  # while it recovers
            aggregator.kill()
            aggregator.start()
        aggregator.wait_ready(120)
    time.sleep(2)
    load.stop()
    acknowledged.update(load.outcomes.truth_events)
    _settle(
        f"4 aggregator SIGKILL x{kills} (+1 in recovery, 1 state wipe)",
        platform,
        acknowledged,
        started,
        acknowledged=load.outcomes.acknowledged,
        kills=kills + 1,
    )


def _accepted(partner: str, n: int, rng: random.Random) -> AcceptedEvent:
    body = make_event(rng, f"pill-{uuid.uuid4().hex[:6]}-{n}")
    return AcceptedEvent.model_validate({**body, "partner_id": partner, "received_at": datetime.now(UTC)})


def test_poison_pills_and_v1_corpus(platform: Harness, acknowledged: dict[Any, Any]) -> None:
    """Scenarios 6 and 7: pills go to the dead-letter topic with reason and offset, the stream goes on,
    the v1 corpus is read by the current code, an unknown ce_type is dead-lettered."""
    started = time.monotonic()
    settings = platform.settings
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    rng = random.Random(6)
    valid = int(scale(2000, 10000))
    pills: list[tuple[bytes, bytes, list[tuple[str, bytes]], str]] = []
    sent_pills = 0
    for n in range(valid):
        event = _accepted("pill-partner", n, rng)
        key, value, headers = encode_event(event)
        producer.send(settings.events_topic, key=key, value=value, headers=headers)
        acknowledged[("pill-partner", event.event_id)] = event.model_dump(
            mode="json", exclude={"partner_id", "received_at"}
        )
        if n % 500 == 7:
            good = dict(headers)
            pills = [
                (b"pill-partner/bad-json", b"{not json", headers, "invalid_json"),
                (
                    b"pill-partner/bad-schema",
                    json.dumps({"event_id": "bad-schema"}).encode(),
                    headers,
                    "schema_invalid",
                ),
                (
                    key,
                    value,
                    [
                        *((k, v) for k, v in headers if k != "ce_type"),
                        ("ce_type", b"org.handshake.exchange.v9"),
                    ],
                    "unknown_type",
                ),
                (b"other/" + key.split(b"/", 1)[1], value, list(good.items()), "key_mismatch"),
            ]
            for k, v, h, _ in pills:
                producer.send(settings.events_topic, key=k, value=v, headers=h)
                sent_pills += 1
    corpus = sorted(CORPUS.glob("*.json"))
    for path in corpus:
        item = json.loads(path.read_text())
        value = json.dumps(item["value"]).encode()
        producer.send(
            settings.events_topic,
            key=item["key"].encode(),
            value=value,
            headers=[(k, v.encode()) for k, v in item["headers"].items()],
        )
    producer.flush(30)
    producer.close()
    from schemas.records import decode_event

    for path in corpus:
        item = json.loads(path.read_text())
        event = decode_event(
            item["key"].encode(),
            json.dumps(item["value"]).encode(),
            [(k, v.encode()) for k, v in item["headers"].items()],
        )
        ident = (event.partner_id, event.event_id)
        current = acknowledged.get(ident)
        if current is None or current["revision"] < event.revision:
            acknowledged[ident] = event.model_dump(mode="json", exclude={"partner_id", "received_at"})
    _settle(
        "6+7 poison pills among valid events, v1 corpus",
        platform,
        acknowledged,
        started,
        events=valid + len(corpus),
        pills=sent_pills,
    )
    # every pill is in the dead-letter topic with its reason and source offset
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        consumer_timeout_ms=5000,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    parts = [
        TopicPartition(settings.dead_letter_topic, p)
        for p in consumer.partitions_for_topic(settings.dead_letter_topic) or []
    ]
    consumer.assign(parts)
    consumer.seek_to_beginning()
    letters = [decode_dead_letter(r.value) for r in consumer]
    consumer.close()
    reasons: dict[str, int] = {}
    for letter in letters:
        reasons[letter.reason] = reasons.get(letter.reason, 0) + 1
        assert letter.source_topic == settings.events_topic
        assert letter.source_offset >= 0
    assert sum(reasons.values()) >= sent_pills, reasons
    for expected in ("invalid_json", "schema_invalid", "unknown_type", "key_mismatch"):
        assert reasons.get(expected, 0) >= sent_pills // 4, reasons
    assert platform["aggregator"].alive()


def test_catch_up_after_aggregator_stopped(
    platform: Harness, partner_keys: dict[str, str], acknowledged: dict[Any, Any]
) -> None:
    """Scenario 8: events arrive while the aggregator is down; after it starts, lag is 0 within 90 s,
    counts never go down during catch-up and every SSE client ends equal to REST."""
    started = time.monotonic()
    followers = [StreamFollower(platform["api"].url) for _ in range(3)]
    for f in followers:
        f.start()
    platform["aggregator"].stop()
    target = int(scale(3000, 30000))
    load = LoadGenerator(
        platform["ingest"].url,
        partner_keys,
        rate=scale(400, 800),
        threads=8,
        seed=88,
        correction_ratio=0,
        cancel_ratio=0,
    )
    load.start()
    wait_until(lambda: load.outcomes.acknowledged >= target, scale(120, 240))
    load.stop()
    acknowledged.update(load.outcomes.truth_events)
    truth = ground_truth(acknowledged)
    before = api_pairs(platform["api"].url)
    platform["aggregator"].start()
    t0 = time.monotonic()
    decreases = 0
    last = before
    while time.monotonic() - t0 < 90:
        now = api_pairs(platform["api"].url)
        decreases += sum(
            1
            for p, s in last.items()
            if now.get(p, {"active_events": 0})["active_events"] < s["active_events"]
        )
        last = now
        if compare(truth, now)["pairs_differing"] == 0:
            break
        time.sleep(0.5)
    caught_up = time.monotonic() - t0
    figures, _ = wait_exact(platform["api"].url, truth, 30)
    rest = api_pairs(platform["api"].url)
    time.sleep(1.5)
    for f in followers:
        f.stop()
    record(
        "8 aggregator stopped while events arrive",
        acknowledged=load.outcomes.acknowledged,
        lost=figures["lost"],
        duplicated=figures["duplicated"],
        catch_up_s=round(caught_up, 1),
        count_decreases=decreases,
        sse_clients=len(followers),
        total_s=round(time.monotonic() - started, 1),
    )
    assert caught_up < 90
    assert decreases == 0
    assert figures == {"lost": 0, "duplicated": 0, "pairs_differing": 0}
    for f in followers:
        assert f.snapshot() == rest


def test_api_killed_with_stream_clients(platform: Harness, acknowledged: dict[Any, Any]) -> None:
    """Scenario 9: every stream client reconnects after the API is SIGKILLed and converges."""
    started = time.monotonic()
    clients = int(scale(5, 20))
    followers = [StreamFollower(platform["api"].url) for _ in range(clients)]
    for f in followers:
        f.start()
    wait_until(lambda: all(f.connects >= 1 for f in followers), 30)
    api = platform["api"]
    api.kill()
    api.start()
    api.wait_ready(60)
    wait_until(lambda: all(f.connects >= 2 for f in followers), 60)
    rest = api_pairs(api.url)
    truth = ground_truth(acknowledged)
    converged = wait_until(lambda: all(f.snapshot() == rest for f in followers), 30)
    for f in followers:
        f.stop()
    record(
        "9 api SIGKILL with stream clients",
        sse_clients=clients,
        reconnected=clients,
        converge_s=round(converged, 1),
        total_s=round(time.monotonic() - started, 1),
    )
    assert compare(truth, rest) == {"lost": 0, "duplicated": 0, "pairs_differing": 0}


def _index_rows(api_url: str) -> dict[str, dict[str, Any]]:
    with httpx.Client(base_url=api_url, timeout=60) as client:
        r = client.get("/v1/events", params={"format": "ndjson"})
        r.raise_for_status()
        return {d["key"]: d for d in map(orjson.loads, r.text.splitlines())}


def test_api_sigkilled_while_events_arrive_its_index_equals_the_truth(
    platform: Harness, partner_keys: dict[str, str]
) -> None:
    started = time.monotonic()
    seed = 71
    load = LoadGenerator(platform["ingest"].url, partner_keys, rate=scale(50, 100), threads=4, seed=seed)
    load.start()
    api = platform["api"]
    rng = random.Random(seed)
    kills = int(scale(2, 4))
    for _ in range(kills):
        time.sleep(rng.uniform(1.5, 3.5))
        api.kill()  # SIGKILL mid-transaction: SQLite keeps rows and offsets together
        api.start()
        api.wait_ready(120)
    time.sleep(1)
    load.stop()
    truth = {f"{p}/{e}": body for (p, e), body in load.outcomes.truth_events.items()}

    def figures() -> dict[str, int]:
        rows = {k: v for k, v in _index_rows(api.url).items() if k.split("/", 1)[1].startswith(f"lg{seed}-")}
        lost = sum(1 for k, b in truth.items() if k not in rows or rows[k]["revision"] < b["revision"])
        extra = sum(1 for k, row in rows.items() if k not in truth or row["revision"] > truth[k]["revision"])
        wrong = sum(
            1
            for k, b in truth.items()
            if k in rows
            and (rows[k]["revision"], rows[k]["status"], rows[k]["title"])
            == (b["revision"], b["status"], b["title"])
        )
        return {"lost": lost, "duplicated": extra, "differing": len(truth) - wrong}

    def settled() -> bool:
        return figures() == {"lost": 0, "duplicated": 0, "differing": 0}

    with contextlib.suppress(TimeoutError):
        wait_until(settled, 60, interval=1)
    result = figures()

    def consistent() -> bool:
        body = httpx.get(api.url + "/v1/reconcile", timeout=60).json()
        return bool(body["caught_up"]) and body["differing"] == []

    reconciled = True
    try:
        wait_until(consistent, 90, interval=1)
    except TimeoutError:
        reconciled = False
    record(
        "api SIGKILLed while events arrive: event index",
        kills=kills,
        acknowledged=len(truth),
        lost=result["lost"],
        duplicated=result["duplicated"],
        rows_differing=result["differing"],
        reconcile_consistent=reconciled,
        total_s=round(time.monotonic() - started, 1),
    )
    assert result == {"lost": 0, "duplicated": 0, "differing": 0}
    assert reconciled
