"""The deploy window: jobs the application submitted while the deploy ran, and which of them the deploy killed.

Drain lists the queues at risk and stops what it finds; the application keeps submitting. A job
created after drain began is in no drain pass: if the apply then takes its host, its compute
environment or its queue away, Batch ends it FAILED and nobody brings it back. Restore finds
these "late" jobs (its sweep, or `jobguard run`'s watcher records them while the apply runs) and
judges each from what Batch says of it (`judge`); `decide` is the one place that says whether a
late job killed by the deploy is replaced or left to someone else (its policy, its workflow engine).

What each deploy-caused end leaves in a JobDetail (README, "The deploy window", has the sources):
- its host taken away (compute environment replaced, deleted, or updated with
  terminateJobsOnUpdate; Batch runs the job on instances of the compute environment): FAILED,
  statusReason `Host EC2 (instance i-...) terminated.`, no exit code of its own;
- its queue deleted (DeleteJobQueue terminates every job of the queue, about 16 a second): FAILED,
  with no exit code; the reason text is not documented, so the job's queue being gone decides;
- a job PENDING on a job the deploy killed: FAILED, `Dependent Job failed`.
A job that failed on its own carries an exit code (`Essential container in task exited`), a
timeout (`Job attempt duration exceeded timeout`), or the reason whoever called TerminateJob gave.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from . import engines
from .engines import EngineRule
from .manifest import LATE, OPENED, SWEPT, JobRecord
from .policies import ABANDON, APP_RETRIES, WAIT, Policy

HOST_TERMINATED = "Host EC2 (instance *) terminated*"  # Batch's statusReason when a job's instance went away
DEPENDENCY_FAILED = "Dependent Job failed"
TIMEOUT = "Job attempt duration exceeded timeout"
QUEUE_DELETED = "*queue*delet*"  # a statusReason naming its queue's deletion (the text is not documented: matched loosely)
ARRAY_CHILD_FAILED = "Array Child Job failed"  # an array parent's statusReason: its children say what ended them
JOBGUARD = "jobguard:"  # how the reason of every stop jobguard asks for begins (a drain's, a double's)
RAN_AGAIN_MS = 1000  # a job that ended this long after its last attempt ended was queued again after it

# What Batch says of a late job, judged
KILLED = "killed"  # ended FAILED because the deploy took its host or queue away
OWN = "own"  # ended FAILED on its own: exit code, timeout, a reason set by the app or a person
SUCCEEDED = "succeeded"
ACTIVE = "active"  # still queued or running
KINDS = (KILLED, OWN, SUCCEEDED, ACTIVE)
KIND_WORDS = {KILLED: "killed by the deploy", OWN: "failed on their own", SUCCEEDED: "succeeded", ACTIVE: "still active"}


@dataclass(frozen=True)
class Verdict:
    """What became of a late job, and the words that say why."""

    kind: str
    why: str

    @property
    def killed(self) -> bool:
        """True when the deploy killed it."""
        return self.kind == KILLED


@dataclass(frozen=True)
class Decision:
    """What restore does with a late job: replace it (exactly once), or leave it, and why."""

    replace: bool
    why: str


def judge(job: Mapping[str, Any], queue_gone: bool = False, killed: Collection[str] = ()) -> Verdict:
    """Judge a late job from its JobDetail (or JobSummary).

    `queue_gone`: its queue no longer exists (the deploy deleted it, perhaps made a new one of the
    same name): a FAILED end with no exit code of its own was the deletion. `killed`: ids of jobs
    the deploy killed; a job that failed because one of them failed was killed by the deploy too.
    """
    status = str(job.get("status", ""))
    reason = str(job.get("statusReason") or "")
    if status == "SUCCEEDED":
        return Verdict(SUCCEEDED, "succeeded")
    if status != "FAILED":
        return Verdict(ACTIVE, f"still {status or 'UNKNOWN'}")
    if fnmatch.fnmatchcase(reason, HOST_TERMINATED):
        return Verdict(KILLED, f"its host was taken away ({reason})")
    if reason.startswith(JOBGUARD):  # a drain stopped it: that deploy's manifest owes it, whatever its id or queue says
        return Verdict(OWN, f"stopped by jobguard ({reason})")
    code = exit_code(job)
    if reason.startswith(DEPENDENCY_FAILED):
        failed = [d for d in dependency_ids(job) if d in killed]
        if failed:
            return Verdict(KILLED, f"it depended on {failed[0]}, which the deploy killed")
        return Verdict(OWN, "a job it depended on failed")
    if code is not None:
        return Verdict(OWN, f"exit code {code}" + (f" ({reason})" if reason else ""))
    if reason.startswith(TIMEOUT):
        return Verdict(OWN, "timed out")
    if queue_gone or fnmatch.fnmatch(reason.lower(), QUEUE_DELETED):
        return Verdict(KILLED, "its queue was deleted" + (f" ({reason})" if reason else ""))
    return Verdict(OWN, f"ended FAILED: {reason}" if reason else "ended FAILED with no reason given")


def failed_array(job: Mapping[str, Any]) -> bool:
    """An array parent Batch failed because children failed: judged by its children (`judge_array`)."""
    reason = str(job.get("statusReason") or "")
    return job.get("status") == "FAILED" and reason.startswith(ARRAY_CHILD_FAILED) and bool((job.get("arrayProperties") or {}).get("size"))


def judge_array(parent: Mapping[str, Any], children: list[Verdict], queue_gone: bool = False) -> Verdict:
    """An array parent from the verdicts of its FAILED children: killed by the deploy when any child was
    (restore replaces the array whole, as drain stops it whole); else as the parent alone says."""
    killed = [v for v in children if v.killed]
    if killed:
        return Verdict(KILLED, f"{len(killed)} of its children were killed by the deploy ({killed[0].why})")
    return judge(parent, queue_gone)


def exit_code(job: Mapping[str, Any]) -> int | None:
    """The exit code of the container whose end was the job's end, None when it has none.

    Only the last attempt counts, and only when the job ended with it: a job its retryStrategy queued
    again after an attempt failed (exit 1), then killed by the deploy before it ran again, ended later
    than that attempt, with no exit code of its own (its `container` may still show the old one).
    """
    attempts = [a for a in job.get("attempts") or [] if isinstance(a, Mapping)]
    last = attempts[-1] if attempts else {}
    ended, attempt_ended = job.get("stoppedAt"), last.get("stoppedAt")
    if isinstance(ended, int) and isinstance(attempt_ended, int) and ended - attempt_ended > RAN_AGAIN_MS:
        return None
    for place in (job.get("container"), last.get("container")):
        if isinstance(place, Mapping) and isinstance(place.get("exitCode"), int):
            return int(place["exitCode"])
    return None


def dependency_ids(job: Mapping[str, Any]) -> list[str]:
    """The jobs a JobDetail depends on (an array's id for a dependency on one of its children)."""
    return [str(d.get("jobId", "")).split(":", 1)[0] for d in job.get("dependsOn") or [] if isinstance(d, Mapping)]


def decide(record: JobRecord, verdict: Verdict, policies: tuple[Policy, ...], rules: tuple[EngineRule, ...]) -> Decision:
    """The one decision for a late job: replaced only when the deploy killed it and the job's decision
    (`engines.decide`: its policy, else its workflow engine's rule, else resubmit) lets jobguard resubmit it.
    An engine's task is left to its engine, which retries or fails its own tasks."""
    if not verdict.killed:
        return Decision(False, verdict.why)
    chosen = engines.decide(record, policies, rules)
    if chosen.action == ABANDON and record.engine and not chosen.by_policy:
        return Decision(False, f"{verdict.why}; {engines.left_to_engine(record)}")
    if chosen.action == APP_RETRIES:
        return Decision(False, f"{verdict.why}; left to the application, which retries its own failed jobs (policy app-retries)")
    if chosen.action == ABANDON:
        return Decision(False, f"{verdict.why}; policy abandon: not resubmitted")
    if chosen.action == WAIT:
        return Decision(False, f"{verdict.why}; policy wait: jobguard neither stops nor resubmits it")
    return Decision(True, verdict.why)


def window_line(deploy_id: str, window: Mapping[str, Any]) -> str | None:
    """One sentence on a deploy's window for people (summary, status); None when the deploy has none."""
    if OPENED not in window:
        return None
    opened = int(window[OPENED])
    if SWEPT not in window:
        return f"deploy {deploy_id}: deploy window open since {hms(opened)}: restore sweeps it for jobs the deploy kills"
    closed = int(window[SWEPT])
    minutes, seconds = divmod(max(0, closed - opened) // 1000, 60)
    head = f"deploy {deploy_id}: deploy window {hms(opened)} -> {hms(closed)} ({minutes}m {seconds:02d}s)"
    found = window.get("found") or {}
    total = sum(found.values())
    if not total:
        return f"{head}: no job was submitted to its queues meanwhile"
    parts = ", ".join(f"{found[k]} {KIND_WORDS[k]}" for k in KINDS if found.get(k))
    return f"{head}: {total} late jobs: {parts} (only those killed by the deploy are resubmitted)"


def late_line(record: JobRecord) -> str:
    """What became of one late job, for people: replaced (old -> new) and why, or left alone and why."""
    why = (record.reason or "").removeprefix(LATE).lstrip("; ") or "submitted during the deploy"
    if record.replacement_id:
        return f"late job {record.job_name}: {record.job_id} -> {record.replacement_id}: {why}"
    said = record.error or record.note or why
    return f"late job {record.job_name} [{record.job_id}]: {record.outcome}: {said}"


def hms(ms: int) -> str:
    """A window stamp (ms since the epoch) as people read it."""
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%H:%M:%S UTC")
