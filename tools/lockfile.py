"""Read the lock: requirements/*.txt as `uv pip compile --generate-hashes` writes them.

Each entry is `NAME==VERSION [; MARKER]` followed by `--hash=sha256:...` lines; comments say
where it came from. A universal lock may hold one package at several versions, each under its own
marker (networkx 3.4.2 for Python 3.10, 3.7 for 3.12+): every one of them is a pin, and every one
is checked. Used by tests/test_lock.py, tests/test_schemas.py and tests/test_terraform.py.
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


def read_lock(path: Path) -> dict[str, tuple[Pin, ...]]:
    """Every pin of one lock file, by canonical name, in the file's order (several when the package
    is locked at different versions for different Pythons or platforms)."""
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
    pins: dict[str, tuple[Pin, ...]] = {}
    for entry, hashes in entries:
        pin = Pin(canonicalize_name(entry["name"]), entry["version"], entry["marker"], frozenset(hashes))
        pins[pin.name] = (*pins.get(pin.name, ()), pin)
    return pins


def pinned_version(path: Path, name: str) -> str:
    """The one version `name` is locked at in `path` (ValueError when it is not locked, or locked at several)."""
    versions = {pin.version for pin in read_lock(path).get(canonicalize_name(name), ())}
    if len(versions) != 1:
        raise ValueError(f"{path}: {name} is locked at {sorted(versions) or 'no version'}, not at one version")
    return versions.pop()


def differences(whole: Path, cut: Path) -> list[str]:
    """Where `cut` (a lock resolved with `-c whole`) installs something `whole` does not: a version,
    a file's hash, or, for a package `whole` locks at several versions, the marker choosing one."""
    everything = read_lock(whole)
    found = []
    for name, pins in read_lock(cut).items():
        options = everything.get(name, ())
        several = len({option.version for option in options}) > 1
        for pin in pins:
            if not any(_same(pin, option, several) for option in options):
                said = f"{pin.version}" + (f" ; {pin.marker}" if pin.marker else "")
                found.append(f"{cut.name} locks {name}=={said}, which {whole.name} does not (version, marker or hashes)")
    return found


def _same(pin: Pin, option: Pin, by_marker: bool) -> bool:
    return pin.version == option.version and pin.hashes == option.hashes and (not by_marker or pin.marker == option.marker)
