"""The deploy lock: one drain or restore at a time per queue, whatever store holds the lock.

Locks are taken per queue, in sorted order (so two runs cannot deadlock), renewed by a heartbeat
every quarter of their time to live while held, and expire that long after a killed process
stopped renewing them (the `lock-ttl` setting, 120 s by default).
"""

from __future__ import annotations

import getpass
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from types import TracebackType

from ..adapters.locks import LockRecord
from ..adapters.store import ManifestStore
from ..errors import JobguardError, LockError
from ..report import Reporter


def holder_description() -> str:
    """Who holds a lock, as a person can follow it up: the run URL in Actions."""
    env = os.environ
    if env.get("GITHUB_ACTIONS") == "true" and env.get("GITHUB_RUN_ID"):
        server = env.get("GITHUB_SERVER_URL", "https://github.com")
        return f"{server}/{env.get('GITHUB_REPOSITORY', '')}/actions/runs/{env['GITHUB_RUN_ID']}"
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()} (pid {os.getpid()})"


class DeployLock:
    """Context manager holding the locks of some queues for one command run."""

    def __init__(self, store: ManifestStore, queues: Iterable[str], timeout: float, ttl: float, report: Reporter) -> None:
        self.store, self.timeout, self.ttl, self.report = store, timeout, ttl, report
        self.names = sorted({f"queue-{q.rsplit('/', 1)[-1]}" for q in queues})
        self.record = LockRecord(uuid.uuid4().hex, holder_description(), time.time(), 0.0)
        self.held: list[str] = []
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def __enter__(self) -> DeployLock:
        deadline = time.monotonic() + self.timeout
        try:
            for name in self.names:
                self._take(name, deadline)
        except BaseException:
            self._release()
            raise
        self._heartbeat = threading.Thread(target=self._renew, name="jobguard-lock-heartbeat", daemon=True)
        self._heartbeat.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self._stop.set()
        if self._heartbeat:
            self._heartbeat.join()
        self._release()

    def _take(self, name: str, deadline: float) -> None:
        waiting = False
        while True:
            holder = self.store.try_lock(name, self.record.renewed(self.ttl))
            if holder is None:
                self.held.append(name)
                return
            if time.monotonic() >= deadline:
                queue = name.removeprefix("queue-")
                raise LockError(
                    f"queue {queue}: another jobguard run holds the deploy lock: {holder.holder}, since {holder.since()}",
                    hint=f"waited {self.timeout:g} s; wait for it or raise --lock-timeout; a killed run's lock expires in {self.ttl:g} s",
                )
            if not waiting:
                self.report.line(f"waiting up to {self.timeout:g} s for the lock on {name.removeprefix('queue-')}, held by {holder.holder}")
                waiting = True
            time.sleep(max(0.0, min(1.0, deadline - time.monotonic())))

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            for name in self.held:
                try:
                    holder = self.store.try_lock(name, self.record.renewed(self.ttl))
                except JobguardError as exc:
                    self.report.warning(f"could not renew the deploy lock on {name}: {exc}")
                    continue
                if holder is not None:
                    self.report.error(f"lost the deploy lock on {name} to {holder.holder}")

    def _release(self) -> None:
        for name in reversed(self.held):
            try:
                self.store.unlock(name, self.record)
            except JobguardError as exc:
                self.report.warning(f"could not release the deploy lock on {name} (it expires by itself): {exc}")
        self.held.clear()
