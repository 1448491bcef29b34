"""Every benchmark script runs alone and explains itself: `--help` through argparse, exit 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("*.py")))
def test_help(script: str) -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH / script), "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: " + script), result.stdout[:200]


def test_run_all_refuses_an_unknown_benchmark() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH / "run_all.py"), "bench_nope"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "unknown benchmarks: bench_nope" in result.stderr
