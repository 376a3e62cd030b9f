"""drain: record every active job of the queues at risk as it was submitted, stop it, and wait
until it has stopped.

1. The queues: the configured ones (each must exist), or those of them the Terraform plan puts
   at risk. Their deploy leases are taken (adopting a dead deploy's unfinished work).
2. Passes over the queues until a pass that lists their statuses in lifecycle order finds nothing
   new (a first pass lists them side by side, to save round trips). Each pass also finds, in every
   queue, the jobs PENDING on a job it stops (Batch would fail them): they are recorded and stopped
   too, "depends on X".
3. No job is stopped before its record is in the store, and each is marked `terminating` in the
   store before its stop call is sent (TerminateJobs, 50 jobs a call; TerminateJob per job where
   the endpoint does not know TerminateJobs), so a later run can tell "sent" from "never sent".
4. Stopping is asynchronous: drain waits (up to stop-timeout) until every job it stopped has
   ended, records each end state (a job that SUCCEEDED meanwhile is `finished`, never
   resubmitted), and exits 1 naming any still running. Meanwhile, once `lookup-window` has passed
   (ListJobs lags), one more pass in lifecycle order looks for jobs it was slow to show.
With a grace period, queued jobs are drained first and running ones get the grace period to
finish. Policies keep jobs running (wait) or keep them from coming back (abandon).
"""

from __future__ import annotations

import math
import os
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..adapters.aws import Aws, chunks
from ..adapters.batch import LIFECYCLE, Batch, JobState, Queue, children_in
from ..adapters.lease import Leases, lease_scope
from ..domain import engines
from ..domain.host_retry import retried_by_batch
from ..domain.manifest import (
    DRAIN,
    FAILED,
    FINISHED,
    KEPT,
    OPENED,
    RECORDED,
    SKIPPED,
    TERMINATED,
    TERMINATING,
    JobRecord,
    Manifest,
)
from ..domain.policies import WAIT
from ..errors import JobCallError, JobguardError, UsageError
from ..options import Options
from .context import Context, github_origin
from .dependents import LateLook, Waiting, killed_by, list_waiting, look_late
from .doubles import doubles_of_others, stop_double_of_other
from .manifests import ForeignManifestError
from .records import records_of
from .window import CLOCK_MARGIN_MS, close_drain, open_window, watch

if TYPE_CHECKING:
    from ..domain.plan import Risk

QUEUED = ("SUBMITTED", "PENDING", "RUNNABLE")
RETRIED_BY_BATCH = "started jobs left running: their retryStrategy has Batch run them again after the apply (same job id)"
STARTED = ("STARTING", "RUNNING")
RECORD_PAGE = 500  # records saved per store write, before any of them is stopped
MAX_PASSES = 10
ENDED_PAGE = 10 * RECORD_PAGE  # ends seen while waiting, saved at once
STORE_CLOCK_SLACK = 1.0  # how well two runs agree on the store's clock (S3's Date has whole seconds)
Json = dict[str, Any]
Kept = tuple[str, str, int]  # what a pass reads of a JobSummary: job id, job definition, array size (0: none)
Listing = dict[str, list[Kept]]  # a queue's jobs by status, as listed at the start


@dataclass(frozen=True)
class Target:
    """A queue to drain, why it is at risk, and the name it will have after the deploy when it is renamed."""

    queue: Queue
    reason: str
    successor: str | None = None
    deleted: bool = False  # the plan deletes (or replaces) the queue itself
    every_job: bool = True  # False: the queue stays, only its instances go (STARTING/RUNNING jobs at risk)
    grace_minutes: int = 0  # an update that lets running jobs finish first: for this long
    hosts_lost: bool = False  # only instances go, terminated (no update): Batch's own retries apply (domain/host_retry.py)

    @property
    def statuses(self) -> tuple[str, ...]:
        """The statuses whose jobs are at risk (PENDING without every_job: array parents whose children run)."""
        return LIFECYCLE if self.every_job else ("PENDING", *STARTED)


@dataclass
class Drained:
    """What a drain did, for the summary and the exit code."""

    manifest: Manifest
    facts: list[str] = field(default_factory=list)
    problems: int = 0


def choose_queues(ctx: Context, early: EarlyReads) -> tuple[list[Target], list[str]]:
    """The configured queues (each must exist); with a plan, those of them it puts at risk. Facts for the summary.

    `early`: the configured queues, and every queue of the account (a plan may name a compute environment).
    """
    if not ctx.options.queues:
        raise UsageError(
            "drain: name the queues jobguard may act on with --queue NAME (or `queues:` in the config)",
            hint="the Terraform module's queue_names output is the list its policy allows",
        )
    queues: dict[str, Queue] = {}
    named = early.named.result()
    by_arn = {q.arn: q for q in named.values()}
    for name in ctx.options.queues:
        found = named.get(name) or by_arn.get(name)
        if found is None:
            raise UsageError(f"queue {name}: does not exist in account {ctx.account}, {ctx.region}; nothing was drained")
        queues[found.name] = found
    if ctx.options.plan is None:
        return [Target(q, "configured") for q in queues.values()], []
    return _at_risk(ctx, queues, early.queues)


def _at_risk(ctx: Context, queues: dict[str, Queue], account_queues: Callable[[], list[Queue]]) -> tuple[list[Target], list[str]]:
    from ..domain.plan import exposure, read_plan, risks  # only a drain given --plan reads one

    assert ctx.options.plan is not None
    path = Path(ctx.options.plan)
    body = _read_plan_file(path)
    found: dict[str, list[Risk]] = {}
    successors: dict[str, str] = {}
    facts: list[str] = []
    every: list[Queue] | None = None
    for risk in risks(read_plan(body, str(path)), ctx.options.triggers):
        if risk.every_queue:
            names = list(queues)
        elif risk.queue:
            names = [risk.queue]
        elif risk.compute_environment:
            every = every if every is not None else account_queues()
            names = [q.name for q in every if _uses(q, risk.compute_environment)]
        else:
            names = []
        for name in names:
            if name in queues:
                found.setdefault(name, []).append(risk)
                if risk.successor and risk.queue == name:
                    successors[name] = risk.successor
            else:
                facts.append(f"queue {name}: at risk ({risk.reason}) but not one of the configured queues: left alone")
    for name in queues:
        if name not in found:
            facts.append(f"queue {name}: not at risk: the plan deletes, replaces or rebuilds nothing it runs on")
    targets = []
    for name, its in found.items():
        exposed = exposure(its)
        deleted = any(r.queue_goes and r.queue == name for r in its)
        targets.append(
            Target(
                queues[name], exposed.reason, successors.get(name), deleted, exposed.every_job, exposed.grace_minutes, exposed.hosts_lost
            )
        )
    return targets, facts


