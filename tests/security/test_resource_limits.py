"""OWASP API4 (unrestricted resource consumption) against ``handshake serve ingest`` as a process.

Oversized bodies (declared by Content-Length, or chunked without one, or a single 100 MB
string) are refused with 413 before being read whole: the answer goes out at once, the rest
of the upload is read and discarded up to twice the body limit in all (a lingering close, so
clients that write everything before reading, like urllib, still get the 413), then the
connection is closed: the client is cut off after a small fraction of what it tried to send,
and the server's resident memory (sampled from /proc/<pid>/status while the upload runs) grows
by less than 20 MiB.
Oversized batches and deeply nested JSON get clear 413/400 problem answers.
"""

from __future__ import annotations

import contextlib
import errno
import select
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from handshake.settings import KafkaSettings
from handshake.topics import ensure_topics
from services.ingest.domain import generate_key
from services.ingest.partners import create_partner
from tests.harness import Harness, Service
from tests.security.conftest import event, ingest_client, rss_kib
from tests.security.report import LONG, record

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
LIMIT_BYTES = 5 * MiB  # IngestSettings.max_body_bytes default
MAX_GROWTH_KIB = 20 * 1024


@dataclass
class Upload:
    status: int | None = None
    body: bytes = b""
    sent: int = 0
    seconds: float = 0.0
    closed_by_server: bool = False
    headers: dict[str, str] = field(default_factory=dict)


def chunks_of(total: int, size: int = 64 * 1024, fill: bytes = b"A") -> Iterator[bytes]:
    block = fill * size
    left = total
    while left > 0:
        yield block[: min(size, left)]
        left -= size


def _parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes] | None:
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    length = int(headers.get("content-length", "0"))
    if len(rest) < length:
        return None
    return status, headers, rest[:length]


def _chunked(body: Iterator[bytes]) -> Iterator[bytes]:
    for piece in body:
        yield b"%x\r\n%s\r\n" % (len(piece), piece)
    yield b"0\r\n\r\n"


def upload(
    port: int, path: str, key: str, body: Iterator[bytes], *, length: int | None, timeout: float = 30.0
) -> Upload:
    """Stream ``body`` over a raw socket, and keep streaming after the answer, like a hostile client.

    ``length=None`` sends ``Transfer-Encoding: chunked`` (no Content-Length). ``sent`` is how
    much the server took before it hung up: a server that answers 413 but keeps reading (and
    discarding) the rest of the upload would take it all.
    """
    out = Upload()
    head = [
        f"POST {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        f"Authorization: Bearer {key}",
        "Content-Type: application/json",
        f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked",
    ]
    wire = body if length is not None else _chunked(body)
    started = time.monotonic()
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        sock.setblocking(False)
        pending = b""
        received = b""
        finished_body = False
        deadline = started + timeout
        while time.monotonic() < deadline:
            if finished_body and out.status is not None:
                break
            readable, writable, _ = select.select([sock], [] if finished_body else [sock], [], 0.5)
            if readable:
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    data = b""
                if not data:
                    out.closed_by_server = True
                    break
                received += data
                parsed = _parse_response(received)
                if parsed and out.status is None:
                    out.status, out.headers, out.body = parsed
                    out.seconds = time.monotonic() - started
            if writable and not finished_body:
                if not pending:
                    pending = next(wire, b"")
                    finished_body = not pending
                if pending:
                    try:
                        n = sock.send(pending)
                    except OSError as exc:
                        if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                            continue
                        if exc.errno in (errno.EPIPE, errno.ECONNRESET):
                            out.closed_by_server = True  # hung up on us: read the answer it left
                            finished_body = True
                            continue
                        raise
                    out.sent += n
                    pending = pending[n:]
    finally:
        sock.close()
    return out


class RssSampler:
    """Samples VmRSS of ``pid`` every few milliseconds in a thread; ``peak`` in KiB."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = rss_kib(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, KeyError):
                self.peak = max(self.peak, rss_kib(self.pid))
            time.sleep(0.005)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _big_string_event(total: int) -> Iterator[bytes]:
    prefix = orjson.dumps(event("huge"))[:-1] + b',"description":"'
    yield prefix
    yield from chunks_of(total - len(prefix) - 2, fill=b"x")
    yield b'"}'


@pytest.fixture(scope="module")
def served(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Service, str, str]]:
    """One ``handshake serve ingest`` process (own topics) for the module's scenarios."""
    tag = uuid.uuid4().hex[:10]
    settings = KafkaSettings(
        kafka_bootstrap=kafka_bootstrap,
        events_topic=f"t{tag}.exchange-events.v1",
        partners_topic=f"t{tag}.partners.v1",
        pair_stats_topic=f"t{tag}.pair-stats.v1",
        dead_letter_topic=f"t{tag}.dead-letter.v1",
    )
    ensure_topics(kafka_bootstrap, settings.topic_specs())
    pid, key = create_partner(settings, "Big Sender", rate=10_000)
    harness = Harness(kafka_bootstrap, tmp_path_factory.mktemp("limits"), settings=settings)
    try:
        service = harness.add("ingest").start()
        service.wait_ready(60)
        yield service, pid, key
    finally:
        harness.stop()


