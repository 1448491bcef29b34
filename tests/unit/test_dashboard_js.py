"""The dashboard's pure JavaScript (URL state, time roll-up, CSV) under Node's built-in test runner."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_dashboard_pure_functions_under_node() -> None:
    node = shutil.which("node")
    assert node, "Node.js is needed for the dashboard's unit tests (`make setup` installs it)"
    result = subprocess.run(
        [node, "--test", str(ROOT / "tests" / "js")], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# fail 0" in result.stdout and "# pass 9" in result.stdout, result.stdout
