"""restore: resubmit every drained job exactly once, on the queue and job definition in place now.

Order of work per manifest: refresh what Batch knows of the originals and their dependencies,
then submit in dependency waves. Each slice of a wave is marked `submitting` in the store
before SubmitJob is sent; a job marked so is looked up by its jobguard tags before it is ever
submitted again, so a restore killed at any instant and run again makes no second job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ..adapters.batch import Queue, chunks
from ..errors import AwsError, UsageError
from ..manifest import ACTIVE_STATUSES, FAILED, RECORDED, RESTORE, RESUBMITTED, SKIPPED, SUBMITTING, TERMINATED, JobRecord, Manifest
from ..pacing import in_parallel
from ..retry import error_code
from .context import Context
from .lock import DeployLock

# Jobs marked `submitting` per store write, then submitted concurrently.
RECORD_PAGE = 500
DEPLOY_TAG = "jobguard:deploy-id"
ORIGINAL_TAG = "jobguard:original-job-id"
LINEAGE_TAG = "jobguard:lineage-id"
RESUBMITS_TAG = "jobguard:resubmits"
LINEAGE_VARIABLES = ("JOBGUARD_LINEAGE_ID", "JOBGUARD_PREVIOUS_JOB_ID", "JOBGUARD_DEPLOY_ID", "JOBGUARD_RESUME_COUNT")


def manifests_to_restore(ctx: Context, deploy_id: str | None) -> list[Manifest]:
    """The named manifest, or every manifest with work left, oldest first.

    All are loaded and checked before anything is submitted: one damaged manifest stops the run
    with nothing changed.
    """
    if deploy_id is not None:
        manifest = ctx.store.load(deploy_id)
        if manifest is None:
            raise UsageError(f"no manifest for deploy {deploy_id} at {ctx.store.uri(deploy_id)}")
        return [ctx.check_owner(manifest)]
    loaded = [ctx.store.load(i) for i in ctx.store.deploy_ids()]
    manifests = [ctx.check_owner(m) for m in loaded if m is not None]
    return sorted((m for m in manifests if m.has_work_left), key=lambda m: m.created_at)


def restore_all(ctx: Context, deploy_id: str | None) -> list[Manifest]:
    """Restore the named manifest, or every manifest with work left, under the deploy lock."""
    if ctx.options.dry_run:
        return [_restore_one(ctx, m) for m in manifests_to_restore(ctx, deploy_id)]
    queues = {q for m in manifests_to_restore(ctx, deploy_id) for q in [*(r.queue for r in m), *m.frozen_queues]}
    with DeployLock(ctx.store, queues, ctx.options.lock_timeout, ctx.options.lock_ttl, ctx.report):
        # Loaded again: another run may have moved them on while we waited for the lock.
        manifests = manifests_to_restore(ctx, deploy_id)
        if not manifests:
            ctx.report.line(f"jobguard restore: nothing to restore in {ctx.options.store}")
        return [_restore_one(ctx, m) for m in manifests]


def _restore_one(ctx: Context, manifest: Manifest) -> Manifest:
    suffix = " (dry run)" if ctx.options.dry_run else ""
    ctx.report.line(f"jobguard restore: deploy {manifest.deploy_id}, manifest {ctx.store.uri(manifest.deploy_id)}{suffix}")
    if not ctx.options.dry_run:
        _unfreeze(ctx, manifest)
    with ctx.report.group(f"deploy {manifest.deploy_id}: {sum(r.restorable for r in manifest)} jobs to resubmit"):
        _Restore(ctx, manifest).run()
    return manifest


def _unfreeze(ctx: Context, manifest: Manifest) -> None:
    """Put back the state of the queues drain --freeze disabled, before anything is submitted."""
    for name, state in list(manifest.frozen_queues.items()):
        try:
            if ctx.batch.queue(name) is not None:
                ctx.batch.set_queue_state(name, state)
                ctx.report.line(f"queue {name}: {state} again")
            else:
                ctx.report.warning(f"queue {name}: no longer exists; nothing to put back")
        except AwsError as exc:
            ctx.report.warning(f"queue {name}: could not put back state {state} ({exc}); the next restore tries again")
            continue
        del manifest.frozen_queues[name]
        ctx.save(manifest)


@dataclass
class _Restore:
    ctx: Context
    manifest: Manifest
    batch_status: dict[str, str] = field(default_factory=dict)
    queues: dict[str, Queue | None] = field(default_factory=dict)
    revisions: dict[str, list[int]] = field(default_factory=dict)

    def run(self) -> None:
        pending = [r for r in self.manifest if r.restorable]
        dependencies = {d["jobId"] for r in pending for d in r.submission.get("dependsOn", []) if "jobId" in d}
        self.batch_status = self.ctx.batch.statuses([r.job_id for r in pending] + sorted(dependencies))
        pending = [r for r in pending if self._still_owed(r)]
        waiting = {r.job_id for r in pending}
        while pending:
            wave = [r for r in pending if not (self._dependency_ids(r) & waiting)] or pending
            for page in chunks([r.job_id for r in wave], RECORD_PAGE):
                self._submit_page([self.manifest.jobs[i] for i in page])
            waiting -= {r.job_id for r in wave}
            pending = [r for r in pending if r.job_id in waiting]

    def _still_owed(self, record: JobRecord) -> bool:
        """Jobs that ended on their own, or were never stopped, get no replacement."""
        status = self.batch_status.get(record.job_id)
        if record.outcome not in (RECORDED, TERMINATED) or status is None:
            return True
        if status == "SUCCEEDED":
            self._finish(record.moved_to(SKIPPED, RESTORE, error="finished on its own before it was stopped"))
            return False
        if record.outcome == RECORDED and status in ACTIVE_STATUSES:
            self._finish(record.moved_to(SKIPPED, RESTORE, error=f"never terminated: it is still {status}"))
            return False
        return True

    def _submit_page(self, records: list[JobRecord]) -> None:
        planned: list[tuple[JobRecord, dict[str, Any], bool]] = []
        for record in records:
            if record.resubmits >= self.ctx.options.max_resubmits:
                cap = self.ctx.options.max_resubmits
                capped = f"deploys already resubmitted this job's line {record.resubmits} times (max-resubmits {cap}): not again"
                self.ctx.report.error(f"{record.job_name} [{record.job_id}]: {capped}")
                self._finish(record.moved_to(SKIPPED, RESTORE, error=capped))
                continue
            request, problem = self._request(record)
            if problem:
                self._finish(record.moved_to(FAILED, RESTORE, error=problem))
            elif self.ctx.options.dry_run:
                self.ctx.report.job(record, "would submit")
            else:
                # An earlier run may have sent it: look for the replacement before sending again.
                sent_before = SUBMITTING in record.times
                planned.append((record.moved_to(SUBMITTING, RESTORE, error=None), request, sent_before))
        if self.ctx.options.dry_run:
            return
        self.manifest.put(r for r, _, _ in planned)
        self.ctx.save(self.manifest)
        for record in in_parallel(lambda plan: self._submit(*plan), planned, self.ctx.options.workers):
            self._finish(record)
        self.ctx.save(self.manifest)

    def _submit(self, record: JobRecord, request: dict[str, Any], sent_before: bool) -> JobRecord:
        marker = {DEPLOY_TAG: self.manifest.deploy_id, ORIGINAL_TAG: record.job_id}
        try:
            job_id = self.ctx.batch.submit_once(request, marker, look_first=sent_before)
        except (ClientError, BotoCoreError, AwsError) as exc:
            return record.moved_to(FAILED, RESTORE, error=f"SubmitJob failed: {error_code(exc)}: {_message(exc)}")
        return record.moved_to(RESUBMITTED, RESTORE, replacement_id=job_id, replacement_job_definition=request["jobDefinition"], error=None)

    def _finish(self, record: JobRecord) -> None:
        self.manifest.put([record])
        if record.outcome == FAILED:
            self.ctx.report.error(f"{record.job_name} [{record.job_id}]: {record.error}")
        self.ctx.report.job(record)

    def _request(self, record: JobRecord) -> tuple[dict[str, Any], str | None]:
        """The SubmitJob request for a record, or why it cannot be submitted now."""
        queue = self._queue(record.queue)
        if queue is None:
            return {}, f"queue {record.queue} does not exist"
        if queue.state != "ENABLED":
            return {}, f"queue {record.queue} is {queue.state}"
        definition, problem = self._definition(record.job_definition)
        if problem:
            return {}, problem
        depends_on = []
        for dependency in record.submission.get("dependsOn", []):
            resolved, problem = self._dependency(dependency)
            if problem:
                return {}, problem
            if resolved:
                depends_on.append(resolved)
        request = {**record.submission, "jobQueue": queue.name, "jobDefinition": definition}
        request.pop("dependsOn", None)
        if depends_on:
            request["dependsOn"] = depends_on
        resubmits = str(record.resubmits + 1)
        request["tags"] = {
            **record.submission.get("tags", {}),
            DEPLOY_TAG: self.manifest.deploy_id,
            ORIGINAL_TAG: record.job_id,
            LINEAGE_TAG: record.lineage,
            RESUBMITS_TAG: resubmits,
        }
        if self.ctx.options.lineage_env and record.job_type == "container":
            lineage = dict(zip(LINEAGE_VARIABLES, (record.lineage, record.job_id, self.manifest.deploy_id, resubmits), strict=True))
            overrides = dict(request.get("containerOverrides", {}))
            kept = [e for e in overrides.get("environment", []) if e["name"] not in lineage]
            overrides["environment"] = kept + [{"name": k, "value": v} for k, v in lineage.items()]
            request["containerOverrides"] = overrides
        return request, None

    def _dependency(self, dependency: dict[str, str]) -> tuple[dict[str, str] | None, str | None]:
        """Where a dependency points now: its replacement, itself, nowhere (it succeeded), or a reason to hold."""
        job_id = dependency.get("jobId")
        if job_id is None:
            return dependency, None
        drained = self.manifest.jobs.get(job_id)
        if drained is not None and drained.outcome == RESUBMITTED:
            return {**dependency, "jobId": drained.replacement_id or job_id}, None
        status = self.batch_status.get(job_id)
        if status == "SUCCEEDED":
            return None, None
        if status in ACTIVE_STATUSES and (drained is None or drained.outcome == SKIPPED):
            return dependency, None
        if drained is not None:
            return None, f"dependency {job_id} was not resubmitted ({drained.outcome})"
        return None, f"dependency {job_id} {'failed' if status == 'FAILED' else 'is unknown to Batch'}"

    def _dependency_ids(self, record: JobRecord) -> set[str]:
        return {d["jobId"] for d in record.submission.get("dependsOn", []) if "jobId" in d}

    def _queue(self, name: str) -> Queue | None:
        if name not in self.queues:
            self.queues[name] = self.ctx.batch.queue(name)
        return self.queues[name]

    def _definition(self, recorded: str) -> tuple[str, str | None]:
        """`name:revision` to submit with: the newest ACTIVE revision, or the recorded one while active."""
        name, _, revision = recorded.rpartition(":")
        if name not in self.revisions:
            self.revisions[name] = self.ctx.batch.active_revisions(name)
        active = self.revisions[name]
        if not active:
            return "", f"job definition {name} has no ACTIVE revision"
        if self.ctx.options.job_definition == "recorded" and revision.isdigit() and int(revision) in active:
            return recorded, None
        return f"{name}:{active[0]}", None


def _message(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Message", ""))
    return str(exc)
