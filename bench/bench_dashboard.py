"""Benchmark of the dashboard in a real browser: first paint at 50,000 pairs, frames under live load.

    .venv/bin/python bench/bench_dashboard.py [--pairs 50000] [--rate 100] [--seconds 20]

The api runs in a subprocess (uvicorn, one worker) with a generated view of ``--pairs`` pairs and
2,000 indexed events; headless Chromium (Debian's, through Playwright) opens the dashboard.

- first paint: from navigation to the page's ``handshake-ready`` mark (totals, ranking, time
  chart and the world map drawn), median of 3 loads; the same page on a 100-pair view in the same
  run is the baseline.
- frames: the gap between animation frames (``requestAnimationFrame``) and Chromium's long
  animation frames, first idle for ``--seconds``, then while the api publishes ``--rate`` pair
  updates per second and as many new events (ticker, open pair detail) for ``--seconds``.
  Target: no frame over 200 ms.

Prints JSON and writes ``bench/results/dashboard.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_api import generate, percentile, serve_commands  # noqa: E402

from services.api.testing import RecordMaker, free_port, make_stats  # noqa: E402
from tests.e2e.browser import chromium_page  # noqa: E402

KINDS = ["athletic", "cultural", "scientific", "educational", "professional", "humanitarian", "civic"]
EVENTS = 2000


def event(i: int, a: str, b: str) -> dict[str, Any]:
    return {
        "event_id": f"bench-{i}",
        "kind": KINDS[i % len(KINDS)],
        "title": f"Bench exchange number {i}",
        "host_country": a,
        "delegations": [{"country": b, "participants": 10 + i % 40}],
        "starts_on": (date(2015, 1, 1) + timedelta(days=i % 3650)).isoformat(),
    }


# --- the server process -------------------------------------------------------------------


def serve(port: int, pairs: int) -> None:
    from services.api.app import create_app
    from services.api.settings import ApiSettings

    app = create_app(ApiSettings())
    live, index = app.state.live, app.state.index
    stats = generate(pairs)
    for s in stats:
        live.apply(s)
    make = RecordMaker()
    real = [s for s in stats if all(len(c) == 2 for c in s.countries)][:200]
    index.apply([make(event(i, *real[i % len(real)].countries)) for i in range(EVENTS)])
    live.freeze_gc = True
    live.ready = False
    live.mark_ready()

    async def publish(rate: float, seconds: float) -> None:
        pool = real
        began = time.perf_counter()
        i = 0
        while (due := began + i / rate) < began + seconds:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            base = live.view.get(pool[i % len(pool)].pair) or pool[i % len(pool)]
            a, b = base.countries
            live.apply(
                make_stats(
                    a,
                    b,
                    version=base.version + 1,
                    events=base.active_events + 1,
                    by_kind={**base.by_kind, "civic": base.by_kind.get("civic", 0) + 1},
                    by_month=base.by_month,
                    updated_at=datetime.now(UTC),
                )
            )
            await asyncio.to_thread(index.apply, [make(event(EVENTS + i, a, b))])
            i += 1
        print(f"DONE {i} {time.perf_counter() - began:.3f}", flush=True)

    async def handle(line: list[str]) -> None:
        if line[0] == "publish":
            await publish(float(line[1]), float(line[2]))

    serve_commands(app, port, handle)


# --- the browser --------------------------------------------------------------------------

WATCH_FRAMES = """() => {
  const f = { gaps: [], loaf: [] };
  let last = performance.now();
  const tick = (t) => { f.gaps.push(t - last); last = t; if (!f.stop) requestAnimationFrame(tick); };
  requestAnimationFrame(tick);
  try {
    new PerformanceObserver((list) => { for (const e of list.getEntries()) f.loaf.push(e.duration); })
      .observe({ type: "long-animation-frame" });
  } catch (e) { f.noLoaf = String(e); }
  window.__frames = f;
}"""


def frames(page: Any, seconds: float) -> dict[str, Any]:
    page.evaluate(WATCH_FRAMES)
    page.wait_for_timeout(seconds * 1000)
    got = page.evaluate("() => { const f = window.__frames; f.stop = true; return f; }")
    gaps = got["gaps"][1:] or [0.0]
    return {
        "frames": len(gaps),
        "max_frame_ms": round(max(gaps), 1),
        "p99_frame_ms": round(percentile(gaps, 99), 1),
        "median_frame_ms": round(statistics.median(gaps), 1),
        "frames_over_200ms": sum(1 for g in gaps if g > 200),
        "long_animation_frames": len(got["loaf"]),
        "longest_animation_frame_ms": round(max(got["loaf"], default=0.0), 1),
    }


def first_paint(url: str, loads: int = 3) -> dict[str, Any]:
    ready, fcp = [], []
    for _ in range(loads):
        with chromium_page(1920, 1080) as page:
            page.goto(url)
            page.wait_for_selector("body[data-ready=true]", timeout=60_000)
            ready.append(page.evaluate("performance.getEntriesByName('handshake-ready')[0].startTime"))
            fcp.append(
                page.evaluate(
                    "(performance.getEntriesByName('first-contentful-paint')[0] || {startTime: 0}).startTime"
                )
            )
    return {
        "ready_ms": round(statistics.median(ready), 1),
        "first_contentful_paint_ms": round(statistics.median(fcp), 1),
    }


def start_api(pairs: int) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--port", str(port), "--pairs", str(pairs)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "READY", line
    return proc, f"http://127.0.0.1:{port}"


def stop_api(proc: subprocess.Popen[str]) -> None:
    if proc.stdin:
        proc.stdin.close()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def run(args: argparse.Namespace) -> dict[str, Any]:
    small, small_url = start_api(100)
    try:
        baseline = first_paint(small_url + "/")
    finally:
        stop_api(small)
    proc, url = start_api(args.pairs)
    try:
        painted = first_paint(url + "/")
        with chromium_page(1920, 1080) as page:
            page.goto(url + "/")
            page.wait_for_selector("body[data-ready=true]", timeout=60_000)
            top = page.locator("#pairs-body tr[data-pair]").first.get_attribute("data-pair")
            page.locator("#pairs-body tr[data-pair]").first.click()  # an open pair detail, like a wall screen
            page.wait_for_timeout(1000)
            idle = frames(page, args.seconds)
            loads_before = int(page.evaluate("document.body.dataset.loads || 0"))
            ticker_before = page.locator("#ticker-list li").count()
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(f"publish {args.rate} {args.seconds}\n")
            proc.stdin.flush()
            busy = frames(page, args.seconds)
            done = proc.stdout.readline().split()
            sent, took = int(done[1]), float(done[2])
            page.wait_for_timeout(1500)
            loads = int(page.evaluate("document.body.dataset.loads || 0")) - loads_before
            ticker = page.locator("#ticker-list .event-title").first.inner_text()
    finally:
        stop_api(proc)
    return {
        "pairs": args.pairs,
        "first_paint": painted,
        "first_paint_100_pairs": baseline,
        "first_paint_ratio_to_100_pairs": round(painted["ready_ms"] / max(1.0, baseline["ready_ms"]), 2),
        "idle": idle,
        "under_updates": busy,
        "updates": {
            "target_per_s": args.rate,
            "sent": sent,
            "achieved_per_s": round(sent / took, 1),
            "events_per_s": round(sent / took, 1),
            "page_reloads_of_the_view": loads,
            "ticker_items_before": ticker_before,
            "ticker_newest": ticker,
            "open_pair": top,
        },
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=50_000, help="pairs in the api's view (default 50,000)")
    parser.add_argument("--rate", type=float, default=100.0, help="pair updates and new events per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the idle and the busy phase")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.port, args.pairs)
        return
    result = run(args)
    print(json.dumps(result, indent=2))
    out = ROOT / "bench" / "results" / "dashboard.json"
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
