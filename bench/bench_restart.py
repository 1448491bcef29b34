"""Aggregator restart with a long history: time to ready after a clean stop and after SIGKILL.

    python bench/bench_restart.py [N]      (default 1000000 events, two delegations each)

One worker aggregates N events (stage 1 has taken every one; its rate, and the worker's CPU per
event, over the first 100,000 events from ready and the last 100,000 tell whether the cost per
event stays flat as history grows; one event in 20 belongs to a pair whose events start any day
from 1950 to 2026), then is stopped cleanly and restarted, then SIGKILLed and restarted; each
restart is timed from the process start to ``/readyz`` answering 200. Last, its local state is
deleted and the time to ready again is the rebuild from the changelogs alone. Then 100,000 new
events arrive and a worker is SIGKILLed halfway through them: the restarted worker's first
batches republish what the crash may have lost, timed against a start after a clean stop. Uses
HANDSHAKE_KAFKA_BOOTSTRAP when set, else a temporary native broker. Prints JSON and writes
bench/results/restart.json.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_aggregator import (  # noqa: E402
    cpu_seconds,
    end_offsets_total,
    history,
    main,
    metric,
    metrics_of,
    produce,
    rss_mb,
)

from handshake.broker import free_port  # noqa: E402
from services.aggregator.testing import WorkerProcess, worker_env  # noqa: E402

CRASH_EVENTS = 100_000  # new events a worker is SIGKILLed halfway through (crash while catching up)
FLAT_WINDOW = 100_000  # events: the per-event cost is flat when the last window is as fast as the first
EVENTS = "handshake_aggregator_events_total"  # stage 1 has taken them
CONSUMED = "handshake_aggregator_partials_consumed_total"  # stage 2 has taken them
PUBLISHED = "handshake_aggregator_partials_published_total"  # stage 1 has sent them to stage 2
STAGE1_CPU = 'handshake_aggregator_stage_cpu_seconds_total{stage="stage1"}'  # its own batch work
STAGE2_CPU = 'handshake_aggregator_stage_cpu_seconds_total{stage="stage2"}'


def at_count(progress: list[tuple[float, ...]], count: float, column: int = 0) -> float:
    """``column`` of (seconds, events taken, ...) samples when stage 1 had taken ``count`` events,
    interpolated between the samples around it."""
    previous: tuple[float, ...] = (0.0,) * len(progress[0]) if progress else ()
    for sample in progress:
        taken = sample[1]
        if taken >= count:
            span = taken - previous[1]
            share = (count - previous[1]) / span if span else 1.0
            return previous[column] + share * (sample[column] - previous[column])
        previous = sample
    raise ValueError(f"no sample reached {count} events")


def rate_between(progress: list[tuple[float, ...]], low: float, high: float) -> float:
    """Events/s over the events numbered low..high, from (seconds, events taken, ...) samples."""
    return (high - low) / (at_count(progress, high) - at_count(progress, low))


def cpu_us_between(progress: list[tuple[float, ...]], low: float, high: float, column: int = 2) -> float:
    """CPU µs per event over the events numbered low..high, from (seconds, events taken, CPU
    seconds, ...) samples (``column``: the worker's, by default, or a stage's own): unlike
    events/s, not blurred by the machine's drift."""
    return 1e6 * per_event_between(progress, low, high, column)


def per_event_between(progress: list[tuple[float, ...]], low: float, high: float, column: int) -> float:
    """How much ``column`` grew per event over the events numbered low..high."""
    return (at_count(progress, high, column) - at_count(progress, low, column)) / (high - low)


