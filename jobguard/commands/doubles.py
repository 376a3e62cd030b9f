"""Doubles: two live replacements of one original.

SubmitJob has no idempotency token, and no lease can fence a call already on its way: a run paused
(a frozen runner VM) between its last lease check and the send of a SubmitJob, or before it read
the answer, can make a job after another run of the deploy took over, looked for that job, missed
it, and submitted its own. Two things bring such a double back to one:

1. The run that sent it (`Unconfirmed`). Every job a restore submits is unconfirmed until a lease
   renewal *sent after its answer arrived* succeeds: a renewal is a write conditional on the
   version this run last wrote, so its success proves no other run took the queue over in between.
   Each page of submissions ends with such a renewal (`Leases.confirm`). A run that learns it lost
   its lease, or cannot show it still holds it, stops every job it made since its last proven hold
   (unless the deploy's manifest now records that very job as the replacement: the new holder
   found and kept it), reports each one, and exits 3.
2. Whoever owns the deploy (`reconcile`). After its submissions, and again `lookup-window` later
   (ListJobs may not yet list a job made a moment ago), restore lists the replacements of every job
   an earlier run of the deploy may have sent (its record was already `submitting`) by jobguard's
   mark. For an original with more than one live replacement it keeps the one its manifest records
   and stops the others; when the recorded one was itself stopped as a double, it keeps the oldest
   live one instead, or, with none left, makes the job owed again so restore submits it.
   `jobguard status --check` runs the same for a person.

Stopping is TerminateJob, not CancelJob: on a job not yet started (a just-submitted double is
SUBMITTED or RUNNABLE) both cancel it; TerminateJob also ends one that started meanwhile, where
CancelJob would do nothing. The reason each stop carries begins with DOUBLE_REASON, so a later
look tells a double jobguard stopped from a replacement that failed on its own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from ..adapters.batch import LIFECYCLE, Queue
from ..adapters.lease import Leases
from ..domain.manifest import DRAIN, RESTORE, RESUBMITTED, SKIPPED, SUBMITTING, TERMINATED, JobRecord, Manifest
from ..domain.tags import mark_of
from ..errors import JobCallError, ManifestError
from .context import Context

DOUBLE_REASON = "jobguard: double"  # how the reason of every double jobguard stops begins
NOT_STARTED = ("SUBMITTED", "PENDING", "RUNNABLE")

Json = dict[str, Any]
QueueLookup = Callable[[str], Queue | None]


# -- finding replacements by their mark -------------------------------------------------------
def by_name(records: Iterable[JobRecord], successors: dict[str, str]) -> dict[tuple[str, str], set[str]]:
    """Original ids by (queue, job name), for each queue a replacement may be on: the job's own and
    the name the deploy gave that queue."""
    groups: dict[tuple[str, str], set[str]] = {}
    for record in records:
        for queue in (record.queue, successors.get(record.queue)):
            if queue:
                groups.setdefault((queue, record.job_name), set()).add(record.job_id)
    return groups


def marked_jobs(ctx: Context, queue_of: QueueLookup, manifest: Manifest, records: Iterable[JobRecord]) -> dict[str, dict[str, Json]]:
    """Every job Batch still knows that carries this deploy's mark for one of `records`: original id -> {job id: JobDetail}.

    Each (queue, name) is listed once: the cost grows with the jobs, not with their square.
    """
    found: dict[str, dict[str, Json]] = {}
    for (queue, name), group in by_name(records, manifest.queue_successors).items():
        if queue_of(queue) is None:
            continue  # a queue the deploy deleted holds no replacement
        candidates = [s["jobId"] for s in ctx.batch.list_named(queue, name)]
        for job_id, job in ctx.batch.describe(candidates).items():
            mark = mark_of(job)
            if mark and mark.deploy_id == manifest.deploy_id and mark.original_id in group:
                found.setdefault(mark.original_id, {})[job_id] = job
    return found


def stopped_as_double(job: Json) -> bool:
    """True for a job jobguard stopped as a double (whatever state the stop has reached)."""
    return str(job.get("statusReason") or "").startswith(DOUBLE_REASON)


def usable(jobs: dict[str, Json]) -> str | None:
    """The replacement a lookup should adopt among several: the oldest not stopped as a double."""
    kept = sorted((j for j in jobs.items() if not stopped_as_double(j[1])), key=lambda j: (j[1].get("createdAt") or 0, j[0]))
    return kept[0][0] if kept else None


# -- the run that sent it -----------------------------------------------------------------------
@dataclass(frozen=True)
class _Sent:
    answered: float  # this process's monotonic clock when SubmitJob's answer arrived
    record: JobRecord
    job_id: str


@dataclass
class Unconfirmed:
    """The jobs one restore of one manifest made that no lease renewal has yet proven were made while it held its queues."""

    ctx: Context
    manifest: Manifest
    leases: Leases | None
    sent: list[_Sent] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, record: JobRecord, job_id: str) -> None:
        """SubmitJob answered with `job_id` (called on worker threads)."""
        with self.lock:
            self.sent.append(_Sent(time.monotonic(), record, job_id))

    def confirm(self) -> None:
        """Renew the leases now; every job answered before is proven. Raises LeaseError when that cannot be shown."""
        if self.leases is None or not self.sent:
            return
        proven = self.leases.confirm()
        with self.lock:
            self.sent = [s for s in self.sent if s.answered >= proven]

    def cancel(self) -> None:
        """This run lost its lease (or cannot show it holds it): stop each job it made since its last proven hold."""
        if self.leases is None:
            return
        with self.lock:
            sent, self.sent = [s for s in self.sent if s.answered >= self.leases.proven(s.record.queue)], []
        if not sent:
            return
        now = self._recorded()
        guard, self.ctx.aws.guard = self.ctx.aws.guard, None  # the lease is lost: these stops undo what this run did
        try:
            for each in sent:
                if now.get(each.record.job_id) == each.job_id:
                    self.ctx.report.job(each.record, "kept", f": {each.job_id} is the replacement the run that took over recorded")
                    continue
                _stop_double(self.ctx, self.manifest, each.record, each.job_id, "made after this run lost its lease", None)
        finally:
            self.ctx.aws.guard = guard

    def _recorded(self) -> dict[str, str | None]:
        """Original -> the replacement the deploy's manifest records now (the run that took over may have found ours)."""
        try:
            current = self.ctx.manifests.load(self.manifest.deploy_id)
        except Exception as exc:
            self.ctx.report.warning(f"cannot read deploy {self.manifest.deploy_id}'s manifest ({exc}): every unconfirmed job is stopped")
            return {}
        return {r.job_id: r.replacement_id for r in current} if current else {}


