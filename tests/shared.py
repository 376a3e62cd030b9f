"""What the processes of one test run share when pytest-xdist runs the tests in parallel
(`pytest -n 2`): a folder the controlling process makes and names in JOBGUARD_TEST_SHARED,
results computed once for every process (Terraform's lifecycles take minutes), each worker's
recorded AWS calls for tests/test_policy.py, and each worker's fault figures.

In a run without workers the same functions work within the one process.
"""

from __future__ import annotations

import fcntl
import os
import pickle
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
VARIABLE = "JOBGUARD_TEST_SHARED"


def worker() -> str | None:
    """This process's xdist worker id ("gw0", ...), or None in a run without workers."""
    return os.environ.get("PYTEST_XDIST_WORKER")


def start() -> None:
    """In the controlling process: make the run's shared folder (workers inherit the variable)."""
    if worker() is None:
        os.environ[VARIABLE] = tempfile.mkdtemp(prefix="jobguard-tests-")


def finish() -> None:
    """In the controlling process: remove the run's shared folder."""
    if worker() is None and VARIABLE in os.environ:
        shutil.rmtree(os.environ.pop(VARIABLE), ignore_errors=True)


def folder() -> Path:
    path = os.environ.get(VARIABLE)
    assert path, f"{VARIABLE} is not set: tests/conftest.py sets it when the run starts"
    return Path(path)


@contextmanager
def _locked(name: str) -> Iterator[None]:
    with (folder() / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _publish(path: Path, value: Any) -> None:
    """Write whole or not at all: a reader polling for `path` never sees half of it."""
    partial = path.with_suffix(".partial")
    partial.write_bytes(pickle.dumps(value))
    partial.replace(path)


def once(name: str, compute: Callable[[], T]) -> T:
    """`compute()` run by the first process that asks, its result (picklable) shared with the others,
    which wait for it rather than compute it again."""
    path = folder() / f"{name}.pickle"
    with _locked(name):
        if not path.exists():
            _publish(path, compute())
        value: T = pickle.loads(path.read_bytes())
        return value


def publish(kind: str, value: Any) -> None:
    """A worker's `kind` ("calls", "faults"), published when its session ends."""
    _publish(folder() / f"{kind}-{worker() or 'main'}.pickle", value)


def published(kind: str) -> list[Any]:
    """Every worker's published `kind`, in no particular order (for the controlling process)."""
    return [pickle.loads(path.read_bytes()) for path in sorted(folder().glob(f"{kind}-*.pickle"))]


def from_other_workers(kind: str, timeout: float) -> list[Any]:
    """What every other worker of this run published as `kind`, waiting up to `timeout` seconds
    for the workers still running their last tests. Empty in a run without workers."""
    me = worker()
    if me is None:
        return []
    count = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    paths = [folder() / f"{kind}-gw{n}.pickle" for n in range(count) if f"gw{n}" != me]
    deadline = time.monotonic() + timeout
    while missing := [p for p in paths if not p.exists()]:
        if time.monotonic() > deadline:
            raise AssertionError(f"workers {[p.stem for p in missing]} did not finish within {timeout:.0f} s")
        time.sleep(0.5)
    return [pickle.loads(p.read_bytes()) for p in paths]
