"""OWASP API1/API5 (broken object-level / function-level authorisation) against the real broker.

Partner A tries to read, overwrite, correct and cancel partner B's event. Identity is
(partner, event_id) and the record key always carries the *authenticated* partner's id, so
every attempt either lands in A's own namespace (``A/event_id``) or is refused; B's record
on the events topic stays byte-for-byte what B wrote.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any

import pytest

from handshake.settings import KafkaSettings
from schemas.records import decode_event
from services.ingest.testing import ingest_settings, running_ingest
from tests.security.conftest import bearer, event, read_topic
from tests.security.report import record

pytestmark = pytest.mark.integration


async def test_partner_a_cannot_touch_partner_b_events(kafka_settings: KafkaSettings, partner: Any) -> None:
    settings = ingest_settings(kafka_settings)
    pid_a, key_a = await partner("Partner A")
    pid_b, key_b = await partner("Partner B")
    a = bearer(key_a)
    accepted_a: list[str] = []  # keys A's requests were told were written
    async with running_ingest(settings, key_b) as client:
        # B writes two events
        for eid in ("shared-1", "b-only"):
            resp = await client.post("/v1/events", json=event(eid, title=f"B's {eid}"))
            assert resp.status_code == 202, resp.text
            assert resp.json()["key"] == f"{pid_b}/{eid}"

        # A cannot see or cancel them: "not found" (never 403, which would confirm they exist)
        for eid in ("shared-1", "b-only", "does-not-exist"):
            resp = await client.delete(f"/v1/events/{eid}", headers=a)
            assert resp.status_code == 404, resp.text
            assert resp.headers["content-type"] == "application/problem+json"
            assert pid_b not in resp.text
        missing = await client.delete("/v1/events/does-not-exist", headers=a)
        hidden = await client.delete("/v1/events/b-only", headers=a)
        # the same answer whether B's event exists or not (apart from the echoed id)
        assert hidden.json()["detail"].replace("b-only", "X") == missing.json()["detail"].replace(
            "does-not-exist", "X"
        )

        # A posts the same event_id: lands in A's namespace as a *new* event (not a conflict with B's)
        resp = await client.post("/v1/events", json=event("shared-1", title="A's overwrite"), headers=a)
        assert resp.status_code == 202, resp.text
        assert resp.json() == {"status": "accepted", "key": f"{pid_a}/shared-1", "revision": 1}
        accepted_a.append(resp.json()["key"])

        # A "corrects" B's events with higher revisions: again only A's namespace
        for eid, rev in (("shared-1", 5), ("b-only", 9)):
            resp = await client.post("/v1/events", json=event(eid, revision=rev, title="hijack"), headers=a)
            assert resp.status_code == 202, resp.text
            assert resp.json() == {"status": "accepted", "key": f"{pid_a}/{eid}", "revision": rev}
            accepted_a.append(resp.json()["key"])

        # the batch endpoint and query/header smuggling do not change the namespace either
        resp = await client.post(
            f"/v1/events/batch?partner_id={pid_b}",
            json=[event("b-only", revision=20, title="batch hijack")],
            headers={**a, "X-Partner-Id": pid_b, "Forwarded": f"for={pid_b}"},
        )
        assert resp.status_code == 200, resp.text
        [result] = resp.json()["results"]
        assert (result["status"], result["key"]) == ("accepted", f"{pid_a}/b-only")
        accepted_a.append(result["key"])

        # A cancelling its own copy cancels A's, not B's
        resp = await client.delete("/v1/events/shared-1", headers=a)
        assert resp.status_code == 202 and resp.json()["key"] == f"{pid_a}/shared-1", resp.text
        accepted_a.append(resp.json()["key"])

        # naming B anywhere is refused
        refusals: dict[str, tuple[int, str]] = {}
        attempts: dict[str, dict[str, Any]] = {
            "body partner_id": event("x-1", partner_id=pid_b),
            "key-like event_id": event(f"{pid_b}/shared-1"),
            "key-like event_id, revision": event(f"{pid_b}/shared-1", revision=99),
            "traversal event_id": event("../shared-1"),
            "other ce_source": event("x-2", ce_source=f"/partners/{pid_b}"),
        }
        for name, body in attempts.items():
            for path, payload in (("/v1/events", body), ("/v1/events/batch", [body])):
                resp = await client.post(path, json=payload, headers=a)
                if path == "/v1/events":
                    assert resp.status_code == 422, (name, resp.text)
                    assert resp.headers["content-type"] == "application/problem+json"
                    pointers = {e["pointer"] for e in resp.json()["errors"]}
                    refusals[name] = (resp.status_code, ",".join(sorted(pointers)))
                else:
                    assert resp.status_code == 200, resp.text
                    [result] = resp.json()["results"]
                    assert result["status"] == "rejected", (name, result)
        assert refusals["body partner_id"][1] == "/partner_id"
        assert refusals["key-like event_id"][1] == "/event_id"
        assert refusals["traversal event_id"][1] == "/event_id"
        # an encoded slash in the DELETE path cannot reach B's key either
        for path in (
            f"/v1/events/{pid_b}%2Fshared-1",
            f"/v1/events/{pid_b}/shared-1",
            "/v1/events/..%2Fb-only",
        ):
            resp = await client.delete(path, headers=a)
            assert resp.status_code in (404, 405), (path, resp.status_code, resp.text)

        # B's own view is intact: resending the original is a duplicate, its revision is still 1
        resp = await client.post("/v1/events", json=event("shared-1", title="B's shared-1"))
        assert resp.json() == {"status": "duplicate", "key": f"{pid_b}/shared-1", "revision": 1}

    started = time.monotonic()
    records = await asyncio.to_thread(read_topic, settings.kafka_bootstrap, settings.events_topic)
    by_key: dict[bytes, list[Any]] = defaultdict(list)
    for r in records:
        by_key[r.key].append(r)
    b_keys = {k for k in by_key if k.startswith(f"{pid_b}/".encode())}
    assert b_keys == {f"{pid_b}/shared-1".encode(), f"{pid_b}/b-only".encode()}
    for k in b_keys:
        [only] = by_key[k]  # exactly the one record B wrote: nothing else under B's keys
        ev = decode_event(only.key, only.value, only.headers)
        assert (ev.partner_id, ev.revision, ev.title) == (pid_b, 1, f"B's {k.decode().split('/')[1]}")
        assert dict(only.headers)["ce_source"] == f"/partners/{pid_b}".encode()
    a_records = [r for r in records if r.key.startswith(f"{pid_a}/".encode())]
    assert len(a_records) == len(accepted_a)
    assert sorted(r.key.decode() for r in a_records) == sorted(accepted_a)
    for r in a_records:
        ev = decode_event(r.key, r.value, r.headers)
        assert ev.partner_id == pid_a
        assert dict(r.headers)["ce_source"] == f"/partners/{pid_a}".encode()
    assert len(records) == len(b_keys) + len(a_records)
    record(
        "bola",
        {
            "b_records": len(b_keys),
            "a_records_in_own_namespace": len(a_records),
            "refused_attempts": len(refusals) * 2 + 3,
            "topic_read_s": round(time.monotonic() - started, 2),
        },
    )
