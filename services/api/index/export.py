"""CSV (RFC 4180) and NDJSON renderings of event docs, a chunk at a time (pure)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

import orjson

from services.api.models_events import CSV_COLUMNS


def csv_header() -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(CSV_COLUMNS)
    return out.getvalue().encode()


def _delegations(items: list[dict[str, object]]) -> str:
    parts = []
    for d in items:
        n = d.get("participants")
        parts.append(f"{d['country']}:{n}" if n is not None else str(d["country"]))
    return ";".join(parts)


def csv_rows(docs: Sequence[bytes]) -> bytes:
    """One CSV row per doc: lists joined by ';' (delegations as CODE or CODE:participants)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    for doc in docs:
        data = orjson.loads(doc)
        row = []
        for name in CSV_COLUMNS:
            value = data.get(name)
            if name == "delegations":
                value = _delegations(value)
            elif isinstance(value, list):
                value = ";".join(str(v) for v in value)
            row.append("" if value is None else value)
        writer.writerow(row)
    return out.getvalue().encode()


def ndjson_rows(docs: Sequence[bytes]) -> bytes:
    return b"".join(bytes(d) + b"\n" for d in docs)
