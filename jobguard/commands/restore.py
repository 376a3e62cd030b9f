"""restore: resubmit every drained job exactly once, on the queue and job definition in place now.

Which manifests: the deploy named (in Actions: the run's own), and every open deploy whose work
sits on queues that deploy now holds (it adopted them); with no deploy id, every open deploy.
A queue whose lease another deploy still holds (it is in its apply) is left alone, and said so.

Per manifest: put back frozen queues; look at the originals; wait (up to stop-timeout) for those
still stopping, since a replacement must never run beside its original; leave alone those never
asked to stop; then submit in dependency waves. Before SubmitJob each slice is marked
`submitting` in the store; a job so marked, or whose SubmitJob answer was lost, is looked up by
its mark (retrying over the lookup window, as ListJobs may not show a new job at once) before
anything is sent again.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..adapters.aws import chunks
from ..adapters.batch import JobState, Queue
from ..adapters.lease import LeaseRecord, Leases, lease_is_live, lease_scope, read_lease
from ..domain import engines
from ..domain.manifest import (
    FAILED,
    FINISHED,
    RECORDED,
    RESTORE,
    RESUBMITTED,
    SKIPPED,
    SUBMITTING,
    TERMINATED,
    TERMINATING,
    WATCHED,
    JobRecord,
    Manifest,
)
from ..errors import CredentialsError, JobCallError, LeaseError, UsageError
from .context import Context
from .doubles import Unconfirmed, contested, marked_jobs, reconcile, usable
from .manifests import ForeignManifestError
from .requests import Hold, Planned, Requests, Waiting
from .window import settle, sweep

SUBMIT_PAGE = 500  # jobs marked `submitting` per store write, then submitted concurrently


@dataclass
class Restored:
    """What a restore did, for the summary and the exit code."""

    manifests: list[Manifest] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)
    problems: int = 0


def restore(ctx: Context, deploy_id: str | None, named: bool, leases: Leases | None = None) -> Restored:
    """Restore `deploy_id` (and what it adopted), or every open deploy; `named`: the user asked for it by id.

    `leases`: the caller's, already holding the deploy's queues (`jobguard run`), which lets them go
    itself; by default the restore takes its own and releases them when it is done.
    """
    result = Restored()
    # Records held without their submissions, read back a page at a time as they are sent: 100 000 jobs' worth
    # of submissions are never in memory at once (commands/manifests.py, domain/elision.py).
    ctx.manifests.elide = True
    candidates = _candidates(ctx, deploy_id, named, result)
    owner = deploy_id or "jobguard-restore"
    queues, left_alone = _restorable_queues(ctx, candidates, deploy_id, result)
    if deploy_id is not None and not ctx.options.dry_run:
        # A drain that died after taking its leases but before saving its manifest: its restore still releases them.
        queues |= _leased_to(ctx, deploy_id) - left_alone
    if ctx.options.dry_run:
        _drop_duplicates(ctx, candidates)
        for manifest in candidates:
            _Restore(ctx, manifest, queues, candidates, result).run()
        return result
    held = leases or Leases(ctx.store, owner, ctx.options.lease, ctx.report.notice, lease_scope(ctx.account, ctx.region))
    chosen = [c.deploy_id for c in candidates]
    del candidates  # every record as first read: kept beside the ones the restore makes, 100 000 jobs would cost ~50 MB more
    try:
        held.acquire(queues)
        ctx.manifests.fence = ctx.aws.guard = held.check
        # Read again under the leases: another run may have moved them on while we waited.
        fresh = [m for m in (ctx.manifests.load(deploy) for deploy in chosen) if m is not None]
        _drop_duplicates(ctx, fresh)  # on the manifests acted on (and saved), not on copies read before the leases
        _restore_all(ctx, fresh, queues, result, held)
        result.manifests = fresh
        _tell_engines(ctx, fresh, result)
    finally:
        if leases is None:
            ctx.manifests.fence = lambda: None
            ctx.aws.guard = None
            held.release(keep_for_deploy=False, raise_errors=sys.exc_info()[0] is None)  # a failed release fails the run
    return result


def _tell_engines(ctx: Context, manifests: list[Manifest], result: Restored) -> None:
    """Workflow engines' jobs grouped by engine and role, with what became of them (log and summary)."""
    for manifest in manifests:
        for line in engines.groups(manifest, ctx.options.policies, ctx.options.engines):
            ctx.report.line(f"deploy {manifest.deploy_id}: {line}")
            result.facts.append(f"deploy {manifest.deploy_id}: {line}")


