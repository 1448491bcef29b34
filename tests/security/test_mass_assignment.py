"""OWASP API3 (mass assignment): server-owned and unknown fields are refused, naming the field.

Single pushes answer 422 with a JSON pointer per offending field; in a batch (JSON array and
NDJSON) only the offending records are rejected and the good ones are still produced, with
the server's own ``partner_id`` and ``received_at``.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from handshake.settings import KafkaSettings
from schemas.records import decode_event
from services.ingest.testing import ingest_settings, running_ingest
from tests.security.conftest import event, read_topic
from tests.security.report import record

pytestmark = pytest.mark.integration

FORGED_TIME = "2000-01-01T00:00:00Z"

#: name -> (extra fields, the pointers the 422 must name)
CASES: dict[str, tuple[dict[str, Any], set[str]]] = {
    "partner_id": ({"partner_id": "someone-else"}, {"/partner_id"}),
    "received_at": ({"received_at": FORGED_TIME}, {"/received_at"}),
    "both server fields": (
        {"partner_id": "someone-else", "received_at": FORGED_TIME},
        {"/partner_id", "/received_at"},
    ),
    "unknown field": ({"is_admin": True}, {"/is_admin"}),
    "unknown nested": ({"delegations": [{"country": "DE", "verified": True}]}, {"/delegations/0/verified"}),
    "null partner_id": ({"partner_id": None}, {"/partner_id"}),
}


async def test_server_owned_and_unknown_fields_are_refused(
    kafka_settings: KafkaSettings, partner: Any
) -> None:
    settings = ingest_settings(kafka_settings)
    pid, key = await partner("Mass Assigner")
    started = datetime.now(UTC)
    accepted: set[str] = set()
    async with running_ingest(settings, key) as client:
        for name, (extra, pointers) in CASES.items():
            resp = await client.post("/v1/events", json=event(f"single-{len(accepted)}", **extra))
            assert resp.status_code == 422, (name, resp.text)
            assert resp.headers["content-type"] == "application/problem+json"
            body = resp.json()
            assert {e["pointer"] for e in body["errors"]} == pointers, (name, body)
            for pointer in pointers:
                field = pointer.rsplit("/", 1)[1]
                assert field in body["detail"], (name, body["detail"])
            if pointers & {"/partner_id", "/received_at"}:
                assert "server-owned" in body["detail"]

        names = list(CASES)
        good = [event("good-1"), event("good-2")]
        bad = [event(f"bad-{i}", **CASES[n][0]) for i, n in enumerate(names)]
        items = [good[0], *bad, good[1]]
        for kind, content, ctype in (
            ("json", orjson.dumps(items), "application/json"),
            (
                "ndjson",
                b"\n".join(orjson.dumps({**i, "event_id": "nd-" + i["event_id"]}) for i in items),
                "application/x-ndjson",
            ),
        ):
            resp = await client.post("/v1/events/batch", content=content, headers={"Content-Type": ctype})
            assert resp.status_code == 200, (kind, resp.text)
            body = resp.json()
            assert (body["accepted"], body["rejected"]) == (2, len(bad)), (kind, body)
            results = body["results"]
            assert [r["status"] for r in results] == ["accepted", *["rejected"] * len(bad), "accepted"]
            for name, result in zip(names, results[1:-1], strict=True):
                assert {e["pointer"] for e in result["errors"]} == CASES[name][1], (kind, name, result)
                assert all(e["code"] == "extra_forbidden" for e in result["errors"])
            accepted.update(r["key"] for r in results if r["status"] == "accepted")

    records = await asyncio.to_thread(read_topic, settings.kafka_bootstrap, settings.events_topic)
    assert {r.key.decode() for r in records} == accepted
    assert len(records) == 4
    for r in records:
        ev = decode_event(r.key, r.value, r.headers)
        assert ev.partner_id == pid
        assert ev.received_at >= started - timedelta(seconds=5)  # the server's clock, not a forged one
        assert FORGED_TIME[:10].encode() not in r.value
        assert b"someone-else" not in r.value and b"is_admin" not in r.value and b"verified" not in r.value
    record(
        "mass_assignment",
        {"single_cases": len(CASES), "batch_records": 2 * len(items), "produced": len(records)},
    )