def test_oversized_bodies_are_refused_before_being_read(served: tuple[Service, str, str]) -> None:
    service, pid_, key = served
    assert service.proc is not None
    pid = service.proc.pid
    with ingest_client(service, headers={"Authorization": f"Bearer {key}"}) as client:
        assert client.post("/v1/events", json=event("warm")).status_code == 202  # start-up allocations done
    size = (200 if LONG else 50) * MiB
    big = 100_000_000
    stranger = generate_key(pid_)  # well-formed, wrong secret
    # name -> (path, body factory, Content-Length or None for chunked, key, expected status, total bytes)
    scenarios: dict[str, tuple[str, Any, int | None, str, int, int]] = {
        "content_length_50MiB": ("/v1/events", lambda: chunks_of(size), size, key, 413, size),
        "chunked_50MiB": ("/v1/events", lambda: chunks_of(size), None, key, 413, size),
        "batch_content_length_50MiB": ("/v1/events/batch", lambda: chunks_of(size), size, key, 413, size),
        "batch_chunked_50MiB": ("/v1/events/batch", lambda: chunks_of(size), None, key, 413, size),
        "string_100MB": ("/v1/events", lambda: _big_string_event(big), big, key, 413, big),
        "string_100MB_chunked": ("/v1/events", lambda: _big_string_event(big), None, key, 413, big),
        "no_valid_key_chunked_50MiB": ("/v1/events", lambda: chunks_of(size), None, stranger, 401, size),
    }
    figures: dict[str, Any] = {}
    for name, (path, body, length, use_key, expected, total) in scenarios.items():
        before = rss_kib(pid)
        with RssSampler(pid) as sampler:
            result = upload(service.port, path, use_key, body(), length=length)
        after = rss_kib(pid)
        figures[name] = {
            "status": result.status,
            "taken_MiB": round(result.sent / MiB, 2),
            "of_MiB": round(total / MiB, 1),
            "answer_s": round(result.seconds, 3),
            "closed": result.closed_by_server,
            "rss_growth_KiB": after - before,
            "peak_growth_KiB": sampler.peak - before,
        }
        assert result.status == expected, (name, result.status, result.body[:300])
        problem = orjson.loads(result.body)
        assert problem["status"] == expected, problem
        if expected == 413:
            assert str(LIMIT_BYTES) in problem["detail"], problem
        assert result.headers["content-type"] == "application/problem+json"
        assert result.headers.get("connection") == "close", (name, result.headers)
        # the server hung up after a small part (the limit plus socket buffers), never took it all
        assert result.closed_by_server, f"{name}: the server kept the connection after refusing the body"
        assert result.sent < LIMIT_BYTES + 16 * MiB, (name, figures[name])
        assert result.sent < total / 2, (name, figures[name])
        assert result.seconds < 10, (name, figures[name])
        assert figures[name]["peak_growth_KiB"] < MAX_GROWTH_KIB, (name, figures[name])
        assert figures[name]["rss_growth_KiB"] < MAX_GROWTH_KIB, (name, figures[name])
    # the service is still fine, and a normal keep-alive client keeps its connection
    with ingest_client(service, headers={"Authorization": f"Bearer {key}"}) as client:
        assert client.get("/readyz").status_code == 200
        resp = client.post("/v1/events", json=event("after"))
        assert resp.status_code == 202, resp.text
        assert resp.headers.get("connection") != "close"
    record("resource_limits.oversized_bodies", figures)