def crash_while_catching_up(
    bootstrap: str, topic: str, env: dict[str, str], port: int, work: Path, n: int
) -> dict[str, Any]:
    """``CRASH_EVENTS`` new events after the ``n`` of the history; a worker is SIGKILLed halfway
    through them and started again. Its first batch of each partition republishes the partials
    changed since the committed offset with all their months (services.aggregator.domain.republish):
    how long that takes is the price of the crash, against the rate before it."""
    produce(bootstrap, topic, CRASH_EVENTS, first=n)
    worker = WorkerProcess(env, port, work / "worker5.log").start()
    worker.wait_ready(600)
    began = time.perf_counter()
    first_before_s = None  # after a clean stop: nothing to republish (the baseline)
    while (taken := metric(worker, EVENTS)) < CRASH_EVENTS / 2:
        if taken and first_before_s is None:
            first_before_s = time.perf_counter() - began
        if time.perf_counter() - began > 1800:
            raise TimeoutError("the worker did not take half of the new events")
        time.sleep(0.2)
    before_rate = taken / (time.perf_counter() - began)
    worker.proc.send_signal(signal.SIGKILL)
    worker.proc.wait()

    worker = WorkerProcess(env, port, work / "worker6.log").start()
    ready_s = worker.wait_ready(600)
    began = time.perf_counter()
    first_s = None
    while True:  # until the events topic is read to its end again
        taken, lag, republished = metrics_of(
            worker,
            EVENTS,
            "handshake_aggregator_consumer_lag",
            "handshake_aggregator_partials_republished_total",
        )
        if taken and first_s is None:
            first_s = time.perf_counter() - began
        if taken and lag == 0:
            break
        if time.perf_counter() - began > 1800:
            raise TimeoutError("the restarted worker did not catch up")
        time.sleep(0.2)
    catch_up_s = time.perf_counter() - began
    worker.stop()
    return {
        "crash_events": CRASH_EVENTS,
        "crash_events_per_s_before": round(before_rate),
        "crash_restart_seconds": round(ready_s, 2),
        "crash_partials_republished": int(republished),
        "crash_seconds_to_first_batch": round(first_s or 0.0, 2),
        "crash_seconds_to_first_batch_before": round(first_before_s or 0.0, 2),
        "crash_events_taken_again_and_new": int(taken),
        "crash_catch_up_seconds": round(catch_up_s, 1),
        "crash_catch_up_events_per_s": round(taken / catch_up_s),
    }


