"""`handshake push FILE`: a partner's bulk upload (NDJSON or CSV) through the batch endpoint."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from handshake.errors import HandshakeError

BATCH_RECORDS = 1000
BATCH_BYTES = 4 * 1024 * 1024  # under the 5 MiB limit, with room to spare

CSV_LIST_FIELDS = {"tags"}
CSV_INT_FIELDS = {"revision"}


@dataclass
class PushSummary:
    records: int = 0
    accepted: int = 0
    duplicate: int = 0
    rejected: int = 0
    retries: int = 0
    rejections: list[dict[str, Any]] = field(default_factory=list)


def csv_row_to_event(row: dict[str, str]) -> dict[str, Any]:
    """One CSV row to an event object.

    ``delegations`` is ``FR:20;DE;JP:5`` (country, optional participants), ``tags`` is ``a;b``;
    empty cells are left out so the server's defaults apply.
    """
    event: dict[str, Any] = {}
    for name, raw in row.items():
        if name is None:
            continue
        value = (raw or "").strip()
        if not value:
            continue
        if name == "delegations":
            delegations = []
            for item in value.split(";"):
                country, _, participants = item.strip().partition(":")
                entry: dict[str, Any] = {"country": country.strip()}
                if participants.strip():
                    entry["participants"] = (
                        int(participants) if participants.strip().isdigit() else participants
                    )
                delegations.append(entry)
            event[name] = delegations
        elif name in CSV_LIST_FIELDS:
            event[name] = [t.strip() for t in value.split(";") if t.strip()]
        elif name in CSV_INT_FIELDS and value.isdigit():
            event[name] = int(value)
        else:
            event[name] = value
    return event


def read_lines(path: Path) -> Iterator[bytes]:
    """Each record as one NDJSON line (CSV rows converted), blank lines skipped."""
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as f:
            for row in csv.DictReader(f):
                yield orjson.dumps(csv_row_to_event(row))
        return
    with path.open("rb") as f:
        for line in f:
            if line.strip():
                yield line.rstrip(b"\r\n")


def batches(lines: Iterator[bytes]) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    size = 0
    for line in lines:
        if batch and (len(batch) >= BATCH_RECORDS or size + len(line) + 1 > BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(line)
        size += len(line) + 1
    if batch:
        yield batch


def post_batch(
    client: httpx.Client, lines: list[bytes], summary: PushSummary, max_wait: float = 300
) -> dict[str, Any]:
    """POST one NDJSON batch; retry 429/503 and connection errors honouring Retry-After."""
    body = b"\n".join(lines) + b"\n"
    waited = 0.0
    while True:
        try:
            response = client.post(
                "/v1/events/batch", content=body, headers={"Content-Type": "application/x-ndjson"}
            )
        except httpx.TransportError:
            response = None
        if response is not None and response.status_code not in (429, 502, 503, 504):
            break
        retry_after = 1.0
        if response is not None:
            try:
                retry_after = max(0.1, float(response.headers.get("Retry-After", "1")))
            except ValueError:
                retry_after = 1.0
        summary.retries += 1
        waited += retry_after
        if waited > max_wait:
            raise HandshakeError("ingest kept answering 429/503 for too long; try again later")
        time.sleep(retry_after)
    if response.status_code == 401:
        raise HandshakeError("the partner key was refused (401)")
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise HandshakeError(f"ingest refused the batch ({response.status_code}): {detail}")
    result: dict[str, Any] = response.json()
    return result


def push_file(
    path: Path,
    url: str,
    key: str,
    rejections_file: Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> PushSummary:
    if not path.exists():
        raise HandshakeError(f"{path} does not exist")
    summary = PushSummary()
    offset = 0
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        for batch in batches(read_lines(path)):
            result = post_batch(client, batch, summary)
            for item in result.get("results", []):
                status = item.get("status")
                if status == "accepted":
                    summary.accepted += 1
                elif status == "duplicate":
                    summary.duplicate += 1
                else:
                    summary.rejected += 1
                    summary.rejections.append({"record": offset + int(item.get("index", 0)) + 1, **item})
            summary.records += len(batch)
            offset += len(batch)
            if progress:
                progress(len(batch))
    if rejections_file is not None and summary.rejections:
        buf = io.BytesIO()
        for r in summary.rejections:
            buf.write(orjson.dumps(r) + b"\n")
        rejections_file.write_bytes(buf.getvalue())
    return summary


def count_records(path: Path) -> int:
    return sum(1 for _ in read_lines(path))
