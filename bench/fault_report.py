"""Summarise the fault report the tests write: `python -m bench.fault_report FILE`."""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def main(path: str) -> None:
    """Print one Markdown row per fault test (parameters folded), then the totals."""
    rows: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    with open(path, encoding="utf-8") as stream:
        entries = json.load(stream)
    for entry in entries:
        name = entry["test"].split("::")[-1].split("[")[0]
        for key in ("runs", "faults", "jobs", "lost", "doubled"):
            rows[name][key] += entry[key]
        rows[name]["checks"] += 1
    print("| test | checks | jobguard runs | faults injected | jobs checked | lost | doubled |")
    print("|---|---|---|---|---|---|---|")
    for name, r in sorted(rows.items()):
        print(f"| {name} | {r['checks']} | {r['runs']} | {r['faults']} | {r['jobs']} | {r['lost']} | {r['doubled']} |")
    total = {k: sum(r[k] for r in rows.values()) for k in ("checks", "runs", "faults", "jobs", "lost", "doubled")}
    print(f"| **all** | {total['checks']} | {total['runs']} | {total['faults']} | {total['jobs']} | {total['lost']} | {total['doubled']} |")


if __name__ == "__main__":
    main(sys.argv[1])