def _restore_all(ctx: Context, manifests: list[Manifest], queues: set[str], result: Restored, leases: Leases) -> None:
    """Each manifest in turn, oldest first. A job whose dependency another of them owes (a later deploy
    drained the replacement it depends on, or the other way round) waits for that one, and is looked
    at again once the others are done, as long as each round makes progress."""
    only: dict[str, set[str]] | None = None
    while True:
        left: dict[str, set[str]] = {}
        for manifest in manifests:
            if only is not None and not only.get(manifest.deploy_id):
                continue
            deferred = None if only is None else only[manifest.deploy_id]
            run = _Restore(ctx, manifest, queues, manifests, result, defer=True, only=deferred, leases=leases)
            run.run()
            if run.deferred:
                left[manifest.deploy_id] = run.deferred
        if not left or (only is not None and sum(map(len, left.values())) >= sum(map(len, only.values()))):
            break
        only = left
    for manifest in manifests:  # no more progress: what still waits is held, with its reason
        if left.get(manifest.deploy_id):
            _Restore(ctx, manifest, queues, manifests, result, only=left[manifest.deploy_id], leases=leases).run()


def _candidates(ctx: Context, deploy_id: str | None, named: bool, result: Restored) -> list[Manifest]:
    """The manifests to look at, all checked before anything acts: one damaged manifest stops the run."""
    found: dict[str, Manifest] = {}
    if deploy_id is not None:
        try:
            manifest = ctx.manifests.load(deploy_id)
        except ForeignManifestError:
            raise
        if manifest is None and named:
            raise UsageError(f"no manifest for deploy {deploy_id} at {ctx.store.uri(deploy_id)}")
        if manifest is not None:
            found[deploy_id] = manifest
    for other in ctx.manifests.open_ids():
        if other in found:
            continue
        try:
            entry = ctx.manifests.index_entry(other)  # before the manifest: what a drain saving meanwhile changes
            manifest = ctx.manifests.load(other)
        except ForeignManifestError as exc:
            result.facts.append(f"skipped: {exc}")
            ctx.report.line(f"skipped: {exc}")
            continue
        except CredentialsError:
            raise  # this run's problem, not the other deploy's
        except UsageError:  # a damaged manifest, or an entry or manifest that cannot be read (a folder, too big)
            if deploy_id is None:
                raise
            continue  # another deploy's problem: its own restore reports it
        if manifest is None or not manifest.has_work_left:
            if entry is not None:
                ctx.manifests.forget_index(other, entry)
            continue
        if deploy_id is None or _adopted_by(ctx, manifest, deploy_id):
            found[other] = manifest
    return sorted(found.values(), key=lambda m: m.created_at)


def _leased_to(ctx: Context, deploy_id: str) -> set[str]:
    """The queues whose lease `deploy_id` holds (a handful: one per queue jobguard has drained), of the configured ones if any."""
    held = set()
    scope = lease_scope(ctx.account, ctx.region)
    allowed = ctx.options.queue_names
    for name in ctx.store.keys("leases"):
        queue = name[len(scope) :]
        if not name.startswith(scope) or (allowed and queue not in allowed):
            continue  # a queue of another account or region, or of a matrix leg this restore was not given
        lease = read_lease(ctx.store, queue, scope)
        if lease is not None and lease.deploy_id == deploy_id:
            held.add(queue)
    return held


def _adopted_by(ctx: Context, manifest: Manifest, deploy_id: str) -> bool:
    for queue in manifest.record_queues():
        lease = read_lease(ctx.store, queue, lease_scope(ctx.account, ctx.region))
        if lease is not None and lease.deploy_id == deploy_id:
            return True
    return False


