"""The floor of a faust worker: an agent that only takes batches of raw records (and decodes them).

    python bench/faust_floor.py BOOTSTRAP TOPIC N OUT.json [--decode | --one-by-one]

Run by ``bench_aggregator.py`` as a second baseline in the same run: the aggregator's agents
receive their records through the same path (faust's fetcher, conductor, stream and
``take_events`` with the aggregator's batch size and interval), so this is the most any faust
agent can reach on this machine before doing any work. Writes events/s, measured from the
first record to the N-th (start-up and the group join excluded), and CPU seconds, to OUT.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    import faust

    from handshake.runtime import AGGREGATOR_GC_THRESHOLD, tune_gc
    from schemas.records import decode_event
    from services.aggregator.app import broker_credentials
    from services.aggregator.settings import AggregatorSettings

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("bootstrap", help="Kafka bootstrap servers, host:port[,host:port]")
    parser.add_argument("topic", help="the events topic to read")
    parser.add_argument("n", type=int, help="records to take before stopping")
    parser.add_argument("out", type=Path, help="where to write the JSON result")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--decode", action="store_true", help="also decode each record with the contract")
    mode.add_argument("--one-by-one", action="store_true", help="take records one at a time, not in batches")
    args = parser.parse_args()
    bootstrap, topic, n, out, decode = args.bootstrap, args.topic, args.n, args.out, args.decode
    defaults = AggregatorSettings()  # HANDSHAKE_KAFKA_*: the login on a secured broker
    datadir = tempfile.mkdtemp(prefix="faust-floor-")
    app = faust.App(
        f"bench-floor-{uuid.uuid4().hex[:8]}",
        broker=[f"kafka://{h}" for h in bootstrap.split(",")],
        broker_credentials=broker_credentials(defaults),
        store="memory://",
        datadir=datadir,
        autodiscover=False,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=True,
        stream_buffer_maxsize=max(4096, defaults.batch_size * 2),
        broker_commit_interval=defaults.commit_interval,
    )
    source = app.topic(topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    state: dict[str, Any] = {"seen": 0, "first": None, "cpu0": None}

    def finish() -> None:
        elapsed = time.perf_counter() - state["first"]
        cpu = time.process_time() - state["cpu0"]
        out.write_text(json.dumps({"events": state["seen"], "seconds": elapsed, "cpu_seconds": cpu}))
        os._exit(0)  # the measurement is written; no need for a graceful stop

    async def one_by_one(stream: Any) -> None:
        async for _event in stream.events():
            if state["first"] is None:
                state["first"], state["cpu0"] = time.perf_counter(), time.process_time()
            state["seen"] += 1
            if state["seen"] >= n:
                finish()

    async def batches(stream: Any) -> None:
        async for events in stream.take_events(defaults.batch_size, within=defaults.flush_interval):
            if state["first"] is None:
                state["first"], state["cpu0"] = time.perf_counter(), time.process_time()
            if decode:
                for ev in events:
                    msg = ev.message
                    decode_event(msg.key, msg.value, msg.headers)  # as the raw baseline does
            state["seen"] += len(events)
            if state["seen"] >= n:
                finish()

    app.agent(source, name="floor")(one_by_one if args.one_by_one else batches)

    worker = faust.Worker(app, loglevel="warning", quiet=True, redirect_stdouts=False, override_logging=False)
    tune_gc(AGGREGATOR_GC_THRESHOLD)  # as the aggregator's worker does: like is compared with like
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
