"""The overlap scenarios' figures as one table, scenario x store: `python -m bench.overlap_report FILE`.

FILE is what the tests write with JOBGUARD_FAULT_REPORT=FILE (tests/conftest.py). Each row is one
test function; its other parameters (the variants) are added up in it.
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict

STORES = ("file", "s3", "dynamodb")


def main(path: str) -> None:
    """Print a Markdown row per scenario: variants, jobguard runs and jobs checked, and lost / doubled per store."""
    with open(path, encoding="utf-8") as stream:
        entries = json.load(stream)
    rows: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
    for entry in entries:
        test = entry["test"].split("::")[-1]
        name, _, params = test.partition("[")
        store = next((s for s in re.split(r"[-\]]", params) if s in STORES), "-")
        cell = rows[name.removeprefix("test_").replace("_s_", "'s_").replace("_", " ")][store]
        for key in ("runs", "jobs", "lost", "doubled"):
            cell[key] += entry[key]
        cell["variants"] += 1
    print("| scenario | variants per store | jobguard runs | jobs checked | " + " | ".join(f"{s}: lost / doubled" for s in STORES) + " |")
    print("|---|---|---|---|" + "---|" * len(STORES))
    totals = {s: [0, 0] for s in STORES}
    for name, stores in rows.items():
        runs = sum(c["runs"] for c in stores.values())
        jobs = sum(c["jobs"] for c in stores.values())
        variants = max(c["variants"] for c in stores.values())
        cells = []
        for store in STORES:
            if store not in stores:
                cells.append("not run")
                continue
            cell = stores[store]
            cells.append(f"{cell['lost']} / {cell['doubled']}")
            totals[store][0] += cell["lost"]
            totals[store][1] += cell["doubled"]
        print(f"| {name} | {variants} | {runs} | {jobs} | " + " | ".join(cells) + " |")
    print("| **all** | | | | " + " | ".join(f"**{lost} / {doubled}**" for lost, doubled in totals.values()) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