def _read_plan_file(path: Path) -> bytes:
    """The plan's bytes; only a regular file is read (a FIFO would block, /dev/zero never ends)."""
    from ..domain.plan import MAX_PLAN_BYTES

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the plan ({exc.strerror})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UsageError(f"{path}: not a regular file: write the plan with `terraform show -json PLANFILE > plan.json`")
        with os.fdopen(os.dup(fd), "rb") as stream:
            return stream.read(MAX_PLAN_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the plan ({exc.strerror})") from None
    finally:
        os.close(fd)


def _uses(queue: Queue, environment: str) -> bool:
    return any(e == environment or e.rsplit("/", 1)[-1] == environment.rsplit("/", 1)[-1] for e in queue.compute_environments)


@dataclass(frozen=True)
class EarlyReads:
    """What a drain reads before it knows its account or that its queues exist: only reads, of Batch."""

    named: Future[dict[str, Queue]]  # the configured queues that exist, by name
    queues: Callable[[], list[Queue]]  # every queue of the account (with a plan, read at the start)
    listing: Future[dict[str, Listing]] | None  # the first pass's listing, by configured queue name
    unused: threading.Event  # set when the drain ends before its first pass: the listing reads no more pages
    pool: Executor  # where they run; the drain reads more on it


def read_early(batch: Batch, aws: Aws, options: Options, pool: Executor) -> EarlyReads:
    """Start, on `pool`, the reads a drain can make first: the configured queues; with a plan, every queue of the
    account (a risk may name a compute environment, not a queue); without one (every active job of every configured
    queue is at risk) and without --dry-run, the first pass's listing. A run that stops before it uses them has
    changed nothing. (Not the waiting jobs: a job coming to wait on one the drain stops while it waits for a lease
    would be missing from them.)"""
    unused = threading.Event()
    named = pool.submit(batch.queues_named, options.queues)
    queues = pool.submit(batch.queues).result if options.plan is not None else batch.queues
    listing = pool.submit(list_early, batch, aws, options.queues, unused) if options.plan is None and not options.dry_run else None
    return EarlyReads(named, queues, listing, unused, pool)


@contextmanager
def reads_early(batch: Batch, aws: Aws, options: Options) -> Iterator[EarlyReads]:
    """`read_early` on a pool of its own, for the time of the block; a block that fails (a queue missing, a lease
    held, Ctrl-C, no credentials) lets the listing stop after the page in flight instead of reading every page."""
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="jobguard-early") as pool:
        early = read_early(batch, aws, options, pool)
        try:
            yield early
        except BaseException:
            early.unused.set()
            raise


def drain(ctx: Context, deploy_id: str, leases: Leases | None = None, early: EarlyReads | None = None) -> Drained:
    """Drain the queues at risk into the manifest of `deploy_id`.

    `leases`: the caller's, held on after the drain (`jobguard run` holds them through the apply and
    lets them go itself); by default the drain takes its own and keeps them for its deploy. `early`: the
    reads `read_early` started (the CLI starts them beside GetCallerIdentity); by default, started here.
    """
    if early is not None:
        return _drain(ctx, deploy_id, leases, early)
    with reads_early(ctx.batch, ctx.aws, ctx.options) as started:
        return _drain(ctx, deploy_id, leases, started)


def _drain(ctx: Context, deploy_id: str, leases: Leases | None, early: EarlyReads) -> Drained:
    targets, facts = choose_queues(ctx, early)
    for fact in facts:
        ctx.report.line(fact)
    if ctx.options.plan is not None and not targets:
        ctx.report.line("the plan puts none of the configured queues at risk: nothing to drain")
    for target in targets:
        if target.reason != "configured":
            ctx.report.line(f"queue {target.queue.name}: at risk: {target.reason}{_scope(target)}")
    if ctx.options.dry_run:
        return _dry_run(ctx, deploy_id, targets, facts)
    _check_stored(ctx, deploy_id)
    held = leases or Leases(ctx.store, deploy_id, ctx.options.lease, ctx.report.notice, lease_scope(ctx.account, ctx.region))
    try:
        held.acquire(t.queue.name for t in targets)
        ctx.manifests.fence = ctx.aws.guard = held.check
        # The account's queues, whose waiting jobs the first pass lists, read once the leases are held (beside the
        # steps before that pass): the wait for a lease may be long, and a queue made meanwhile may hold a job
        # waiting on one the pass stops (Batch would fail it; on a queue jobguard may not act on, it is lost).
        fresh = early.pool.submit(ctx.batch.queues)
        submitted = early.pool.submit(held.last_submitted, [t.queue.name for t in targets])
        run = _Drain(ctx, held, deploy_id, facts, early.listing, fresh, submitted)
        run.go(targets)
        return run.result()
    finally:
        if leases is None:
            ctx.manifests.fence = lambda: None
            ctx.aws.guard = None
            held.release(keep_for_deploy=True, raise_errors=sys.exc_info()[0] is None)  # a failed release fails the run


def _check_stored(ctx: Context, deploy_id: str) -> None:
    """Check every manifest the drain reads before a lease is taken: a damaged one stops it with nothing changed.

    They are read again under the leases (another run may change them meanwhile).
    """
    ctx.manifests.load(deploy_id)
    for other in ctx.manifests.open_ids():
        if other != deploy_id:
            with suppress(ForeignManifestError):
                ctx.manifests.load(other)


