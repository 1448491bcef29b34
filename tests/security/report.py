"""Security-suite figures: each scenario appends ``{scenario, figures}`` to test-output/security.json."""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

LONG = os.environ.get("HANDSHAKE_FAULTS_LONG") == "1"
OUTPUT = Path(__file__).resolve().parents[2] / "test-output" / "security.json"


def scale(short: int, long: int) -> int:
    """``long`` under ``HANDSHAKE_FAULTS_LONG=1`` (make faults), else ``short``."""
    return long if LONG else short


def record(scenario: str, figures: dict[str, Any], path: Path = OUTPUT) -> None:
    """Print the figures and append one row to ``path`` (a JSON array; safe across processes)."""
    row = {
        "scenario": scenario,
        "variant": "long" if LONG else "short",
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "figures": figures,
    }
    print(f"[security] {scenario}: {json.dumps(figures, sort_keys=True, default=str)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        text = fh.read().strip()
        try:
            rows = json.loads(text) if text else []
        except json.JSONDecodeError:
            rows = []
        if not isinstance(rows, list):
            rows = []
        rows.append(row)
        fh.seek(0)
        fh.truncate()
        json.dump(rows, fh, indent=2, default=str)
        fh.write("\n")
