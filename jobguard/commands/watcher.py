"""`jobguard run`'s watcher: while the deploy's command runs, the queues at risk are looked at again
and again, and each job created on them since the drain began that no manifest holds is recorded as
submitted (WATCHED, `window.watch`) before the apply can take its queue away.

Why a watcher, when restore sweeps the deploy window anyway: a queue the apply deletes and creates
again under its name keeps its ARN, but no listing of the new queue can be trusted to show the old
one's jobs, and a deleted queue lists nothing at all. Only what was seen before the deletion can be
brought back; the watcher also notes each queue it sees missing or DELETING, so that restore knows
that queue's jobs were ended by the deploy even when a queue of the same name is back by then.

One loop for one concern, paced (as nomad's drainer keeps one watcher per concern): describe the
queues (one call), list each for jobs created since its last look (less a margin for ListJobs' lag),
describe what is new, record it; then wait out the rest of the interval. A look costs one call per
queue and page of new jobs, not the whole apply's jobs again. Its calls go through the same paced
Batch adapter as every other call, so it stays inside the run's per-action rate budget, and a slow
look is never followed by a burst of catching up.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..adapters.batch import Queue
from ..domain.manifest import OPENED, WATCHED_DELETED, Manifest
from ..errors import JobguardError, LeaseError
from .context import Context
from .window import CLOCK_MARGIN_MS, ended_before, watch

Json = dict[str, Any]
GONE = ("DELETING", "DELETED")
# A job reaches ListJobs seconds after it is created (its consistency is not documented): each look
# lists from this long before the previous one began, by Batch's own clock.
LAG_MS = 60_000


@dataclass
class Watcher:
    """Watches `queues` (by name: a queue made again under its name is watched too) for new jobs."""

    ctx: Context
    manifest: Manifest
    queues: list[str]
    interval: float
    recorded: int = 0
    looks: int = 0
    stopped_by: str | None = None  # why it stopped watching early (it lost the deploy's lease)
    _said: dict[str, str] = field(default_factory=dict)  # queue -> the last problem said about it (said once)
    _since: dict[str, int] = field(default_factory=dict)  # queue -> list jobs created after this (ms, Batch's clock)
    _existed: set[str] = field(default_factory=set)  # queues known to have existed during the deploy
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def opened_ms(self) -> int:
        """When the drain began (Batch's clock, ms)."""
        return int(self.manifest.window.get(OPENED, 0))

    def start(self) -> None:
        """Look now, then every `interval` seconds, on a thread of its own, until `stop`."""
        if not self.queues:
            return
        self._existed.update(q for q in self.queues if q in self.manifest.queues)  # drain found each of them
        names = ", ".join(self.queues)
        self.ctx.report.line(f"watching {names} every {self.interval:g} s: each job submitted meanwhile is recorded as submitted")
        self._thread = threading.Thread(target=self._loop, name="jobguard-watcher", daemon=True)
        self._thread.start()

    def stop(self, final: bool = True) -> None:
        """Stop the loop; with `final`, look once more (a job submitted in the command's last moments). Say what was seen."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        if final and self.stopped_by is None:
            self.look()
        self.ctx.report.line(f"watched {self.looks} times: {self.recorded} jobs submitted during the command recorded")

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.look()
            if self.stopped_by is not None:
                return
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def look(self) -> None:
        """One look at every queue; a queue that cannot be looked at now is said once and looked at again next time."""
        self.looks += 1
        began = int(self.ctx.aws.server_time("batch") * 1000)
        try:
            found: dict[str, Json] = {}
            existing = self.ctx.batch.queues_named(self.queues)
            for name in self.queues:
                found.update(self._new_on(name, existing.get(name), began))
            details = self.ctx.batch.describe(found)
            self.recorded += len(watch(self.ctx, self.manifest, [details[i] for i in found if i in details]))
        except LeaseError as exc:  # another run took the deploy's queues over: it owns them now
            self.stopped_by = str(exc)
            self.ctx.report.error(f"stopped watching: {exc}")
        except JobguardError as exc:  # AWS or the store failed after retries: the next look tries again
            self._say("*", f"watching: {exc}; looking again in {self.interval:g} s")

    def _new_on(self, name: str, queue: Queue | None, began: int) -> dict[str, Json]:
        """Summaries of the jobs created on queue `name` since the drain began that nobody has recorded."""
        try:
            if queue is None or queue.status in GONE:
                # Seen gone: its jobs end (DeleteJobQueue), and a queue made again under the name will not list them.
                # Only a queue that existed (drained, or seen since): a renamed queue's new name comes later.
                if name in self._existed and name not in self.manifest.window.get(WATCHED_DELETED, []):
                    self.manifest.note_watched_deleted([name])
                    self.ctx.manifests.save(self.manifest)
                    self.ctx.report.line(f"queue {name}: {'deleted' if queue is None else queue.status} during the command")
                return {}
            self._existed.add(name)
            since = self._since.get(name, self.opened_ms - CLOCK_MARGIN_MS)
            summaries = self.ctx.batch.list_created_after(name, since)
        except LeaseError:
            raise
        except JobguardError as exc:
            self._say(name, f"queue {name}: cannot be looked at now ({exc}); looking again in {self.interval:g} s")
            return {}
        self._said.pop(name, None)
        self._since[name] = max(since, began - LAG_MS)
        return {str(s["jobId"]): s for s in summaries if str(s["jobId"]) not in self.manifest.jobs and not ended_before(s, self.opened_ms)}

    def _say(self, key: str, text: str) -> None:
        if self._said.get(key) != text:
            self._said[key] = text
            self.ctx.report.notice(text)
