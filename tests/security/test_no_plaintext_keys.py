"""OWASP API8 (security misconfiguration): partner keys never appear in plaintext anywhere.

Partners are created with ``create_partner``; their keys are used (well and badly) against
``handshake serve ingest`` running at DEBUG with its log captured. Then neither a key nor its
secret part may be found in the ingest log, the metrics page, any record (key, value,
headers) of the partners and events topics, or any file under the test's data directories
(its tmp dir, and the broker's segment files of this test's topics when the session runs the
native broker). The sha256 hash of each key is what the partners topic holds.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from handshake.settings import KafkaSettings
from services.ingest.domain import hash_key
from services.ingest.partners import revoke_partner
from tests.security.conftest import bearer, event, on_native_broker, read_topic
from tests.security.report import record

pytestmark = pytest.mark.integration


def _needles(pid: str, key: str) -> dict[str, bytes]:
    secret = key.removeprefix(f"hsk_{pid}_")
    assert len(secret) >= 32
    return {
        f"{pid} key": key.encode(),
        f"{pid} secret": secret.encode(),
        f"{pid} secret head": secret[:16].encode(),
    }


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_keys_are_stored_and_logged_only_as_hashes(
    kafka_settings: KafkaSettings,
    ingest_process: Any,
    partner: Any,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    made = [asyncio.run(partner(name, 1000.0)) for name in ("Plain One", "Plain Two")]
    service = ingest_process(log_level="DEBUG")
    (pid1, key1), (pid2, key2) = made
    with httpx.Client(base_url=service.url, timeout=30) as client:
        assert client.post("/v1/events", json=event("k-1"), headers=bearer(key1)).status_code == 202
        resp = client.post(
            "/v1/events/batch", json=[event("k-2"), event("k-3", title="")], headers=bearer(key2)
        )
        assert resp.status_code == 200
        assert client.delete("/v1/events/k-1", headers=bearer(key1)).status_code == 202
        # failures are where keys tend to leak into logs: near-miss keys, wrong schemes, odd places
        for headers in (
            bearer(key1 + "x"),
            bearer(key1[:-2]),
            {"Authorization": f"Basic {key2}"},
            {"Authorization": key2},
            {"X-Api-Key": key1},
        ):
            assert client.post("/v1/events", json=event("k-x"), headers=headers).status_code == 401
        assert client.post(f"/v1/events?api_key={key2}", json=event("k-y")).status_code == 401
        assert (
            client.post(
                "/v1/events", content=b"{", headers={**bearer(key1), "Content-Type": "application/json"}
            ).status_code
            == 400
        )
        metrics = client.get("/metrics").text.encode()
        asyncio.run(asyncio.to_thread(revoke_partner, kafka_settings, pid2))
        for _ in range(100):
            if client.post("/v1/events", json=event("k-z"), headers=bearer(key2)).status_code == 401:
                break
        else:
            raise AssertionError("revocation not applied")
    service.stop()  # flush and close the log
    log_text = service.log_path.read_bytes()
    assert b"ingest started" in log_text, "the log was not captured"

    partners = read_topic(kafka_settings.kafka_bootstrap, kafka_settings.partners_topic)
    events = read_topic(kafka_settings.kafka_bootstrap, kafka_settings.events_topic)
    assert partners and events

    haystacks: dict[str, bytes] = {"ingest log": log_text, "metrics": metrics}
    for topic, records in (("partners", partners), ("events", events)):
        for r in records:
            parts = [r.key or b"", r.value or b""] + [k.encode() + b"=" + v for k, v in r.headers]
            haystacks[f"{topic}@{r.partition}:{r.offset}"] = b"\n".join(parts)
    roots = [tmp_path]
    cluster = on_native_broker(request)
    if cluster is not None:
        topics = (kafka_settings.partners_topic, kafka_settings.events_topic)
        roots.extend(
            d for d in Path(cluster.data_dir).rglob("*") if d.is_dir() and d.name.rsplit("-", 1)[0] in topics
        )
    files = [f for root in roots for f in _files(root)]
    for f in files:
        haystacks[str(f)] = f.read_bytes()

    needles = {**_needles(pid1, key1), **_needles(pid2, key2)}
    found = [(n, where) for where, hay in haystacks.items() for n, needle in needles.items() if needle in hay]
    assert not found, f"plaintext key material found: {found}"

    # the hash is what is stored
    partner_values = b"\n".join(r.value or b"" for r in partners)
    for key in (key1, key2):
        assert hash_key(key).encode() in partner_values
    record(
        "no_plaintext_keys",
        {
            "log_bytes": len(log_text),
            "log_lines": log_text.count(b"\n"),
            "partner_records": len(partners),
            "event_records": len(events),
            "files_scanned": len(files),
            "broker_segments_scanned": cluster is not None,
            "needles": len(needles),
        },
    )