def _write_all_then_read(port: int, head: list[str], body: bytes) -> bytes:
    """A client that writes its whole request before reading anything, then reads to the end."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def test_a_client_that_writes_the_whole_body_first_reads_the_413(served: tuple[Service, str, str]) -> None:
    """Like nginx's lingering close: the answer goes out, the rest of the body is read and
    discarded (bounded), then the connection closes, so urllib and the like see the 413, not a reset."""
    import urllib.error
    import urllib.request

    service, _, key = served
    assert service.proc is not None
    pid = service.proc.pid
    body = b"[" + b" " * (6 * MiB) + b"]"  # a 6 MiB batch: over the 5 MiB limit
    figures: dict[str, Any] = {}
    with RssSampler(pid) as sampler:
        before = rss_kib(pid)
        for path in ("/v1/events/batch", "/v1/events"):
            request = urllib.request.Request(
                f"{service.url}{path}",
                data=body,
                headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
                method="POST",
            )
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=30)
            assert refused.value.code == 413, path
            assert refused.value.headers["content-type"] == "application/problem+json"
            problem = orjson.loads(refused.value.read())
            assert problem["status"] == 413 and str(LIMIT_BYTES) in problem["detail"], problem
            figures[f"urllib{path}"] = refused.value.code
        for framing in ("content-length", "chunked"):
            head = [
                "POST /v1/events/batch HTTP/1.1",
                f"Host: 127.0.0.1:{service.port}",
                f"Authorization: Bearer {key}",
                "Content-Type: application/json",
            ]
            if framing == "chunked":
                wire = b"".join(_chunked(iter([body[i : i + MiB] for i in range(0, len(body), MiB)])))
                head.append("Transfer-Encoding: chunked")
            else:
                wire = body
                head.append(f"Content-Length: {len(body)}")
            parsed = _parse_response(_write_all_then_read(service.port, head, wire))
            assert parsed is not None, framing
            status, headers, answer = parsed
            assert status == 413 and headers["connection"] == "close", (framing, status, headers)
            assert orjson.loads(answer)["status"] == 413
            figures[f"raw_socket_{framing}"] = status
        after = rss_kib(pid)
    figures["peak_growth_KiB"] = sampler.peak - before
    assert sampler.peak - before < MAX_GROWTH_KIB, figures
    assert after - before < MAX_GROWTH_KIB, figures
    record("resource_limits.write_first_clients", figures)


def test_too_many_records_deep_nesting_and_wrong_keys_cheaply(served: tuple[Service, str, str]) -> None:
    service, pid_, key = served
    headers = {"Authorization": f"Bearer {key}"}
    figures: dict[str, Any] = {}
    with ingest_client(service, headers=headers) as client:
        items = [event(f"b-{i}") for i in range(1001)]
        for kind, content, ctype in (
            ("json", orjson.dumps(items), "application/json"),
            ("ndjson", b"\n".join(orjson.dumps(i) for i in items), "application/x-ndjson"),
        ):
            resp = client.post("/v1/events/batch", content=content, headers={"Content-Type": ctype})
            assert resp.status_code in (413, 422), resp.text
            assert resp.headers["content-type"] == "application/problem+json"
            assert "1000" in resp.json()["detail"], resp.json()
            figures[f"batch_1001_{kind}"] = {"status": resp.status_code, "detail": resp.json()["detail"]}

        depth = 10_000
        nests = {
            "arrays": b"[" * depth + b"]" * depth,
            "objects": b'{"a":' * depth + b"1" + b"}" * depth,
            "in_field": b'{"event_id":"deep","title":' + b"[" * depth + b"]" * depth + b"}",
        }
        for name, raw in nests.items():
            for path in ("/v1/events", "/v1/events/batch"):
                started = time.monotonic()
                resp = client.post(path, content=raw, headers={"Content-Type": "application/json"})
                elapsed = time.monotonic() - started
                assert resp.status_code == 400, (name, path, resp.status_code, resp.text[:300])
                assert resp.headers["content-type"] == "application/problem+json"
                assert "nested" in resp.json()["detail"] or "depth" in resp.json()["detail"], resp.json()
                figures[f"nested_{name}{path.removeprefix('/v1/events')}"] = round(elapsed, 3)
        # NDJSON: a too-deep line is that record's error only
        resp = client.post(
            "/v1/events/batch",
            content=nests["arrays"] + b"\n" + orjson.dumps(event("fine")),
            headers={"Content-Type": "application/x-ndjson"},
        )
        assert resp.status_code == 200, resp.text
        assert [r["status"] for r in resp.json()["results"]] == ["rejected", "accepted"]
        assert client.get("/readyz").status_code == 200
    # the key is checked before the body is looked at: a stranger cannot make ingest parse anything
    stranger = generate_key(pid_)
    with ingest_client(service, headers={"Authorization": f"Bearer {stranger}"}) as client:
        resp = client.post(
            "/v1/events/batch", content=nests["arrays"], headers={"Content-Type": "application/json"}
        )
        assert resp.status_code == 401
    record("resource_limits.batch_and_nesting", figures)
