"""The event index against the real broker: ingest to /v1/events, moves, restart, rebuild, reconcile."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.harness import Harness
from tests.loadgen import LoadGenerator
from tests.samples import EVENT

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def platform(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    harness = Harness(kafka_bootstrap, tmp_path_factory.mktemp("index-platform"))
    try:
        harness.start_all()
        yield harness
    finally:
        harness.stop()


@pytest.fixture(scope="module")
def partner(platform: Harness) -> tuple[str, str]:
    return platform.partner("index-partner")


def metric(api: str, name: str) -> float:
    text = httpx.get(api + "/metrics", timeout=10).text
    m = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.M)
    assert m, name
    return float(m.group(1))


def all_events(api: str) -> dict[str, dict[str, Any]]:
    with httpx.Client(base_url=api, timeout=30) as c:
        r = c.get("/v1/events", params={"format": "ndjson", "sort": "received_at"})
        assert r.status_code == 200
        return {d["key"]: d for d in map(orjson.loads, r.text.splitlines())}


def wait(predicate: Any, within: float, what: str) -> float:
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < within, what
        time.sleep(0.02)
    return time.monotonic() - started


def test_pushed_events_appear_within_a_second_and_corrections_move_them(
    platform: Harness, partner: tuple[str, str]
) -> None:
    partner_id, key = partner
    auth = {"Authorization": f"Bearer {key}"}
    api, ingest = platform["api"].url, platform["ingest"].url
    event = {
        **EVENT,
        "event_id": "move-1",
        "title": "Ping-pong goodwill tour",
        "host_country": "CN",
        "delegations": [{"country": "USA", "participants": 9}],
    }
    assert httpx.post(ingest + "/v1/events", json=event, headers=auth, timeout=10).status_code == 202
    found = lambda params: httpx.get(api + "/v1/events", params=params, timeout=5).json()["items"]  # noqa: E731
    seconds = wait(lambda: found({"pair": "US-CN"}), 5, "event not indexed")
    assert seconds < 1.0, f"indexed after {seconds:.3f}s"
    assert found({"q": "goodwill"})[0]["key"] == f"{partner_id}/move-1"
    moved = {**event, "revision": 2, "host_country": "FR", "delegations": [{"country": "DE"}]}
    assert httpx.post(ingest + "/v1/events", json=moved, headers=auth, timeout=10).status_code == 202
    wait(lambda: found({"pair": "DE-FR"}), 5, "correction not indexed")
    assert found({"pair": "CN-US"}) == []
    one = httpx.get(f"{api}/v1/events/{partner_id}/move-1", timeout=5).json()
    assert one["revision"] == 2 and one["pairs"] == ["DE-FR"]


def test_mixed_load_reconciles_then_restart_resumes_and_a_lost_file_is_rebuilt(
    platform: Harness, partner: tuple[str, str]
) -> None:
    partner_id, key = partner
    load = LoadGenerator(
        platform["ingest"].url,
        {partner_id: key},
        rate=150,
        threads=3,
        seed=17,
        correction_ratio=0.25,
        cancel_ratio=0.1,
    )
    load.start()
    time.sleep(4)
    load.stop()
    assert load.outcomes.acknowledged > 100
    # duplicates: the same revisions again (answered "duplicate", changing nothing)
    rng = random.Random(3)
    with httpx.Client(base_url=platform["ingest"].url, headers={"Authorization": f"Bearer {key}"}) as c:
        sent = [b for _, b in sorted(load.outcomes.truth_events.items()) if b["status"] != "cancelled"]
        for body in rng.sample(sent, 10):
            assert c.post("/v1/events", json=body).json()["status"] == "duplicate"
    api = platform["api"].url
    truth = {f"{p}/{e}": body for (p, e), body in load.outcomes.truth_events.items()}

    def agrees() -> bool:
        got = all_events(api)
        return all(
            k in got
            and got[k]["revision"] == b["revision"]
            and got[k]["status"] == b.get("status", "announced")
            for k, b in truth.items()
        )

    wait(agrees, 30, "index does not equal the acknowledged events")

    def consistent() -> bool:
        body = httpx.get(api + "/v1/reconcile", timeout=30).json()
        return body["caught_up"] and body["differing"] == [] and body["pairs"] > 10

    wait(consistent, 60, "aggregates and index never agreed")
    before = all_events(api)
    total_records = metric(api, "handshake_api_index_read_records_total")

    # a restart resumes from the stored offsets: it reads nothing it already had
    service = platform["api"]
    service.stop()
    service.start().wait_ready(60)
    assert metric(api, "handshake_api_index_read_records_total") == 0
    assert all_events(api) == before

    # a lost file is rebuilt from the topic: every record again, the same rows; once by the api
    # alone, once by catch-up worker processes (forced here by a backlog threshold of 1, with
    # small transactions so that the two workers interleave)
    for extra in ({}, {"HANDSHAKE_INDEX_CATCHUP_RECORDS": "1", "HANDSHAKE_INDEX_CATCHUP_BATCH": "40"}):
        service.stop()
        files = list(Path(platform.api_data()).glob("events.sqlite3*"))
        assert files
        for f in files:
            f.unlink()
        service.env.update(extra)
        service.start().wait_ready(60)
        assert metric(api, "handshake_api_index_read_records_total") >= total_records
        assert all_events(api) == before
        wait(consistent, 30, "not consistent after the rebuild")
    log = service.log_path.read_text()
    assert log.count("event index catch-up done") == 1, "the workers did not run"
    assert log.count("event index bulk merge done") == 1, "the rebuild by workers was not a bulk load"

    # a backlog on top of a full index (the api stopped while events arrived): the workers apply
    # the new records to the file itself (no bulk load), and the rows follow them
    service.stop()
    with httpx.Client(base_url=platform["ingest"].url, headers={"Authorization": f"Bearer {key}"}) as c:
        for k, doc in list(before.items())[:30]:
            body = {f: doc[f] for f in EVENT if f in doc} | {
                "revision": doc["revision"] + 1,
                "title": f"Backlog {k}",
            }
            assert c.post("/v1/events", json=body).status_code == 202, body
    service.start().wait_ready(60)
    after = all_events(api)
    assert {k: after[k]["title"] for k in list(before)[:30]} == {k: f"Backlog {k}" for k in list(before)[:30]}
    assert set(after) == set(before)
    log = service.log_path.read_text()
    assert log.count("event index catch-up done") == 2 and log.count("event index bulk merge done") == 1
    wait(consistent, 30, "not consistent after the catch-up")