def run(bootstrap: str, n: int, work: Path) -> dict[str, Any]:
    kafka, app_id, produce_s = history(bootstrap, n, "restart")
    port = free_port()
    env = worker_env(kafka, app_id=app_id, data_dir=work / "w", web_port=port, log_level="WARNING")
    worker = WorkerProcess(env, port, work / "worker.log").start()
    began = time.perf_counter()
    worker.wait_ready(300)
    # the history is in the state once stage 1 has taken every event; stage 2 (which reads
    # ~2 partials per event) lags behind under this load and catches up after the restarts
    # (seconds since the start, events stage 1 has taken, the worker's CPU seconds, partials stage
    # 2 has taken: its share of the work in a window varies with its lag, stage 1's own CPU
    # seconds: not blurred by it, stage 2's), from ready: start-up (imports, the group join) is
    # not part of the first window
    progress: list[tuple[float, ...]] = []
    while not progress or progress[-1][1] < n:
        if progress:
            time.sleep(1)
        taken, consumed, own1, own2 = metrics_of(worker, EVENTS, CONSUMED, STAGE1_CPU, STAGE2_CPU)
        cpu = cpu_seconds(worker.proc.pid)
        progress.append((time.perf_counter() - began, taken, cpu, consumed, own1, own2))
        if progress[-1][0] > 7200:
            raise TimeoutError("the worker did not finish")
    aggregate_s = progress[-1][0]
    published, consumed = metrics_of(worker, PUBLISHED, CONSUMED)
    peak = rss_mb(worker.proc.pid)
    worker.stop()

    worker = WorkerProcess(env, port, work / "worker2.log").start()
    clean_restart_s = worker.wait_ready(600)
    processed_after_clean = metric(worker, EVENTS)
    worker.proc.send_signal(signal.SIGKILL)
    worker.proc.wait()

    worker = WorkerProcess(env, port, work / "worker3.log").start()
    kill_restart_s = worker.wait_ready(600)
    peak_after_kill = rss_mb(worker.proc.pid)
    worker.stop()
    data_bytes = sum(f.stat().st_size for f in (work / "w").rglob("*") if f.is_file())

    # the disk is lost: everything comes back from the changelogs alone
    changelog_records = end_offsets_total(
        bootstrap, [f"{app_id}-state-changelog", f"{app_id}-pairs-changelog"]
    )
    shutil.rmtree(work / "w")
    worker = WorkerProcess(env, port, work / "worker4.log").start()
    rebuild_s = worker.wait_ready(1800)
    restored = metric(worker, "handshake_aggregator_restored_records")
    worker.stop()
    crash = crash_while_catching_up(bootstrap, kafka.events_topic, env, port, work, n)
    start = progress[0][1]  # taken by the time the worker was ready (0 unless it was quick)
    first_window, last_window = (start, start + FLAT_WINDOW), (n - FLAT_WINDOW, n)
    first, last = rate_between(progress, *first_window), rate_between(progress, *last_window)
    first_cpu, last_cpu = cpu_us_between(progress, *first_window), cpu_us_between(progress, *last_window)
    windows = range(int(start), int(n) - FLAT_WINDOW + 1, FLAT_WINDOW)  # each 100,000 in turn

    def by_window(measure: Any, digits: int, *column: int) -> list[float]:
        return [round(measure(progress, w, w + FLAT_WINDOW, *column), digits) for w in windows]

    return {
        "events": n,
        "produce_events_per_s": round(n / produce_s),
        "aggregate_seconds": round(aggregate_s, 1),
        "aggregate_events_per_s": round(n / aggregate_s),
        "stage1_events_per_s_first_100k": round(first),
        "stage1_events_per_s_last_100k": round(last),
        "stage1_last_to_first_100k": round(last / first, 2),
        # the worker's CPU per event (stage 2 runs alongside): first window over last, as above
        "cpu_us_per_event_first_100k": round(first_cpu, 1),
        "cpu_us_per_event_last_100k": round(last_cpu, 1),
        "cpu_first_to_last_100k": round(first_cpu / last_cpu, 2),
        "cpu_us_per_event_by_100k": by_window(cpu_us_between, 1),
        # stage 2 lags under this load: how many partials it took per event in each window
        "stage2_partials_per_event_first_100k": round(per_event_between(progress, *first_window, 3), 2),
        "stage2_partials_per_event_last_100k": round(per_event_between(progress, *last_window, 3), 2),
        "stage2_partials_per_event_by_100k": by_window(per_event_between, 2, 3),
        # stage 1's own batch work (handshake_aggregator_stage_cpu_seconds_total): the cost per
        # event of the history, whatever stage 2's share of a window
        "stage1_own_cpu_us_per_event_first_100k": round(cpu_us_between(progress, *first_window, 4), 1),
        "stage1_own_cpu_us_per_event_last_100k": round(cpu_us_between(progress, *last_window, 4), 1),
        "stage1_own_cpu_us_per_event_by_100k": by_window(cpu_us_between, 1, 4),
        # the rest of the worker's CPU is faust, Kafka I/O, the local writes and RocksDB's threads
        "stage2_own_cpu_us_per_event_by_100k": by_window(cpu_us_between, 1, 5),
        "stage2_partials_behind_at_stop": int(published - consumed),
        "restart_after_clean_stop_seconds": round(clean_restart_s, 2),
        "events_processed_again_after_clean_stop": int(processed_after_clean),
        "restart_after_sigkill_seconds": round(kill_restart_s, 2),
        "worker_peak_rss_mib": round(peak, 1),
        "restarted_worker_peak_rss_mib": round(peak_after_kill, 1),
        "local_state_mib": round(data_bytes / 2**20, 1),
        "changelog_records": changelog_records,
        "restored_records": int(restored),
        "rebuild_from_changelog_seconds": round(rebuild_s, 2),
        # records in the log (compaction has removed the superseded ones the end offsets count)
        "rebuild_restored_records_per_s": round(restored / rebuild_s),
        **crash,
        "cpus": os.cpu_count(),
    }


if __name__ == "__main__":
    main(run, 1_000_000, "restart", __doc__)
