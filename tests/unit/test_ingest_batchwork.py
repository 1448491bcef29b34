"""Batch encoding: the same records inline and in worker processes; a dead worker costs nothing."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import orjson
import pytest

from schemas.records import encode_accepted, event_key
from services.ingest.batchwork import BatchEncoder, Encoded, Invalid, encode_batch
from services.ingest.domain import BodyError, parse_batch, validate_item
from tests.samples import EVENT as BASE

NOW = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)


def mixed_body(n: int) -> bytes:
    """NDJSON with valid records, invalid ones, a broken line and blank lines."""
    lines = []
    for i in range(n):
        if i % 7 == 3:
            lines.append(orjson.dumps({**BASE, "event_id": f"e-{i}", "host_country": "ZZ", "kind": "x"}))
        elif i % 11 == 5:
            lines.append(b'{"event_id": "broken",')
        else:
            lines.append(orjson.dumps({**BASE, "event_id": f"e-{i}", "revision": 1 + i % 3}))
        if i % 13 == 0:
            lines.append(b"   ")
    return b"\n".join(lines)


def test_encode_batch_is_the_per_record_pipeline() -> None:
    body = mixed_body(60)
    out = encode_batch(body, True, 1000, 32, "orchestra", NOW)
    items = parse_batch(body, True, 1000, 32)
    assert [r.position for r in out] == [i.index for i in items]
    assert [r.line for r in out] == [i.line for i in items]
    for item, got in zip(items, out, strict=True):
        event = validate_item(item)
        if event is None:
            assert got == Invalid(item.index, item.line, [e.as_dict() for e in item.errors])
            continue
        record, digest = encode_accepted(event, "orchestra", NOW)
        key = event_key("orchestra", event.event_id)
        assert got == Encoded(item.index, item.line, key, event.revision, event.status.value, digest, record)
    kinds = {type(r) for r in out}
    assert kinds == {Encoded, Invalid}


def test_a_body_that_cannot_be_read_is_a_body_error() -> None:
    with pytest.raises(BodyError) as exc:
        encode_batch(orjson.dumps(BASE), False, 1000, 32, "orchestra", NOW)
    assert (exc.value.status, exc.value.code) == (422, "batch_not_array")


def test_without_workers_everything_is_encoded_inline() -> None:
    encoder = BatchEncoder(0, inline_bytes=1)
    assert not encoder.warm(0.1)
    body = mixed_body(30)
    assert asyncio.run(encoder.encode(body, True, 1000, 32, "p", NOW)) == encode_batch(
        body, True, 1000, 32, "p", NOW
    )
    assert not encoder.pooled()


@pytest.fixture
def pooled() -> Iterator[BatchEncoder]:
    encoder = BatchEncoder(1, inline_bytes=1024)
    try:
        assert encoder.warm(60), "the worker process did not start"
        yield encoder
    finally:
        encoder.close()


def test_a_worker_encodes_exactly_what_inline_encoding_does(pooled: BatchEncoder) -> None:
    body = mixed_body(400)
    assert len(body) >= pooled.inline_bytes
    got = asyncio.run(pooled.encode(body, True, 1000, 32, "p", NOW))
    assert got == encode_batch(body, True, 1000, 32, "p", NOW)
    # a JSON array body too, and the body errors keep their status and code across the process
    array = orjson.dumps([{**BASE, "event_id": f"a-{i}"} for i in range(100)])
    assert asyncio.run(pooled.encode(array, False, 1000, 32, "p", NOW)) == encode_batch(
        array, False, 1000, 32, "p", NOW
    )
    with pytest.raises(BodyError) as exc:
        asyncio.run(pooled.encode(array, False, 10, 32, "p", NOW))
    assert (exc.value.status, exc.value.code) == (413, "too_many")
    assert pooled.pooled()


def test_a_killed_worker_costs_no_batch_and_a_new_pool_starts() -> None:
    others = set(multiprocessing.active_children())  # other tests' processes, if any are left
    pooled = BatchEncoder(1, inline_bytes=1024)
    try:
        assert pooled.warm(60), "the worker process did not start"
        [worker] = set(multiprocessing.active_children()) - others
        os.kill(worker.pid or 0, signal.SIGKILL)
        worker.join(10)
        body = mixed_body(400)
        expected = encode_batch(body, True, 1000, 32, "p", NOW)
        assert asyncio.run(pooled.encode(body, True, 1000, 32, "p", NOW)) == expected  # encoded inline
        assert pooled.restarts == 1
        deadline = time.monotonic() + 60
        while not pooled.pooled():  # the next big batch started a new pool
            assert time.monotonic() < deadline
            assert asyncio.run(pooled.encode(body, True, 1000, 32, "p", NOW)) == expected
            time.sleep(0.1)
        [fresh] = set(multiprocessing.active_children()) - others
        assert fresh.pid != worker.pid
        assert asyncio.run(pooled.encode(body, True, 1000, 32, "p", NOW)) == expected
    finally:
        pooled.close()


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def test_workers_do_not_outlive_a_killed_ingest() -> None:
    """SIGKILL never lets a parent close the worker's task queue: the worker watches it instead."""
    code = (
        "import multiprocessing, os, signal\n"
        "from services.ingest.batchwork import BatchEncoder\n"
        "assert BatchEncoder(1).warm(60)\n"
        "print(*(p.pid for p in multiprocessing.active_children()), flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    # not subprocess.run: an orphaned worker would hold the output pipe open (a hang, not a failure)
    with subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=root,
        env={**os.environ, "PYTHONPATH": root},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert proc.wait(60) == -signal.SIGKILL
    [pid] = [int(p) for p in line.split()]
    deadline = time.monotonic() + 15
    while running(pid):
        assert time.monotonic() < deadline, f"batch worker {pid} outlived its parent"
        time.sleep(0.1)
