"""Print the reliability table from the last fault run (and write it into docs/reliability.md)."""

from __future__ import annotations

import json
import sys

from tests.faults.common import ROOT

COLUMNS = ["scenario", "events", "acknowledged", "lost", "duplicated", "recovery_s", "total_s"]


def render(rows: list[dict[str, object]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " | other figures |", "|" + "---|" * (len(COLUMNS) + 1)]
    for row in sorted(rows, key=lambda r: str(r["scenario"])):
        other = {k: v for k, v in row.items() if k not in COLUMNS}
        cells = [str(row.get(c, "")) for c in COLUMNS]
        lines.append(
            "| " + " | ".join(cells) + " | " + ", ".join(f"{k}={v}" for k, v in other.items()) + " |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    name = argv[1] if len(argv) > 1 else "faults-long.json"
    path = ROOT / "test-output" / name
    if not path.exists():
        print(f"no results in {path}", file=sys.stderr)
        return 1
    table = render(json.loads(path.read_text()))
    print(table)
    doc = ROOT / "docs" / "reliability.md"
    marker = "<!-- table: " + name + " -->"
    if doc.exists() and marker in doc.read_text():
        head, rest = doc.read_text().split(marker, 1)
        tail = rest.split("<!-- end -->", 1)[1] if "<!-- end -->" in rest else ""
        doc.write_text(f"{head}{marker}\n{table}\n<!-- end -->{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
