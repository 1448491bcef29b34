"""Wait until the latest snapshot of every pair on a pair-stats topic equals the ground truth.

    .venv-peer/bin/python bench/settle.py BOOTSTRAP TOPIC TRUTH.json OUT.json [--timeout S]

Run by ``bench_aggregator.py`` beside the aggregator and beside its Quix peer alike, so both are
timed the same way, to the last snapshot out. It reads the topic committed-only (the peer
writes in transactions) with librdkafka, keeps each pair's latest record undecoded, and four
times a second compares the pairs not yet right with TRUTH.json (pair → the fields
``services.aggregator.merge.comparable`` keeps). Writes the wall-clock time at which every pair
was right, and how many records it read, to OUT.json; exits 1 on timeout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from schemas.records import decode_pair_stats  # noqa: E402
from services.aggregator.merge import comparable  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("bootstrap")
    parser.add_argument("topic")
    parser.add_argument("truth", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args()
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition  # the peer venv's (.venv-peer)

    truth: dict[str, dict] = json.loads(args.truth.read_text())
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": "settle",  # never joined nor committed: partitions are assigned
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    partitions = consumer.list_topics(args.topic, timeout=30).topics[args.topic].partitions
    consumer.assign([TopicPartition(args.topic, p, OFFSET_BEGINNING) for p in partitions])
    latest: dict[str, bytes] = {}
    pending = set(truth)
    records = 0
    deadline = time.monotonic() + args.timeout
    checked = 0.0
    while pending:
        for message in consumer.consume(num_messages=10_000, timeout=0.1):
            if message.error() is None:
                latest[message.key().decode()] = message.value()
                records += 1
        now = time.monotonic()
        if now - checked >= 0.25:
            checked = now
            for pair in sorted(pending):
                value = latest.get(pair)
                if value is not None and comparable(decode_pair_stats(value)) == truth[pair]:
                    pending.discard(pair)
            if now > deadline:
                consumer.close()
                sys.exit(f"settle: {len(pending)} pairs still differ after {args.timeout:.0f} s")
    settled_at = time.time()
    consumer.close()
    args.out.write_text(json.dumps({"settled_at": settled_at, "records": records}))


if __name__ == "__main__":
    main()
