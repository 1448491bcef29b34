"""A flooding partner, run as its own process: ``python -m tests.security.flood URL KEY SECONDS CONCURRENCY``.

Prints ``started`` once its connections are open, then one JSON line of results: statuses,
the Retry-After values of the 429 answers, and the request rate achieved.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter

import httpx


async def flood(url: str, key: str, seconds: float, concurrency: int) -> dict[str, object]:
    statuses: Counter[int] = Counter()
    retry_after: Counter[str] = Counter()
    missing_retry_after = 0
    errors = 0
    sent = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, limits=limits, timeout=30
    ) as client:
        await client.get("/healthz")
        print("started", flush=True)
        deadline = time.monotonic() + seconds

        async def worker(n: int) -> None:
            nonlocal missing_retry_after, errors, sent
            i = 0
            while time.monotonic() < deadline:
                i += 1
                body = {
                    "event_id": f"flood-{n}-{i}",
                    "kind": "civic",
                    "title": "flood",
                    "host_country": "FR",
                    "delegations": [{"country": "DE"}],
                    "starts_on": "2025-03-14",
                }
                try:
                    resp = await client.post("/v1/events", json=body)
                except httpx.HTTPError:
                    errors += 1
                    continue
                sent += 1
                statuses[resp.status_code] += 1
                if resp.status_code == 429:
                    value = resp.headers.get("retry-after")
                    if value is None:
                        missing_retry_after += 1
                    else:
                        retry_after[value] += 1

        started = time.monotonic()
        await asyncio.gather(*(worker(n) for n in range(concurrency)))
        elapsed = time.monotonic() - started
    return {
        "statuses": {str(k): v for k, v in statuses.items()},
        "retry_after": dict(retry_after),
        "missing_retry_after": missing_retry_after,
        "errors": errors,
        "seconds": round(elapsed, 3),
        "requests_per_s": round(sent / elapsed, 1),
    }


def main() -> None:
    url, key, seconds, concurrency = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    print(json.dumps(asyncio.run(flood(url, key, seconds, concurrency))), flush=True)


if __name__ == "__main__":
    main()