def _drop_duplicates(ctx: Context, manifests: list[Manifest]) -> None:
    """No original is owed by two manifests: the older manifest keeps it, the other is told."""
    owner: dict[str, Manifest] = {}
    for manifest in sorted(manifests, key=lambda m: m.created_at):
        for record in manifest:
            if not record.owed:
                continue
            first = owner.setdefault(record.job_id, manifest)
            if first is not manifest:
                ctx.report.warning(
                    f"job {record.job_id} is owed by deploys {first.deploy_id} and {manifest.deploy_id}: {first.deploy_id} restores it"
                )
                manifest.put([record.moved_to(SKIPPED, RESTORE, error=f"owed by deploy {first.deploy_id} too; that deploy restores it")])


def _restorable_queues(ctx: Context, manifests: list[Manifest], deploy_id: str | None, result: Restored) -> tuple[set[str], set[str]]:
    """The queues this restore may act on: of its configured queues (if any), those free, expired, or held by its own
    deploy, and whose new name (the plan renamed the queue: its jobs are submitted there) is too. Both are taken.
    And the queues left alone because another deploy holds their new name (this deploy keeps its own lease on them)."""
    queues: set[str] = set()
    left_alone: set[str] = set()
    allowed = ctx.options.queue_names
    successors = {q: new for m in manifests for q, new in m.queue_successors.items()}
    for queue in sorted({q for m in manifests for q in m.record_queues()}):
        if allowed and queue not in allowed:  # a matrix leg restores its own queues; the other legs share its deploy id
            owed = sum(1 for m in manifests for r in m if r.queue == queue and r.owed)
            if owed:
                fact = f"queue {queue}: left alone: not one of this restore's queues; its {owed} owed jobs wait for a restore that names it"
                result.facts.append(fact)
                ctx.report.line(fact)
            continue
        names = [queue, *([successors[queue]] if queue in successors else [])]
        held = next((lease for lease in (_held_by_another(ctx, name, deploy_id) for name in names) if lease is not None), None)
        if held is None:
            queues.update(names)
            continue
        left_alone.add(queue)
        owed = sum(1 for m in manifests for r in m if r.queue == queue and r.owed)
        where = "it" if held.queue == queue else f"its new name {held.queue}"
        fact = f"queue {queue}: left alone: deploy {held.deploy_id} holds {where} ({held.holder}); {owed} owed jobs wait for its restore"
        result.facts.append(fact)
        ctx.report.line(fact)
    return queues, left_alone


def _held_by_another(ctx: Context, queue: str, deploy_id: str | None) -> LeaseRecord | None:
    """The lease of `queue` when another deploy still owns it (its apply may be running), else None."""
    lease = read_lease(ctx.store, queue, lease_scope(ctx.account, ctx.region))
    if lease is None or lease.deploy_id == deploy_id or not lease_is_live(lease, ctx.store.clock()):
        return None
    return lease