def _dry_run(ctx: Context, deploy_id: str, targets: list[Target], facts: list[str]) -> Drained:
    manifest = ctx.manifests.new(deploy_id, github_origin())
    for target in targets:
        ids = exposed_ids(ctx, target, LIFECYCLE, lambda job_id: False)
        what = "active jobs" if target.every_job else "started jobs (their instances go)"
        if target.hosts_lost:
            details = ctx.batch.describe(ids)
            retried = [i for i in ids if i in details and retried_by_batch(details[i])]
            ids = [i for i in ids if i not in retried]
            if retried:
                ctx.report.line(f"queue {target.queue.name}: {len(retried)} {RETRIED_BY_BATCH}")
        ctx.report.line(f"queue {target.queue.name}: {len(ids)} {what} would be drained")
        for summary_id in ids[:50]:
            ctx.report.line(f"  would drain  {summary_id}")
        for line in _planned_engines(ctx, target.queue.name, ids):
            ctx.report.line(f"  {line}")
        left = left_queued(ctx, target, set(ids))
        if left is not None:
            ctx.report.line(left)
    return Drained(manifest, facts)


def _scope(target: Target) -> str:
    if target.every_job:
        return ""
    if target.grace_minutes:
        return f"; its running jobs get {target.grace_minutes} minutes to finish, then are drained; queued jobs stay"
    return "; only its started jobs are drained, queued jobs stay"


def exposed_ids(
    ctx: Context,
    target: Target,
    statuses: tuple[str, ...],
    known: Callable[[str], bool],
    side_by_side: bool = False,
    definitions: set[str] | None = None,
    listed_early: Listing | None = None,
) -> list[str]:
    """Ids of the target's jobs in `statuses` that the plan puts at risk, in listing order; `known` ids left out.

    The statuses are listed in lifecycle order, each after the one before has answered, so that a job
    moving on meanwhile is still seen; `side_by_side` lists them at once, which saves a round trip a
    status but may miss a job moving on between two listings (a pass like that never confirms that
    every job was found). `definitions`: the job definitions of the jobs found are added to it (a
    summary names its job's), so that they can be described beside the jobs. `listed_early`: the queue's
    statuses as `list_early` listed them side by side, used instead of listing again.

    Where only instances go, a PENDING job is at risk only as an array parent whose children have
    started (Batch keeps the parent PENDING while they run); the PENDING jobs that depend on a job
    drained are found as dependents, in every queue.
    """

    def exposed(status: str) -> tuple[list[str], list[str]]:
        ids: list[str] = []
        parents: list[str] = []
        listed = ctx.batch.list_jobs(target.queue.arn, status) if listed_early is None else map(_summary, listed_early.get(status, []))
        for summary in listed:
            job_id = str(summary["jobId"])
            if known(job_id):
                continue
            if target.every_job or status in STARTED:
                ids.append(job_id)
                if definitions is not None and summary.get("jobDefinition"):
                    definitions.add(str(summary["jobDefinition"]))
            elif (summary.get("arrayProperties") or {}).get("size"):
                parents.append(job_id)
        return ids, parents

    wanted = [s for s in statuses if s in target.statuses]
    listed = ctx.aws.parallel(exposed, wanted) if side_by_side else [exposed(s) for s in wanted]
    ids = [job_id for found, _ in listed for job_id in found]
    parents = [job_id for _, found in listed for job_id in found]
    if parents:
        details = ctx.batch.describe(parents)
        ids += [p for p in parents if p in details and children_in(details[p], STARTED)]
    return ids


def list_early(batch: Batch, aws: Aws, queues: Iterable[str], unused: threading.Event) -> dict[str, Listing]:
    """Each queue's active jobs, its statuses side by side, by the queue's name as configured (a name or an
    ARN). Of each summary, only what a first pass reads is kept (`_kept`). Once `unused`
    is set (the drain ended without it), no further page is read and what is returned is partial."""
    pairs = [(queue, status) for queue in queues for status in LIFECYCLE]

    def listed(pair: tuple[str, str]) -> list[Kept]:
        kept: list[Kept] = []
        for summary in batch.list_jobs(*pair):  # pages are read as the summaries are iterated
            if unused.is_set():
                break
            kept.append(_kept(summary))
        return kept

    listings: dict[str, Listing] = {}
    for (queue, status), summaries in zip(pairs, aws.parallel(listed, pairs), strict=True):
        listings.setdefault(queue, {})[status] = summaries
    return listings


def _kept(summary: Json) -> Kept:
    """A JobSummary as a listing made at the start keeps it: 100 000 jobs cost about 15 MB, not 100 as summaries
    (a job definition's ARN, the same for many jobs, is one string)."""
    size = (summary.get("arrayProperties") or {}).get("size")
    return str(summary["jobId"]), sys.intern(str(summary.get("jobDefinition") or "")), size if isinstance(size, int) else 0


def _summary(kept: Kept) -> Json:
    job_id, definition, size = kept
    return {"jobId": job_id, "jobDefinition": definition, **({"arrayProperties": {"size": size}} if size else {})}


def left_queued(ctx: Context, target: Target, taken: set[str]) -> str | None:
    """Where only instances go: how many queued jobs stay where they are (one listing of each queued status)."""
    if target.every_job:
        return None
    left = {str(s["jobId"]) for status in QUEUED for s in ctx.batch.list_jobs(target.queue.arn, status)} - taken
    return f"queue {target.queue.name}: {len(left)} queued jobs left queued: Batch runs them on the new environment"


def _planned_engines(ctx: Context, queue: str, ids: list[str]) -> list[str]:
    """The plan's grouping of the jobs found by workflow engine: what drain would do with each group."""
    details = ctx.batch.describe(ids)
    definitions = ctx.batch.job_definitions(str(job["jobDefinition"]) for job in details.values())
    planned = [
        engines.with_engine(
            JobRecord(
                job_id=str(job["jobId"]),
                job_arn="",
                job_name=str(job.get("jobName", "")),
                queue=queue,
                job_definition=str(job.get("jobDefinition", "")).rsplit("/", 1)[-1],
                status_at_drain=str(job.get("status", "")),
                submission={},
                outcome=RECORDED,
                stage=DRAIN,
                times={},
            ),
            job,
            ctx.options.engines,
            definitions.get(str(job["jobDefinition"])),
        )
        for job in details.values()
    ]
    return engines.groups(planned, ctx.options.policies, ctx.options.engines)