# -- whoever owns the deploy ----------------------------------------------------------------------
@dataclass
class Reconciled:
    """What a reconciliation did: the doubles stopped, and the records owed again."""

    stopped: list[tuple[str, str]] = field(default_factory=list)  # (original, double)
    reopened: list[JobRecord] = field(default_factory=list)


def reconcile(ctx: Context, queue_of: QueueLookup, manifest: Manifest, records: list[JobRecord], passes: int = 2) -> Reconciled:
    """Leave each of `records` (resubmitted) with one live replacement: `passes` looks, `lookup-window` apart (ListJobs lags)."""
    done = Reconciled()
    for number in range(passes):
        if number:
            window = ctx.options.lookup_window
            ctx.report.notice(f"looking for doubles again in {window:g} s: ListJobs may not yet show a job made a moment ago")
            time.sleep(window)
        current = [manifest.jobs[r.job_id] for r in records if manifest.jobs[r.job_id].outcome == RESUBMITTED]
        if not current:
            break
        found = marked_jobs(ctx, queue_of, manifest, current)
        for record in current:
            _one(ctx, manifest, record, found.get(record.job_id, {}), done)
    return done


def _one(ctx: Context, manifest: Manifest, record: JobRecord, jobs: dict[str, Json], done: Reconciled) -> None:
    recorded = record.replacement_id or ""
    keep: str | None = recorded
    if recorded in jobs and stopped_as_double(jobs[recorded]):
        live = {i: j for i, j in jobs.items() if j.get("status") in LIFECYCLE}
        keep = usable(live)
        if keep is None:
            note = f"its replacement {recorded} was stopped as a double and no other is live: owed again"
            record = record.moved_to(TERMINATED, RESTORE, replacement_id=None, replacement_job_definition=None, note=note)
            manifest.put([record])
            ctx.report.job(record, "owed again")
            done.reopened.append(record)
            return
        record = record.moved_to(
            RESUBMITTED, RESTORE, replacement_id=keep, note=f"kept {keep}: the recorded {recorded} was stopped as a double"
        )
        manifest.put([record])
    for job_id, job in sorted(jobs.items()):
        if job_id == keep or stopped_as_double(job) or job.get("status") not in LIFECYCLE:
            continue
        record = _stop_double(ctx, manifest, record, job_id, f"the deploy's manifest records {keep}", str(job.get("status")))
        done.stopped.append((record.job_id, job_id))


