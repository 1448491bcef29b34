"""`make bench`: run every benchmark (each measures its own baseline in the same run) and rewrite
the results table in bench/README.md."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
README = ROOT / "bench" / "README.md"
BENCHES = [
    "bench_ingest",
    "bench_ingest_secure",
    "bench_aggregator",
    "bench_aggregator_secure",
    "bench_restart",
    "bench_api",
    "bench_latency",
    "bench_events",
    "bench_dashboard",
]
#: benchmarks that are another script run with arguments
VARIANTS = {
    "bench_ingest_secure": ("bench_ingest", ["--secure"]),
    "bench_aggregator_secure": ("bench_aggregator", ["--secure"]),
}
START, END = "<!-- results -->", "<!-- end results -->"


def _get(doc: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return None
        doc = doc[part]
    return doc


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _ratio(a: Any, b: Any) -> str:
    try:
        return f"{float(a) / float(b):.2f}x"
    except (TypeError, ValueError, ZeroDivisionError):
        return "—"


#: (benchmark, what, result path, baseline label, baseline path, target)
ROWS: list[tuple[str, str, str, str, str, str]] = [
    (
        "ingest",
        "batch endpoint, records/s",
        "batch.records_per_s",
        "raw kafka-python producer",
        "raw_producer.records_per_s",
        "≥ 0.50x raw",
    ),
    ("ingest", "batch endpoint: concurrent batches of the headline", "batch.concurrency", "", "", "—"),
    (
        "ingest",
        "batch vs raw, median ratio at 2 concurrent batches",
        "batch_median_ratio_by_concurrency.2",
        "",
        "",
        "—",
    ),
    (
        "ingest",
        "batch vs raw, median ratio at 4 concurrent batches",
        "batch_median_ratio_by_concurrency.4",
        "",
        "",
        "—",
    ),
    (
        "ingest",
        "single POST, requests/s",
        "single_post.requests_per_s",
        "ingest /healthz",
        "single_post.healthz_requests_per_s",
        "≥ 1,500/s",
    ),
    ("ingest", "single POST p99, ms", "single_post.p99_ms", "", "", "≤ 100 ms"),
    (
        "ingest_secure",
        "secured broker (SASL_SSL, SCRAM): batch endpoint, records/s",
        "batch.records_per_s",
        "raw kafka-python producer, secured",
        "raw_producer.records_per_s",
        "≥ 0.50x raw",
    ),
    (
        "ingest_secure",
        "secured broker: single POST, requests/s",
        "single_post.requests_per_s",
        "ingest /healthz",
        "single_post.healthz_requests_per_s",
        "≥ 1,500/s",
    ),
    ("ingest_secure", "secured broker: single POST p99, ms", "single_post.p99_ms", "", "", "≤ 100 ms"),
    (
        "aggregator",
        "events/s (one worker, 2 delegations)",
        "aggregator_events_per_s",
        "raw aiokafka consume+decode",
        "raw_consume_decode_events_per_s",
        "≥ 10,000/s and ≥ 0.50x raw",
    ),
    (
        "aggregator",
        "pipeline, first event in to last snapshot out, events/s",
        "pipeline_events_per_s_to_last_snapshot",
        "Quix Streams peer (peer_quix.py), timed alike",
        "quix_peer_events_per_s",
        "≥ 1.0x peer",
    ),
    (
        "aggregator",
        "stage 1 events/s from ready (the floor's clock also starts after its start-up and join)",
        "aggregator_events_per_s_after_ready",
        "faust floor decoding",
        "faust_floor_decode_events_per_s",
        "≥ 0.5x floor",
    ),
    (
        "aggregator",
        "stage 1 CPU µs per event from ready (all threads; stage 2 runs alongside)",
        "stage1_cpu_us_per_event_after_ready",
        "faust floor decoding, CPU µs per event",
        "faust_floor_decode_cpu_us_per_event",
        "—",
    ),
    (
        "aggregator",
        "records through faust per event (each event, and the partials bundles stage 2 reads)",
        "faust_records_per_event",
        "",
        "",
        "—",
    ),
    (
        "aggregator",
        "faust floor: a no-op agent taking the same batches, events/s",
        "faust_floor_events_per_s",
        "raw aiokafka consume+decode",
        "raw_consume_decode_events_per_s",
        "—",
    ),
    (
        "aggregator",
        "faust floor: the same agent decoding each record, events/s",
        "faust_floor_decode_events_per_s",
        "raw aiokafka consume+decode",
        "raw_consume_decode_events_per_s",
        "—",
    ),
    (
        "aggregator",
        "pipeline events/s (to every snapshot published)",
        "pipeline_events_per_s",
        "raw aiokafka consume+decode",
        "raw_consume_decode_events_per_s",
        "—",
    ),
    (
        "aggregator",
        "restart with history to ready, s",
        "restart_to_ready_seconds",
        "",
        "",
        "≤ 60 s at 1M events",
    ),
    (
        "aggregator",
        "rebuild from the changelog alone, s",
        "rebuild_from_changelog_seconds",
        "",
        "",
        "—",
    ),
    (
        "aggregator",
        "rebuild from the changelog, projected to 1M events, s",
        "rebuild_seconds_projected_1m_events",
        "",
        "",
        "—",
    ),
    ("aggregator", "worker peak RSS, MiB", "worker_peak_rss_mib", "", "", "—"),
    (
        "aggregator_secure",
        "secured broker (SASL_SSL, SCRAM): events/s (one worker)",
        "aggregator_events_per_s",
        "raw aiokafka consume+decode, secured",
        "raw_consume_decode_events_per_s",
        "—",
    ),
    (
        "aggregator_secure",
        "secured broker: pipeline events/s (to every snapshot published)",
        "pipeline_events_per_s",
        "raw aiokafka consume+decode, secured",
        "raw_consume_decode_events_per_s",
        "—",
    ),
    (
        "aggregator_secure",
        "secured broker: faust floor decoding, events/s",
        "faust_floor_decode_events_per_s",
        "raw aiokafka consume+decode, secured",
        "raw_consume_decode_events_per_s",
        "—",
    ),
    (
        "aggregator_secure",
        "secured broker: rebuild from the changelog, changelog records/s",
        "rebuild_changelog_records_per_s",
        "",
        "",
        "—",
    ),
    ("restart", "history aggregated, events", "events", "", "", "1,000,000"),
    ("restart", "to ready after a clean stop, s", "restart_after_clean_stop_seconds", "", "", "≤ 5 s"),
    (
        "restart",
        "to ready after SIGKILL, s",
        "restart_after_sigkill_seconds",
        "",
        "",
        "≤ session timeout + 5 s",
    ),
    ("restart", "worker peak RSS over the history, MiB", "worker_peak_rss_mib", "", "", "≤ 1,024 MiB"),
    (
        "restart",
        "rebuild from the changelogs alone (disk lost), s",
        "rebuild_from_changelog_seconds",
        "",
        "",
        "≤ 120 s",
    ),
    (
        "restart",
        "rebuild from the changelogs alone, records restored/s",
        "rebuild_restored_records_per_s",
        "",
        "",
        "≥ 50,000",
    ),
    (
        "restart",
        "stage 1 over the last 100,000 events, events/s",
        "stage1_events_per_s_last_100k",
        "stage 1 over the first 100,000",
        "stage1_events_per_s_first_100k",
        "≥ 0.8x first",
    ),
    (
        "restart",
        "worker CPU µs per event over the first 100,000 events (stage 2 alongside)",
        "cpu_us_per_event_first_100k",
        "the same over the last 100,000",
        "cpu_us_per_event_last_100k",
        "—",
    ),
    (
        "restart",
        "stage 1's own CPU µs per event over the first 100,000 (its batches' work, not stage 2's)",
        "stage1_own_cpu_us_per_event_first_100k",
        "the same over the last 100,000",
        "stage1_own_cpu_us_per_event_last_100k",
        "—",
    ),
    (
        "restart",
        "stage 2: partials taken per event over the last 100,000 (its lag varies)",
        "stage2_partials_per_event_last_100k",
        "the same over the first 100,000",
        "stage2_partials_per_event_first_100k",
        "—",
    ),
    (
        "restart",
        "SIGKILL halfway through 100,000 new events: events/s to the end after the restart",
        "crash_catch_up_events_per_s",
        "events/s before the crash",
        "crash_events_per_s_before",
        "—",
    ),
    (
        "restart",
        "the same: from ready to the first batch done after the crash (republish included), s",
        "crash_seconds_to_first_batch",
        "after a clean stop (nothing to republish)",
        "crash_seconds_to_first_batch_before",
        "—",
    ),
    (
        "restart",
        "the same: partials republished whole by the first batches",
        "crash_partials_republished",
        "",
        "",
        "—",
    ),
    (
        "api",
        "/v1/pairs?limit=20 p99 at 50k pairs, ms",
        "http.pairs_limit20.p99_ms",
        "/healthz p99",
        "http.healthz_baseline.p99_ms",
        "≤ 10 ms",
    ),
    ("api", "1,000 SSE clients, delivery p99, ms", "sse.delay.p99_ms", "", "", "≤ 1,000 ms"),
    ("api", "RSS at 50k pairs, MB", "rss_mb.after_loading_view", "", "", "—"),
    # the sender aims at --rate; what it reached is shown, since the latencies hold for that rate
    ("latency", "at 100/s: events/s acknowledged by ingest", "at_100.achieved_rate", "", "", "≥ 95"),
    ("latency", "at 100/s: 202 → SSE update p50, ms", "at_100.latency.p50_ms", "", "", "≤ 100 ms"),
    ("latency", "at 100/s: 202 → SSE update p99, ms", "at_100.latency.p99_ms", "", "", "≤ 300 ms"),
    ("latency", "at 1,000/s: events/s acknowledged by ingest", "at_1000.achieved_rate", "", "", "≥ 950"),
    ("latency", "at 1,000/s: 202 → SSE update p99, ms", "at_1000.latency.p99_ms", "", "", "≤ 1,000 ms"),
    (
        "events",
        "event index rebuild from the topic, events/s (1M events)",
        "index_rebuild.events_per_s",
        "raw aiokafka consume+decode",
        "raw_consume_decode.events_per_s",
        "≥ 0.50x raw",
    ),
    ("events", "event index rebuild, CPU µs per event", "index_rebuild.cpu_us_per_event", "", "", "—"),
    (
        "events",
        "catch-up worker peak RSS during the rebuild, MB",
        "index_rebuild.worker_peak_rss_mb",
        "",
        "",
        "—",
    ),
    (
        "events",
        "/v1/events?pair=…&limit=50 p99 at 1M events, ms",
        "queries.pair_limit_50.p99_ms",
        "/healthz p99",
        "queries.healthz.p99_ms",
        "≤ 20 ms",
    ),
    (
        "events",
        "/v1/events?q=…&limit=50 p99 at 1M events, ms",
        "queries.q_limit_50.p99_ms",
        "/healthz p99",
        "queries.healthz.p99_ms",
        "≤ 20 ms",
    ),
    ("events", "index file at 1M events, MB", "file_mb", "", "", "—"),
    ("events", "api RSS at 1M events, MB", "queries.api_rss_mb", "", "", "—"),
    ("events", "records read again by a restarted api", "queries.read_after_restart", "", "", "0"),
    (
        "dashboard",
        "first paint (data, ranking, map drawn) at 50k pairs, ms",
        "first_paint.ready_ms",
        "the same page at 100 pairs",
        "first_paint_100_pairs.ready_ms",
        "≤ 2,000 ms",
    ),
    (
        "dashboard",
        "longest frame at 100 pair updates/s + 100 events/s, ms",
        "under_updates.max_frame_ms",
        "longest frame idle",
        "idle.max_frame_ms",
        "≤ 200 ms",
    ),
    ("dashboard", "frames over 200 ms under updates", "under_updates.frames_over_200ms", "", "", "0"),
    ("dashboard", "updates/s reached by the publisher", "updates.achieved_per_s", "", "", "≥ 95"),
]


def render() -> str:
    loaded = {
        name: json.loads((RESULTS / f"{name}.json").read_text())
        for name in (
            "ingest",
            "ingest_secure",
            "aggregator",
            "aggregator_secure",
            "restart",
            "api",
            "latency",
            "events",
            "dashboard",
        )
        if (RESULTS / f"{name}.json").exists()
    }
    lines = [
        "| benchmark | measure | result | baseline (same run) | baseline value | ratio | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for bench, what, path, base_label, base_path, target in ROWS:
        doc = loaded.get(bench, {})
        value = _get(doc, path)
        base = _get(doc, base_path) if base_path else None
        lines.append(
            f"| {bench} | {what} | {_fmt(value)} | {base_label or '—'} | {_fmt(base)} | "
            f"{_ratio(value, base) if base_path else '—'} | {target} |"
        )
    return "\n".join(lines)


def write_readme() -> None:
    text = README.read_text()
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    README.write_text(f"{head}{START}\n{render()}\n{END}{tail}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "benches", nargs="*", metavar="BENCH", help=f"some of {', '.join(BENCHES)} (default: all)"
    )
    parser.add_argument(
        "--table-only", action="store_true", help="only rewrite the README table from bench/results/"
    )
    args = parser.parse_args(argv[1:])
    unknown = sorted(set(args.benches) - set(BENCHES))
    if unknown:
        parser.error(f"unknown benchmarks: {', '.join(unknown)} (choose from {', '.join(BENCHES)})")
    if args.table_only:
        write_readme()
        print(render())
        return 0
    only = args.benches or BENCHES
    failed = []
    for name in only:
        base, extra = VARIANTS.get(name, (name, []))
        script = ROOT / "bench" / f"{base}.py"
        if not script.exists():
            continue
        print(f"==> {name}", flush=True)
        if subprocess.run([sys.executable, str(script), *extra], cwd=ROOT, check=False).returncode != 0:
            failed.append(name)
    write_readme()
    print(render())
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