class _Restore:
    """The restore of one manifest."""

    def __init__(
        self,
        ctx: Context,
        manifest: Manifest,
        queues: set[str],
        manifests: list[Manifest],
        result: Restored,
        defer: bool = False,
        only: set[str] | None = None,
        leases: Leases | None = None,
    ) -> None:
        self.ctx, self.manifest, self.queues, self.result = ctx, manifest, queues, result
        self.elsewhere = {r.job_id: r for m in manifests if m is not manifest for r in m}
        self.states: dict[str, JobState] = {}
        self.lock = threading.Lock()  # SubmitJob answers arrive on worker threads
        self.defer = defer  # leave a job waiting on another manifest's dependency for a later look (`deferred`)
        self.only = only  # look again at these jobs only (deferred by an earlier look of this run)
        self.deferred: set[str] = set()
        self.earlier: dict[str, str] = {}  # original -> the replacement an earlier, interrupted run made (one lookup)
        self.swept: dict[str, dict[str, object]] = {}  # JobDetails of the late jobs this run's sweep recorded (window.settle reads them)
        self.leases = leases
        self.unconfirmed = Unconfirmed(ctx, manifest, leases)  # jobs made since this run last proved it holds its queues
        self.contested: set[str] = set()  # originals a SubmitJob of another run (or a lost answer) may also have replaced
        self.queue_of: Callable[[str], Queue | None] = ctx.batch.queue

    def run(self) -> None:
        dry = " (dry run)" if self.ctx.options.dry_run else ""
        if self.only is None:
            self.ctx.report.line(
                f"jobguard restore: deploy {self.manifest.deploy_id}, manifest {self.ctx.store.uri(self.manifest.deploy_id)}{dry}"
            )
            known = {*self.elsewhere, *(r.replacement_id for r in self.elsewhere.values() if r.replacement_id)}
            swept = sweep(self.ctx, self.manifest, self.queues, set(self.manifest.frozen_queues), known)
            self.swept = swept.recorded
            self.result.facts += swept.facts
            self.result.problems += swept.problems
            if not self.ctx.options.dry_run:
                self._unfreeze()
        owed = [r for r in self.manifest if r.owed and r.queue in self.queues and (self.only is None or r.job_id in self.only)]
        with self.ctx.report.group(f"deploy {self.manifest.deploy_id}: {len(owed)} jobs to look at"):
            self._refresh(owed)
            ready = [r.job_id for r in self._originals(owed)]
            del owed  # by id from here: a record replaced in the manifest is not kept beside its replacement
            self._waves(ready)
            if not self.ctx.options.dry_run:
                self._reconcile()
        if self.manifest.changed and not self.ctx.options.dry_run:
            self.ctx.manifests.save(self.manifest)

    # -- queues ----------------------------------------------------------------------------
    def _unfreeze(self) -> None:
        """Put back the state of the queues this (verified) manifest froze, before anything is submitted."""
        for name, state in sorted(self.manifest.frozen_queues.items()):
            if name not in self.queues:
                continue
            try:
                if self.ctx.batch.queue(name) is None:
                    self.ctx.report.warning(f"queue {name}: no longer exists; nothing to put back")
                else:
                    self.ctx.manifests.fence()
                    self.ctx.batch.set_queue_state(name, state)
                    self.ctx.report.line(f"queue {name}: {state} again")
            except UsageError:
                raise
            except Exception as exc:
                self.ctx.report.warning(f"queue {name}: could not put back state {state} ({exc}); the next restore tries again")
                continue
            del self.manifest.frozen_queues[name]
            self.manifest.released_queues.add(name)
            self.ctx.manifests.save(self.manifest)

    # -- the originals ---------------------------------------------------------------------
    def _refresh(self, records: Iterable[JobRecord]) -> None:
        ids: list[str] = []
        for record in records:
            ids.append(record.job_id)
            ids += record.dependency_ids
            for dependency in record.dependency_jobs:
                ids.append(dependency)
                drained = self.manifest.jobs.get(dependency) or self.elsewhere.get(dependency)
                if drained is not None and drained.replacement_id:
                    ids.append(drained.replacement_id)
        self.states.update(self.ctx.batch.states(ids))

    def _originals(self, owed: list[JobRecord]) -> list[JobRecord]:
        """Owed records whose original has ended (or never starts); the others are left for later, and said so."""
        ready: list[JobRecord] = []
        stopping: list[JobRecord] = []
        self._stop_again([r for r in owed if r.outcome == TERMINATING and self._active(r.job_id)])
        if not self.ctx.options.dry_run:  # jobs submitted during the deploy: judged, never stopped
            ready += settle(self.ctx, self.manifest, [r for r in owed if r.outcome == WATCHED], self._finish, self.swept)
        for record in owed:
            if record.outcome == WATCHED:
                continue
            state = self.states.get(record.job_id)
            if record.outcome not in (RECORDED, TERMINATING):
                ready.append(record)
            elif not record.stop_asked and state is not None and state.active:
                detail = f": never asked to stop, still {state.status}; left running, not resubmitted"
                self.ctx.report.job(record, "left alone", detail)
            elif record.stop_asked and self._running(state):
                stopping.append(record)
            else:
                ready += self._if_owed(self._ended(record, state))
        if stopping and not self.ctx.options.dry_run:
            self._wait(stopping)
        for record in stopping:
            state = self.states.get(record.job_id)
            if not self._running(state):
                ready += self._if_owed(self._ended(record, state))
        return ready

    def _active(self, job_id: str) -> bool:
        state = self.states.get(job_id)
        return state is not None and state.active

    def _stop_again(self, records: list[JobRecord]) -> None:
        """Send TerminateJob again (twice is harmless) to originals marked `terminating` that are still active.

        A drain that died between the mark and TerminateJob left them running, never to stop: waiting
        for them would last the whole bound, and a PENDING one never asked to stop would run later,
        beside its replacement. The drain had recorded them and decided to stop them.
        """
        if not records or self.ctx.options.dry_run:
            return
        reason = f"jobguard: drained for deploy {self.manifest.deploy_id}"

        self.ctx.manifests.fence()
        failed = self.ctx.batch.terminate_many({r.job_id: r.queue for r in records}, reason)
        for record in records:
            if record.job_id in failed:
                self.ctx.report.warning(f"{record.job_name} [{record.job_id}]: {failed[record.job_id]}; waiting for it to stop anyway")

    @staticmethod
    def _running(state: JobState | None) -> bool:
        """Still able to run although asked to stop (`JobState.may_run`)."""
        return state is not None and state.may_run

    @staticmethod
    def _if_owed(record: JobRecord) -> list[JobRecord]:
        return [record] if record.outcome == TERMINATED else []

    def _ended(self, record: JobRecord, state: JobState | None) -> JobRecord:
        if state is not None and state.status == "SUCCEEDED":
            record = record.moved_to(FINISHED, RESTORE, error=None, note="finished on its own before it was stopped: not resubmitted")
        elif state is None and not record.stop_asked:
            record = record.moved_to(SKIPPED, RESTORE, error="never asked to stop, and Batch no longer knows it: nothing to resubmit")
        elif (skipped := engines.not_resubmitted(record, self.ctx.options.policies, self.ctx.options.engines, RESTORE)) is not None:
            record = skipped  # a drain left it stopping (killed, or past its stop-timeout): its engine or policy still decides
        else:
            note = None if state is not None else "Batch no longer knows the original; it was asked to stop"
            record = record.moved_to(TERMINATED, RESTORE, error=None, note=note)
        self._finish(record)
        return record

    def _wait(self, records: list[JobRecord]) -> None:
        """A replacement must never run beside its original: wait for originals still stopping."""
        bound = self.ctx.options.stop_timeout
        waiting = {r.job_id: r for r in records}
        self.ctx.report.line(f"waiting up to {bound:g} s for {len(waiting)} originals to stop before their replacements start")
        started, poll, said = time.monotonic(), 0.25, 0.0
        while waiting:
            elapsed = time.monotonic() - started
            if elapsed >= bound:
                break
            time.sleep(min(poll, bound - elapsed))
            poll = min(5.0, poll * 1.5)
            self.states.update(self.ctx.batch.states(waiting))
            waiting = {i: r for i, r in waiting.items() if self._running(self.states.get(i))}
            if waiting and time.monotonic() - started - said >= 10:
                said = time.monotonic() - started
                self.ctx.report.notice(f"still waiting for {len(waiting)} originals to stop; {bound - said:.0f} s left")
        for record in waiting.values():
            self.result.problems += 1
            self.ctx.report.error(
                f"{record.job_name} [{record.job_id}]: still {self.states[record.job_id].status} {bound:g} s after it was asked to stop: "
                "not resubmitted beside it; the next restore tries again"
            )

    # -- submitting ------------------------------------------------------------------------
    def _waves(self, job_ids: list[str]) -> None:
        """Dependencies first; jobs whose dependencies are held are held too. Records are read from the manifest
        as each page is submitted (by id until then: never an old record kept beside the one that replaced it)."""
        pending = {i: tuple(self.manifest.jobs[i].dependency_jobs) for i in job_ids}  # () is one object: most jobs have none
        requests = Requests(self.ctx.batch, self.ctx.options, self.states, self.elsewhere.get)
        self.queue_of = requests.queue
        if not self.ctx.options.dry_run:
            self.earlier = self._interrupted(requests, job_ids)
        while pending:
            # pending.keys(), not set(pending) per record: that was O(N^2) (14 minutes before the first SubmitJob at 100 000 jobs)
            wave = [i for i, needs in pending.items() if not pending.keys() & set(needs)] or list(pending)
            for page in chunks(wave, SUBMIT_PAGE):
                self._submit_page(requests, [self.manifest.jobs[i] for i in page])
            for job_id in wave:
                pending.pop(job_id)
            if len(job_ids) > SUBMIT_PAGE:
                done = len(job_ids) - len(pending)
                self.ctx.report.line(f"  {done} of {len(job_ids)} jobs looked at")

    def _interrupted(self, requests: Requests, job_ids: list[str]) -> dict[str, str]:
        """The replacements an earlier, interrupted run made: looked up once for every page (listing a name's
        jobs per page would cost pages x jobs)."""
        interrupted = contested(self.manifest.jobs[i] for i in job_ids)
        self.contested |= {r.job_id for r in interrupted}
        return self._look_up(requests, interrupted)

    def _submit_page(self, requests: Requests, records: list[JobRecord]) -> None:
        records = self.ctx.manifests.whole(self.manifest, records)  # their submissions, read back from their pages
        planned: list[tuple[JobRecord, Planned, bool]] = []
        for record in records:
            if record.resubmits >= self.ctx.options.max_resubmits:
                cap = self.ctx.options.max_resubmits
                self._finish(
                    record.moved_to(
                        SKIPPED,
                        RESTORE,
                        error=f"deploys already resubmitted this job's line {record.resubmits} times (max-resubmits {cap}): not again",
                    )
                )
                continue
            try:
                plan = requests.plan(self.manifest, record)
            except Hold as held:
                if self.defer and (isinstance(held, Waiting) or set(record.dependency_jobs) & self.deferred):
                    self.deferred.add(record.job_id)
                    self.ctx.report.line(f"  {record.job_name} [{record.job_id}]: waits for another deploy of this restore ({held})")
                    continue
                self.result.problems += 1
                self._finish(record.moved_to(FAILED, RESTORE, error=str(held)))
                continue
            if self.ctx.options.dry_run:
                self.ctx.report.job(record, "would submit", f" on {plan.definition}")
                continue
            sent_before = SUBMITTING in record.times
            planned.append((record.moved_to(SUBMITTING, RESTORE, error=None, note="; ".join(plan.notes) or None), plan, sent_before))
        if not planned:
            return
        self.manifest.put(r for r, _, _ in planned)
        self.ctx.manifests.save(self.manifest)
        found = {r.job_id: self.earlier[r.job_id] for r, _, before in planned if before and r.job_id in self.earlier}
        to_send = []
        for record, plan, _ in planned:
            if record.job_id in found:
                self._finish(
                    record.moved_to(RESUBMITTED, RESTORE, replacement_id=found[record.job_id], replacement_job_definition=plan.definition)
                )
            else:
                to_send.append((record, plan))
        if self.leases is not None:  # ListJobs shows them only later: the next drain of these queues learns when
            self.leases.note_submitted(str(plan.request["jobQueue"]) for _, plan in to_send)
        try:
            self._send_all(requests, to_send)
            self.unconfirmed.confirm()
        except LeaseError:
            self.unconfirmed.cancel()  # another run took over: what this run made since it last proved its hold is a double
            raise
        self.ctx.manifests.save(self.manifest)

    def _send_all(self, requests: Requests, to_send: list[tuple[JobRecord, Planned]]) -> None:
        """SubmitJob for each; a lost answer is looked up (over the lookup window) before the request is sent again."""
        for attempt in range(1, self.ctx.options.aws.retry.attempts + 1):
            outcomes = self.ctx.aws.parallel(lambda pair: self._send(*pair), to_send)
            unsure = [(r, p, t) for (r, p), (done, t) in zip(to_send, outcomes, strict=True) if not done]
            to_send = []
            if not unsure:
                break
            self.contested |= {r.job_id for r, _, _ in unsure}
            found = self._look_up(requests, [r for r, _, _ in unsure], since=min(t for _, _, t in unsure))
            for record, plan, _ in unsure:
                if record.job_id in found:
                    self._finish(
                        record.moved_to(
                            RESUBMITTED, RESTORE, replacement_id=found[record.job_id], replacement_job_definition=plan.definition
                        )
                    )
                elif attempt < self.ctx.options.aws.retry.attempts:
                    to_send.append((record, plan))
                else:
                    self.result.problems += 1
                    self._finish(
                        record.moved_to(
                            FAILED, RESTORE, error="SubmitJob got no answer on every attempt, and no job it may have made was found"
                        )
                    )
            if not to_send:
                break

    def _send(self, record: JobRecord, plan: Planned) -> tuple[bool, float]:
        """(done, when it was sent): done False means the answer was lost and the job may exist."""
        sent = time.monotonic()
        self.ctx.manifests.fence()
        try:
            job_id = self.ctx.batch.submit(plan.request)
        except JobCallError as exc:
            if exc.uncertain:
                return False, sent
            self.result.problems += 1
            self._finish(record.moved_to(FAILED, RESTORE, error=str(exc)))
            return True, sent
        self.unconfirmed.add(record, job_id)
        self._finish(record.moved_to(RESUBMITTED, RESTORE, replacement_id=job_id, replacement_job_definition=plan.definition))
        return True, sent

    def _look_up(self, requests: Requests, records: list[JobRecord], since: float | None = None) -> dict[str, str]:
        """Replacements an earlier attempt may have made: original id -> replacement id.

        ListJobs may not show a job created a moment ago (its consistency is not documented), so
        whatever is not found is looked for again, with backoff, until `lookup-window` has passed
        since the request could have been sent. Each (queue, name) is listed once per look: the
        cost grows with the jobs, not with their square.
        """
        if not records:
            return {}
        window = self.ctx.options.lookup_window
        start = since if since is not None else time.monotonic()
        wanted = {r.job_id: r for r in records}
        found: dict[str, str] = {}
        poll, said = 0.5, False
        while True:
            for original, jobs in marked_jobs(self.ctx, requests.queue, self.manifest, wanted.values()).items():
                job_id = usable(jobs)  # never one stopped as a double
                if job_id is not None:
                    found[original] = job_id
                    self.states[job_id] = JobState(str(jobs[job_id].get("status", "")))  # its dependents must know if it still runs
            wanted = {i: r for i, r in wanted.items() if i not in found}
            left = window - (time.monotonic() - start)
            if not wanted or left <= 0:
                return found
            if not said:
                self.ctx.report.notice(f"looking for {len(wanted)} jobs SubmitJob may have made; ListJobs can lag: up to {left:.0f} s more")
                said = True
            time.sleep(min(poll, left))
            poll = min(5.0, poll * 2)

    def _reconcile(self) -> None:
        """Leave one live replacement of each job another run (or a lost answer) may also have replaced (commands/doubles.py)."""
        records = [self.manifest.jobs[i] for i in sorted(self.contested) if self.manifest.jobs[i].outcome == RESUBMITTED]
        if not records:
            return
        done = reconcile(self.ctx, self.queue_of, self.manifest, records)
        if done.reopened:  # the recorded replacement was stopped as a double and none other lives: submit again
            self._waves([r.job_id for r in done.reopened])

    def _finish(self, record: JobRecord) -> None:
        with self.lock:
            self.manifest.put([record])
        if record.outcome == FAILED:
            self.ctx.report.error(f"{record.job_name} [{record.job_id}]: {record.error}")
        self.ctx.report.job(record)
        self.ctx.events.add(self.manifest, [record])