def _stop_double(ctx: Context, manifest: Manifest, record: JobRecord, job_id: str, why: str, status: str | None) -> JobRecord:
    """Stop one double, note it on the record, report it and send its event; the record as noted."""
    seen = f"{status}, " if status else ""
    reason = f"{DOUBLE_REASON} of original {record.job_id} (deploy {manifest.deploy_id}): {why}"
    try:
        ctx.batch.terminate(job_id, reason[:1000])
    except JobCallError as exc:
        ctx.report.error(f"{record.job_name} [{record.job_id}]: could not stop double {job_id} ({exc}); stop it by hand")
        return record
    text = f"double {job_id} ({seen}{why}) stopped"
    noted = _with_note(record, text)
    manifest.put([noted])
    ctx.report.job(noted, "double cancelled")
    ctx.events.double(manifest, noted, job_id, status)
    return noted


def _with_note(record: JobRecord, text: str) -> JobRecord:
    note = f"{record.note}; {text}" if record.note else text
    return replace(record, note=note[-1500:])


# -- another deploy's drain ----------------------------------------------------------------------
def doubles_of_others(ctx: Context, jobs: Iterable[Json], deploy_id: str, manifests: dict[str, Manifest | None]) -> dict[str, str]:
    """Jobs a drain found that are doubles left live by an earlier deploy: job id -> the replacement that deploy records.

    A double whose run died after its owner had finished lives until that deploy is reconciled
    again. A later deploy's drain must not record it like any job: its restore would resubmit it,
    and the original would then run twice for good, under a mark no reconciliation of the earlier
    deploy looks for. A job is such a double when its mark names another deploy whose manifest
    records a different replacement of that original, and the recorded one was not itself stopped
    as a double (then this job may be the one that deploy's reconciliation keeps). `manifests`: the
    earlier deploys' manifests read so far (each is read once per drain, not once per page).
    """
    candidates: dict[str, tuple[str, str]] = {}  # job id -> (its deploy, the replacement that deploy records)
    for job in jobs:
        mark = mark_of(job)
        if mark is None or mark.deploy_id == deploy_id:
            continue
        if mark.deploy_id not in manifests:
            try:
                manifests[mark.deploy_id] = ctx.manifests.load(mark.deploy_id)
            except ManifestError:
                manifests[mark.deploy_id] = None  # unreadable here (another region's, damaged): an ordinary job
        record = (manifest := manifests[mark.deploy_id]) and manifest.jobs.get(mark.original_id)
        job_id = str(job["jobId"])
        if record and record.outcome == RESUBMITTED and record.replacement_id and record.replacement_id != job_id:
            candidates[job_id] = (mark.deploy_id, record.replacement_id)
    recorded = ctx.batch.describe({r for _, r in candidates.values()}) if candidates else {}
    return {i: r for i, (_, r) in candidates.items() if not stopped_as_double(recorded.get(r, {}))}


def stop_double_of_other(ctx: Context, record: JobRecord, job: Json, kept: str) -> JobRecord:
    """Stop a double an earlier deploy left live (`doubles_of_others`) and return its record: skipped, never resubmitted."""
    mark = mark_of(job)
    earlier = mark.deploy_id if mark else "?"
    original = mark.original_id if mark else "?"
    why = f"deploy {earlier} records {kept} as the replacement of {original}"
    ctx.batch.terminate(record.job_id, f"{DOUBLE_REASON} of original {original} (deploy {earlier}): {why}"[:1000])
    note = f"a double of deploy {earlier}'s original {original} ({why}): stopped, not resubmitted"
    skipped = record.moved_to(SKIPPED, DRAIN, note=note)
    ctx.report.job(skipped, "double cancelled")
    return skipped


def contested(records: Iterable[JobRecord]) -> list[JobRecord]:
    """Records an earlier run may already have sent SubmitJob for (it marked them `submitting`)."""
    return [r for r in records if SUBMITTING in r.times]
