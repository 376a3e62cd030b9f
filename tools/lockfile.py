"""Read the lock: requirements/*.txt as `uv pip compile --generate-hashes` writes them.

Each entry is `NAME==VERSION [; MARKER]` followed by `--hash=sha256:...` lines; comments say
where it came from. Used by tests/test_lock.py and tools/audit_lock.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCKS = ROOT / "requirements"
_ENTRY = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)\s*(?:;\s*(?P<marker>[^\\]+?))?\s*\\?$")
_HASH = re.compile(r"--hash=(sha256:[0-9a-f]{64})")


@dataclass(frozen=True)
class Pin:
    """One locked package: its version, the marker under which it is installed, its files' hashes."""

    name: str
    version: str
    marker: str | None
    hashes: frozenset[str]


def read_lock(path: Path) -> dict[str, Pin]:
    """Every pin of one lock file, by canonical name."""
    entries: list[tuple[re.Match[str], set[str]]] = []
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        entry = _ENTRY.match(stripped)
        found = _HASH.search(stripped)
        if entry is not None:
            entries.append((entry, set()))
        elif found is not None and entries:
            entries[-1][1].add(found.group(1))
        else:
            raise ValueError(f"{path}: cannot read the line {line!r}")
    pins = (Pin(canonicalize_name(e["name"]), e["version"], e["marker"], frozenset(h)) for e, h in entries)
    return {pin.name: pin for pin in pins}