class _Drain:
    """One drain run: its manifest, the other open deploys, and what it stopped."""

    def __init__(
        self,
        ctx: Context,
        leases: Leases,
        deploy_id: str,
        facts: list[str],
        first: Future[dict[str, Listing]] | None,
        account_queues: Future[list[Queue]],
        submitted: Future[float | None],
    ) -> None:
        self.ctx, self.leases, self.facts = ctx, leases, facts
        self.submitted = submitted  # when a run last submitted to these queues before letting them go (Leases.last_submitted)
        self.first = first  # the configured queues' listing, read at the start: for the first pass only
        self.account_queues: Future[list[Queue]] | None = account_queues  # read under the leases: for the first pass only
        self.manifest = ctx.manifests.load(deploy_id) or ctx.manifests.new(deploy_id, github_origin())
        self.others: dict[str, Manifest] = {}
        self.owner: dict[str, str] = {}  # job id -> another open deploy that owes it
        self.not_queued: set[str] = set()  # left by a queued pass (a running array, a job under policy wait): not new again
        self.marked_by: dict[str, Manifest | None] = {}  # the earlier deploys named by marks of the jobs found: their manifests, read once
        self.hosts_lost_queues: set[str] = set()  # queues that stay, where only instances go, terminated (Target.hosts_lost)
        self.left_to_batch: dict[str, str] = {}  # started job -> its queue: its retryStrategy has Batch run it again
        self.stopping: list[tuple[Manifest, str]] = []  # (manifest, job id) asked to stop by this run
        self.in_flight: tuple[Manifest, list[JobRecord], Future[dict[str, JobCallError]]] | None = None  # a page's stops on their way
        self.problems = 0
        self.finished_in_grace = 0
        self.last_states: dict[str, JobState] = {}  # the wait's last look at the jobs it awaits

    def result(self) -> Drained:
        return Drained(self.manifest, self.facts, self.problems)

    # -- the steps -----------------------------------------------------------------------
    def go(self, targets: list[Target]) -> None:
        if targets:  # nothing at risk: no window to sweep (and nothing keeps the deploy open)
            open_window(self.ctx, self.manifest)
        self.manifest.note_deleted_queues(t.queue.name for t in targets if t.deleted)
        self._load_others()
        self.hosts_lost_queues = {t.queue.name for t in targets if t.hosts_lost}
        for target in targets:
            self.manifest.add_queue(target.queue.name)
            if target.successor:  # the plan renames it: restore submits its jobs to the new name
                self.manifest.queue_successors[target.queue.name] = target.successor
        self.ctx.manifests.save(self.manifest)
        self._adopt({t.queue.name for t in targets})
        # An earlier run may have died between marking `terminating` and sending TerminateJob: send it
        # again (twice is harmless), or the job would run on while every later run waited for it.
        self._continue_recorded(
            self.manifest,
            [
                r
                for r in self.manifest
                if r.outcome == TERMINATING or (r.outcome == RECORDED and r.queue in {t.queue.name for t in targets})
            ],
        )
        self._freeze(self._to_freeze(targets))
        reasons = {t.queue.name: t.reason for t in targets}
        if any(self._grace_of(t) > 0 for t in targets):
            self._passes(targets, QUEUED, reasons, final=False)
            self._grace(targets)
        listed_at = time.monotonic()
        self._passes(targets, LIFECYCLE, reasons, final=True)
        # ListJobs lags: a job created just before the passes may be listed only `lookup-window` later. One more
        # pass looks for it while the stops are awaited, once that window has passed, or when the wait ends, if
        # sooner — never sooner where a configured queue is left alone by the plan: restore does not sweep it, and
        # a job submitted there just before a stop, on a stopped job, is seen by no look but this one. And, stops
        # or not, it looks once ListJobs shows what a restore submitted right before it let these queues go (its
        # replacements, which this deploy's apply would otherwise kill unrecorded).
        self._wait_for_stops(
            lambda: self._passes(targets, LIFECYCLE, reasons, final=True, in_order=True),
            listed_at + self.ctx.options.lookup_window,
            self._shown_by(),
            wait_out=bool(self.ctx.options.queue_names - {t.queue.name for t in targets}),
        )
        for target in targets:
            retried = sum(queue == target.queue.name for queue in self.left_to_batch.values())
            if retried:
                self.facts.append(f"queue {target.queue.name}: {retried} {RETRIED_BY_BATCH}")
                self.ctx.report.line(self.facts[-1])
            left = left_queued(self.ctx, target, set(self.manifest.jobs))
            if left is not None:
                self.ctx.report.line(left)
                self.facts.append(left)
        if targets:
            self.facts.append(close_drain(self.ctx, self.manifest, self.manifest.frozen_queues))
            self.ctx.report.line(self.facts[-1])
            self.ctx.manifests.save(self.manifest)
        self._tell_engines()

    def _tell_engines(self) -> None:
        """The jobs of workflow engines, grouped by engine and role, with what became of them (summary and log)."""
        for line in engines.groups(self.manifest, self.ctx.options.policies, self.ctx.options.engines):
            self.ctx.report.line(line)
            self.facts.append(line)

    def _load_others(self) -> None:
        """Every other open deploy: what it owes is not recorded again (one owner per job). A job
        another deploy kept running (policy wait, resubmit cap) is owed by none: this deploy decides
        again, or its apply would kill the job with no record anywhere."""
        for deploy_id in self.ctx.manifests.open_ids():
            if deploy_id == self.manifest.deploy_id:
                continue
            try:
                other = self.ctx.manifests.load(deploy_id)
            except ForeignManifestError as exc:
                self.ctx.report.notice(f"skipped: {exc}")
                continue
            if other is None:
                continue
            self.others[deploy_id] = other
            for record in other:
                if record.owed:
                    self.owner[record.job_id] = deploy_id

    def _adopt(self, queues: set[str]) -> None:
        """Unfinished work of other deploys on these queues is this run's now: stop what they left running."""
        for other in self.others.values():
            left = [r for r in other if r.queue in queues and r.outcome in (RECORDED, TERMINATING)]
            if not left:
                continue
            self.ctx.report.line(f"adopting deploy {other.deploy_id}: {len(left)} of its jobs on these queues were never seen to stop")
            self._continue_recorded(other, left)

    def _continue_recorded(self, manifest: Manifest, records: list[JobRecord]) -> None:
        """Records saved by an earlier run that never sent (or may not have sent) TerminateJob: stop them if they still run."""
        if not records:
            return
        states = self.ctx.batch.states(r.job_id for r in records)
        active = [r for r in records if states.get(r.job_id, JobState("UNKNOWN")).active]
        for record in records:
            if record not in active:
                ended = self._ended(record, states.get(record.job_id))
                manifest.put([ended])
                self._announce(manifest, ended)
        # As in a first pass: the jobs PENDING on them, in any queue, would fail with them.
        dependents = self._dependents({r.job_id for r in active})
        self._stop(manifest, active)
        self._record_and_stop(self.manifest, dependents)

    # -- finding jobs ----------------------------------------------------------------------
    def _passes(
        self, targets: list[Target], statuses: tuple[str, ...], reasons: dict[str, str], final: bool, in_order: bool = False
    ) -> None:
        """Passes until one finds nothing new; the first lists side by side, and only a pass in lifecycle order
        ends them. `in_order` (after the wait for stops: this pass looks for jobs ListJobs was slow to show)
        lists in lifecycle order from the first pass: a job it finds moving on between two listings side by
        side would be in neither, and no pass would follow to find it. A pass that may be the last reads the
        last look beside its listing."""
        for number in range(1, MAX_PASSES + 1):
            side_by_side = number == 1 and not in_order
            stopped = set() if side_by_side else self._stopped()
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="jobguard-beside") as beside:
                # Only reads, beside the listing: the last look where this pass may be the last; the waiting
                # jobs where the first pass, which is never the last, will take what it finds.
                look = beside.submit(self._look_late) if stopped else None
                read = self._queues_read_under_leases() if side_by_side else None
                waiting = beside.submit(self._waiting_on, read) if read is not None else None
                definitions: set[str] = set()
                found = self._list(targets, statuses, set() if final else self.not_queued, side_by_side, definitions)
                if not found and side_by_side:
                    continue
                if not found:
                    if look is not None:
                        self._late_dependents(stopped, look.result())
                    return
                self.ctx.report.line(f"pass {number}: {len(found)} new {'active' if final else 'queued'} jobs")
                self._take(found, statuses, reasons, final, waiting, definitions)
        self.ctx.report.warning(
            f"new jobs kept arriving after {MAX_PASSES} passes; freeze the queues (--freeze) so no new work starts during the deploy"
        )
        stopped = self._stopped()
        if stopped:
            self._late_dependents(stopped, self._look_late())

    def _list(
        self, targets: list[Target], statuses: tuple[str, ...], skip: set[str], side_by_side: bool, definitions: set[str]
    ) -> dict[str, str]:
        """New job id -> queue name, queues side by side (their statuses too, if `side_by_side`); their job
        definitions added to `definitions`."""

        def known(job_id: str) -> bool:
            return job_id in self.manifest.jobs or job_id in self.owner or job_id in skip or job_id in self.left_to_batch

        early = self._listed_at_start() if side_by_side else {}

        def listed(target: Target) -> list[tuple[str, str]]:
            listing = early.get(target.queue.name) or early.get(target.queue.arn)
            return [
                (job_id, target.queue.name) for job_id in exposed_ids(self.ctx, target, statuses, known, side_by_side, definitions, listing)
            ]

        found: dict[str, str] = {}
        for pairs in self.ctx.aws.parallel(listed, targets):
            for job_id, queue in pairs:
                found.setdefault(job_id, queue)
        return found

    def _listed_at_start(self) -> dict[str, Listing]:
        """The configured queues' listing read when the drain started, once; {} if there is none (or it failed:
        the pass lists them itself). `known` is applied when it is used: it may have changed since."""
        first, self.first = self.first, None
        if first is None:
            return {}
        try:
            return first.result()
        except JobguardError:
            return {}

    def _queues_read_under_leases(self) -> Future[list[Queue]] | None:
        """The account's queues as read once the leases were held, once (later, a queue made since would be missed)."""
        read, self.account_queues = self.account_queues, None
        return read

    def _waiting_on(self, queues: Future[list[Queue]]) -> Waiting:
        return list_waiting(self.ctx.batch, self.ctx.aws, self._taken, queues.result())

    def _stopped(self) -> set[str]:
        return {r.job_id for r in self.manifest if r.outcome in (TERMINATING, TERMINATED)}

    def _look_late(self) -> LateLook:
        """The reads of the last look; they may run beside a pass's listing (both only read)."""
        since = int(self.manifest.window[OPENED]) - CLOCK_MARGIN_MS if OPENED in self.manifest.window else None
        return look_late(self.ctx, self._taken, self.ctx.options.queue_names, since)

    def _late_dependents(self, stopped: set[str], look: LateLook) -> None:
        """Jobs that came to depend on a job this drain stops after it was taken (submitted meanwhile,
        perhaps on a queue no pass lists): Batch would fail them with it. Those still waiting are recorded
        and stopped; those Batch already failed, on the queues jobguard may act on, are recorded as late jobs
        the deploy killed (WATCHED), which restore judges and resubmits (commands/window.py)."""
        self._record_and_stop(self.manifest, self._dependents(stopped, look.waiting))
        jobs = killed_by(look.failed, stopped)
        if not jobs:
            return
        names = {str(job.get("jobQueue", "")).rsplit("/", 1)[-1] for job in jobs}
        for name in sorted(names):
            self.manifest.add_queue(name)
        self.leases.acquire(names)
        watch(self.ctx, self.manifest, jobs)

    def _take(
        self,
        found: dict[str, str],
        statuses: tuple[str, ...],
        reasons: dict[str, str],
        final: bool,
        waiting: Future[Waiting] | None,
        definitions: set[str],
    ) -> None:
        """Record and stop the jobs found (still in `statuses`), and every job waiting on one of them.

        A page at a time; the next page is described while this one is recorded and stopped (describing
        only reads, and DescribeJobs and TerminateJobs are throttled apart). `waiting`: the waiting jobs,
        listed beside the pass's listing; None: listed here, beside the first page's describing.
        `definitions` (named by the listing) are described beside the first page.
        """
        pages = list(chunks(list(found), RECORD_PAGE))
        if not pages:
            return
        with ThreadPoolExecutor(max_workers=3, thread_name_prefix="jobguard-ahead") as ahead:
            try:
                described = ahead.submit(self.ctx.batch.describe, pages[0])
                defined = ahead.submit(self.ctx.batch.job_definitions, definitions)  # cached for the records
                listed = waiting or ahead.submit(list_waiting, self.ctx.batch, self.ctx.aws, self._taken)  # meanwhile: all only read
                with suppress(JobguardError):  # the records' own lookup reports it
                    defined.result()
                for number, page in enumerate(pages, start=1):
                    details = described.result()
                    if number < len(pages):
                        described = ahead.submit(self.ctx.batch.describe, pages[number])
                    # A job of this page already taken as a dependent of an earlier page is not taken again.
                    jobs = [details[i] for i in page if details.get(i, {}).get("status") in statuses and not self._taken(i)]
                    self._take_page(jobs, found, reasons, final, listed, ahead)
                    if len(pages) > 1:
                        self.ctx.report.line(f"  recorded {min(number * RECORD_PAGE, len(found))} of {len(found)} jobs")
                self._collect()
            except BaseException:
                # The pass fails while a page's stops are on their way (a dependent on a queue jobguard may not act
                # on, a lease lost, the store down): their answers are still saved where they can be, so that a job
                # Batch refused to stop is recorded left running, not `terminating` (restore would stop it again).
                with suppress(JobguardError):
                    self._collect()
                raise

    def _take_page(
        self,
        jobs: list[dict[str, Any]],
        found: dict[str, str],
        reasons: dict[str, str],
        final: bool,
        waiting: Future[Waiting],
        ahead: Executor,
    ) -> None:
        if final:  # where only instances go, a job Batch itself runs again is not at risk (domain/host_retry.py)
            retried = {str(j["jobId"]) for j in jobs if found[str(j["jobId"])] in self.hosts_lost_queues and retried_by_batch(j)}
            self.left_to_batch.update({job_id: found[job_id] for job_id in retried})
            jobs = [j for j in jobs if str(j["jobId"]) not in retried]
        records = records_of(self.ctx, jobs, lambda job: reasons.get(found[job["jobId"]], ""), found)
        if final:
            records = [self._policy(r) for r in records]
        else:
            # Queued passes leave to the final pass, after the grace period, the jobs under the wait
            # policy and the arrays whose children have started (running, although their parent is PENDING).
            running = {str(j["jobId"]) for j in jobs if children_in(j, STARTED)}
            left = {r.job_id for r in records if r.job_id in running or self._action(r) == WAIT or self._engine_retry(r)}
            self.not_queued |= left
            records = [r for r in records if r.job_id not in left]
        records = self._doubles(jobs, records)
        dependents = self._dependents({r.job_id for r in records if r.outcome == RECORDED}, waiting.result())
        self._record_and_stop(self.manifest, records + dependents, ahead)

    def _doubles(self, jobs: list[dict[str, Any]], records: list[JobRecord]) -> list[JobRecord]:
        """Doubles an earlier deploy left live are stopped first, then recorded skipped: never resubmitted (commands/doubles.py)."""
        found = doubles_of_others(self.ctx, jobs, self.manifest.deploy_id, self.marked_by)
        if not found:
            return records
        details = {str(j["jobId"]): j for j in jobs}
        return [
            stop_double_of_other(self.ctx, r, details[r.job_id], found[r.job_id]) if r.job_id in found and r.outcome == RECORDED else r
            for r in records
        ]

    def _dependents(self, stopping: set[str], waiting: Waiting | None = None) -> list[JobRecord]:
        """Every job, in any queue, waiting on a job being stopped (directly or not): Batch would fail it.

        `waiting`: the pass's one listing of waiting jobs (commands/dependents.py); by default, listed now.
        """
        if not stopping:
            return []
        waiting = waiting or list_waiting(self.ctx.batch, self.ctx.aws, self._taken)
        chosen = waiting.dependents(stopping, self._taken)
        if not chosen:
            return []
        self._check_dependent_queues({waiting.queue_of[d] for d in chosen}, chosen, waiting.queue_of)
        jobs = [waiting.details[d] for d in chosen]
        return records_of(self.ctx, jobs, lambda job: f"depends on {chosen[str(job['jobId'])]}", waiting.queue_of)

    def _taken(self, job_id: str) -> bool:
        """Recorded by this drain, or owed by another open deploy: not recorded again."""
        return job_id in self.manifest.jobs or job_id in self.owner

    def _check_dependent_queues(self, queues: set[str], chosen: dict[str, str], waiting: dict[str, str]) -> None:
        allowed = self.ctx.options.queue_names
        for dependent, stopped in chosen.items():
            queue = waiting[dependent]
            if queue not in allowed:
                raise UsageError(
                    f"job {dependent} on queue {queue} depends on job {stopped}, which this drain would stop: Batch would fail it, "
                    f"and jobguard may not resubmit to {queue}; nothing more was stopped",
                    hint=f"add {queue} to the configured queues (and the Terraform module's job_queue_arns), or let {stopped} finish first",
                )
        for queue in sorted(queues):
            self.manifest.add_queue(queue)
        self.leases.acquire(queues)

    def _policy(self, record: JobRecord) -> JobRecord:
        if record.outcome != RECORDED:
            return record
        cap = self.ctx.options.max_resubmits
        if record.resubmits >= cap:
            return record.moved_to(
                KEPT,
                DRAIN,
                error=f"its line was already resubmitted {record.resubmits} times (max-resubmits {cap}): left running, not drained",
            )
        if self._action(record) == WAIT:
            self.problems += 1
            return record.moved_to(KEPT, DRAIN, error=f"policy wait: still {record.status_at_drain} after the grace period; not stopped")
        retry = self._engine_retry(record)
        return record.moved_to(KEPT, DRAIN, note=retry) if retry else record

    def _engine_retry(self, record: JobRecord) -> str | None:
        decision = engines.decide(record, self.ctx.options.policies, self.ctx.options.engines)
        return engines.engine_retry(record, decision, self.manifest.window.get(OPENED))

    def _action(self, record: JobRecord) -> str:
        return engines.decide(record, self.ctx.options.policies, self.ctx.options.engines).action

    # -- stopping ----------------------------------------------------------------------------
    def _record_and_stop(self, manifest: Manifest, records: list[JobRecord], ahead: Executor | None = None) -> None:
        """Save the records, those to be stopped already marked `terminating` (one write), then stop those."""
        if not records:
            return
        records = [r.moved_to(TERMINATING, DRAIN) if r.outcome == RECORDED else r for r in records]
        manifest.put(records)
        self.ctx.manifests.save(manifest)
        for record in records:
            if record.outcome != TERMINATING:
                self._announce(manifest, record)
        self._send_stops(manifest, [r for r in records if r.outcome == TERMINATING], ahead)

    def _stop(self, manifest: Manifest, records: list[JobRecord]) -> None:
        """Mark `terminating` in the store, then stop them (records saved by an earlier run or step)."""
        if not records:
            return
        marked = [r.moved_to(TERMINATING, DRAIN) for r in records]
        manifest.put(marked)
        self.ctx.manifests.save(manifest)
        self._send_stops(manifest, marked)

    def _send_stops(self, manifest: Manifest, marked: list[JobRecord], ahead: Executor | None = None) -> None:
        """TerminateJobs, 50 a call (asynchronous: the jobs end later), for records saved `terminating`.

        With `ahead`, the calls go out on its thread while the drain records the next page, one page in
        flight at a time; their answers are taken on the drain's own thread (`_collect`).
        """
        if not marked:
            return
        self._collect()
        reason = f"jobguard: drained for deploy {self.manifest.deploy_id}"
        self.leases.check()  # and again right before each call leaves (Aws.guard)
        stops = {r.job_id: r.queue for r in marked}
        if ahead is None:
            self._answered(manifest, marked, self.ctx.batch.terminate_many(stops, reason))
        else:
            self.in_flight = (manifest, marked, ahead.submit(self.ctx.batch.terminate_many, stops, reason))

    def _collect(self) -> None:
        """The answers of the stops in flight, if any (their page is saved `terminating` already)."""
        if self.in_flight is not None:
            manifest, marked, answer = self.in_flight
            self.in_flight = None
            self._answered(manifest, marked, answer.result())

    def _answered(self, manifest: Manifest, marked: list[JobRecord], failed: dict[str, JobCallError]) -> None:
        """Records Batch took the stop of stay `terminating` (no write); those it refused, or whose answer
        was lost, are saved with what it said."""
        answered = [self._sent(record, failed[record.job_id]) for record in marked if record.job_id in failed]
        if answered:
            manifest.put(answered)
            self.ctx.manifests.save(manifest)
        for record in (manifest.jobs[r.job_id] for r in marked):
            if record.outcome == FAILED:
                self._announce(manifest, record)
            else:
                self.stopping.append((manifest, record.job_id))

    def _sent(self, record: JobRecord, error: JobCallError) -> JobRecord:
        """The record of a job Batch did not plainly take the stop of, by what it answered for it."""
        if error.uncertain:  # it may have been carried out: the wait for the stops will tell
            return replace(record, error=str(error))
        self.problems += 1
        return record.moved_to(FAILED, DRAIN, error=f"{error}; left running")

    def _wait_for_stops(
        self, look: Callable[[], None] | None = None, look_at: float = 0.0, look_from: float | None = None, wait_out: bool = False
    ) -> None:
        """Wait (up to stop-timeout) until every job this run stopped has ended; record how each ended.

        `look` (a pass for jobs ListJobs was slow to show) runs once, when the wait has reached `look_at`
        (monotonic) or has ended, whichever is first (`wait_out`: at `look_at` in any case); the jobs it
        stops are waited for in turn. Nothing stopped: no wait, and no look — unless `look_from` is given:
        then the look runs, stops or not, and not before that time.
        """
        awaited = 0  # of self.stopping: those taken into the wait so far
        waiting: dict[str, Manifest] = {}
        bound = self.ctx.options.stop_timeout
        started, poll, said = time.monotonic(), 0.25, 0.0
        told = False  # that the look waits for a restore's jobs to show
        while True:
            more = {job_id: m for m, job_id in self.stopping[awaited:] if m.jobs[job_id].outcome == TERMINATING}
            awaited = len(self.stopping)
            if more:
                waiting.update(more)
                started, poll, said = time.monotonic(), 0.25, 0.0
                self.ctx.report.line(f"waiting up to {bound:g} s for {len(more)} stopped jobs to end (TerminateJob is asynchronous)")
            if waiting:
                self._poll_ended(waiting)
            now = time.monotonic()
            elapsed = now - started if waiting else 0.0
            ended = not waiting or elapsed >= bound  # a stop-timeout shorter than lookup-window ends the wait first
            wanted = look is not None and (awaited > 0 or look_from is not None)
            due = self._look_due(wanted, ended and not (wait_out and awaited), look_at, look_from)
            if now >= due:
                self._save_changed()  # what ended so far, before the pass may fail
                run, look = look, None
                if run is not None:
                    run()
                continue
            if ended and due == math.inf:
                break
            if ended and not told:
                why = "jobs submitted just before the stops" if wait_out and awaited else "jobs a restore just submitted here"
                self.ctx.report.line(f"looking again in {due - now:.1f} s: ListJobs may not yet show {why}")
                told = True
            if waiting and elapsed - said >= 10:
                self.ctx.report.notice(f"waiting for {len(waiting)} jobs to stop ({self._still(waiting)}); {bound - elapsed:.0f} s left")
                said = elapsed
            time.sleep(max(0.0, min(due - now, poll if not ended else math.inf, bound - elapsed if not ended else math.inf)))
            poll = min(5.0, poll * 1.5)
        for job_id, manifest in waiting.items():
            record = manifest.jobs[job_id]
            self.problems += 1
            self.ctx.report.error(
                f"{record.job_name} [{job_id}] on {record.queue}: still running {bound:g} s after TerminateJob; restore waits for it"
            )
        self._save_changed()

    @staticmethod
    def _look_due(wanted: bool, ended: bool, look_at: float, look_from: float | None) -> float:
        """When the look runs (monotonic): at `look_at` or once the wait ended, not before `look_from`; inf: never."""
        if not wanted:
            return math.inf
        return max(-math.inf if ended else look_at, look_from if look_from is not None else -math.inf)

    def _shown_by(self) -> float | None:
        """When ListJobs shows every job a run submitted to these queues before it let them go; None if it already does."""
        try:
            submitted = self.submitted.result()
        except JobguardError as exc:
            self.ctx.report.notice(f"cannot tell when these queues were last submitted to ({exc}): looking again after lookup-window")
            submitted = time.monotonic()
        if submitted is None:
            return None
        # A word from the future (a skewed or hand-edited clock) is taken as now: the look waits a window at most.
        shown = min(submitted, time.monotonic()) + self.ctx.options.lookup_window + STORE_CLOCK_SLACK
        return shown if shown > time.monotonic() else None

    def _poll_ended(self, waiting: dict[str, Manifest]) -> None:
        """One look at the jobs awaited: those ended are recorded (and let go from `waiting`)."""
        self.last_states = self.ctx.batch.states(waiting)
        for job_id in list(waiting):
            state = self.last_states.get(job_id)
            if state is None or not state.may_run:
                manifest = waiting.pop(job_id)
                record = self._ended(manifest.jobs[job_id], state)
                manifest.put([record])
                self._announce(manifest, record)
                if len(manifest.changed) >= ENDED_PAGE:  # the records these replace are let go (else two versions of every one)
                    self.ctx.manifests.save(manifest)

    def _still(self, waiting: dict[str, Manifest]) -> str:
        return ", ".join(sorted({self.last_states[j].status for j in waiting if j in self.last_states}))

    def _save_changed(self) -> None:
        for manifest in [self.manifest, *self.others.values()]:
            if manifest.changed:
                self.ctx.manifests.save(manifest)

    def _ended(self, record: JobRecord, state: JobState | None) -> JobRecord:
        """The record of a job seen to end (or to be sure never to start)."""
        if state is not None and state.status == "SUCCEEDED":
            return record.moved_to(FINISHED, DRAIN, error=None, note="finished on its own before it was stopped: not resubmitted")
        skipped = engines.not_resubmitted(record, self.ctx.options.policies, self.ctx.options.engines, DRAIN)
        if skipped is not None:
            return skipped
        if state is not None and state.status == "PENDING":
            return record.moved_to(TERMINATED, DRAIN, error=None, note="cancelled once its dependencies complete: it never starts")
        if state is None and record.outcome == RECORDED:
            return record.moved_to(SKIPPED, DRAIN, error="never stopped, and Batch no longer knows it")
        return record.moved_to(TERMINATED, DRAIN, error=None)

    # -- queues ------------------------------------------------------------------------------
    def _to_freeze(self, targets: list[Target]) -> list[Queue]:
        """Every queue with --freeze; with neither --freeze nor --no-freeze, the queues the plan deletes.

        A queue the apply deletes refuses new jobs from the moment Terraform disables it anyway, and a
        job accepted on it after drain cannot be found afterwards (a queue made again under the name does
        not list the old one's jobs): freezing it at drain closes its deploy window at no new cost.
        """
        if self.ctx.options.freeze is not None:
            return [t.queue for t in targets] if self.ctx.options.freeze else []
        chosen = [t.queue for t in targets if t.deleted]
        for queue in chosen:
            self.ctx.report.line(f"queue {queue.name}: the plan deletes it: frozen for the deploy (--no-freeze leaves it open)")
        return chosen

    def _freeze(self, queues: Iterable[Queue]) -> None:
        """Disable the queues for the deploy; the state to put back is saved before it changes."""
        enabled = [q for q in queues if q.state == "ENABLED" and q.name not in self.manifest.frozen_queues]
        if not enabled:
            return
        self.manifest.frozen_queues.update({q.name: q.state for q in enabled})
        self.ctx.manifests.save(self.manifest)
        for queue in enabled:
            self.leases.check()
            self.ctx.batch.set_queue_state(queue.arn, "DISABLED")
            self.ctx.report.line(f"queue {queue.name}: disabled for the deploy; restore enables it again")
            self.facts.append(f"queue {queue.name}: frozen (disabled) until restore")

    def _grace_of(self, target: Target) -> float:
        """A queue's grace period: --grace, or longer where the plan's update lets running jobs run longer."""
        return max(self.ctx.options.grace, target.grace_minutes * 60.0)

    def _grace(self, targets: list[Target]) -> None:
        """Give running jobs (and jobs whose policy is wait) their queue's grace period to finish."""
        started = time.monotonic()
        deadlines: dict[str, float] = {}  # job id -> when its grace period ends
        for target in targets:
            grace = self._grace_of(target)
            if grace <= 0:
                continue
            for job_id in exposed_ids(self.ctx, target, LIFECYCLE, lambda i: i in self.manifest.jobs or i in self.owner):
                deadlines.setdefault(job_id, started + grace)
        if not deadlines:
            return
        grace = max(deadlines.values()) - started
        self.ctx.report.line(f"waiting up to {grace:g} s for {len(deadlines)} running jobs to finish")
        poll, said = 0.5, time.monotonic()
        active = set(deadlines)  # as last seen
        while True:
            waiting = [i for i in active if deadlines[i] > time.monotonic()]
            if not waiting:
                break
            time.sleep(min(poll, max(0.0, min(deadlines[i] for i in waiting) - time.monotonic())))
            poll = min(15.0, poll * 1.5)
            states = self.ctx.batch.states(waiting)
            active -= {i for i in waiting if i not in states or not states[i].active}
            if time.monotonic() - said >= 30:
                left = max((deadlines[i] for i in active), default=time.monotonic()) - time.monotonic()
                self.ctx.report.notice(f"{len(active)} jobs still running; {max(0.0, left):.0f} s of the grace period left")
                said = time.monotonic()
        self.finished_in_grace = len(deadlines) - len(active)
        if self.finished_in_grace:
            self.facts.append(f"{self.finished_in_grace} jobs finished within the grace period ({grace:g} s): nothing to resubmit")
        waiting = list(active)
        self.ctx.report.line(
            f"grace period over: {len(waiting)} jobs still active" if waiting else "every running job finished within the grace period"
        )

    def _announce(self, manifest: Manifest, record: JobRecord) -> None:
        if record.outcome == FAILED or (record.outcome == KEPT and record.error):
            self.ctx.report.error(f"{record.job_name} [{record.job_id}]: {record.error}")
        self.ctx.report.job(record)
        self.ctx.events.add(manifest, [record])
