"""drain: record every active job of the queues at risk as it was submitted, then terminate it.

The queues are the ones named, or those the Terraform plan puts at risk (see plan.py). No job is
terminated before its record is in the store: each page of jobs is saved first, and a store that
cannot be written stops the drain before anything more is terminated. With a grace period,
queued jobs are drained first (so no new work starts), running ones get the grace period to
finish, and only what is still active then is drained. Policies keep jobs running (wait) or
keep them from coming back (abandon).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ..adapters.batch import Queue, chunks
from ..manifest import ACTIVE_STATUSES, DRAIN, FAILED, RECORDED, SKIPPED, TERMINATED, JobRecord, Manifest, now
from ..pacing import in_parallel
from ..plan import read_plan, risks
from ..policies import ABANDON, WAIT, action_for
from ..retry import error_code
from ..submission import recover_submission
from .context import Context
from .lock import DeployLock
from .restore import LINEAGE_TAG, RESUBMITS_TAG

QUEUED = ("SUBMITTED", "PENDING", "RUNNABLE")
# Jobs recorded per store write: each page is saved before any of its jobs is terminated.
RECORD_PAGE = 500


def drain(ctx: Context, deploy_id: str) -> Manifest:
    """Drain the queues at risk into the manifest of `deploy_id` and return it."""
    manifest = ctx.store.load(deploy_id)
    manifest = ctx.check_owner(manifest) if manifest else ctx.new_manifest(deploy_id)
    queues = queues_at_risk(ctx)
    if ctx.options.dry_run:
        _pass(ctx, manifest, queues, ACTIVE_STATUSES, final=True)
        return manifest
    with DeployLock(ctx.store, [q.name for q in queues], ctx.options.lock_timeout, ctx.options.lock_ttl, ctx.report):
        unfinished = [r for r in manifest if r.outcome == RECORDED]
        if unfinished:
            ctx.report.line(f"continuing deploy {deploy_id}: {len(unfinished)} recorded jobs still to terminate")
            _terminate(ctx, manifest, unfinished)
        ctx.save(manifest)
        if ctx.options.freeze:
            _freeze(ctx, manifest, queues)
        if ctx.options.grace > 0:
            _pass(ctx, manifest, queues, QUEUED, final=False)
            _wait(ctx, manifest, queues)
        _pass(ctx, manifest, queues, ACTIVE_STATUSES, final=True)
    return manifest


def queues_at_risk(ctx: Context) -> list[Queue]:
    """The named queues; with a plan, those of them (or of all queues) the plan puts at risk."""
    named = {q.rsplit("/", 1)[-1]: q for q in ctx.options.queues}
    reasons: dict[str, str] = {}
    if ctx.options.plan is None:
        reasons = dict.fromkeys(named, "")
    else:
        for risk in risks(read_plan(ctx.options.plan), ctx.options.triggers):
            targets = [risk.queue] if risk.queue else list(named) if risk.every_queue else []
            if risk.compute_environment:
                targets += [q.name for q in ctx.batch.queues_using(risk.compute_environment)]
            for name in targets:
                if name and (not named or name in named):
                    reasons.setdefault(name, risk.reason)
        if not reasons:
            scope = f" of {', '.join(named)}" if named else ""
            ctx.report.line(
                f"the plan puts no job queue{scope} at risk: no queue or compute environment is deleted, replaced or given an "
                "infrastructure update, and no trigger changes; nothing to drain"
            )
    queues = []
    for name, reason in reasons.items():
        queue = ctx.batch.queue(named.get(name, name))
        if queue is None:
            ctx.report.warning(f"queue {name}: does not exist, skipped")
            continue
        if reason:
            ctx.report.line(f"queue {name}: at risk: {reason}")
        queues.append(queue)
    return queues


def _freeze(ctx: Context, manifest: Manifest, queues: list[Queue]) -> None:
    """Disable the queues for the deploy; the state to put back is saved before it changes."""
    enabled = [q for q in queues if q.state == "ENABLED" and q.name not in manifest.frozen_queues]
    if not enabled:
        return
    manifest.frozen_queues.update({q.name: q.state for q in enabled})
    ctx.save(manifest)
    for queue in enabled:
        ctx.batch.set_queue_state(queue.arn, "DISABLED")
        ctx.report.line(f"queue {queue.name}: disabled for the deploy; restore enables it again")


def _wait(ctx: Context, manifest: Manifest, queues: list[Queue]) -> None:
    """Give running jobs (and jobs whose policy is wait) the grace period to finish."""
    waiting: list[str] = []
    for queue in queues:
        waiting += [i for i in ctx.batch.active_job_ids(queue.arn) if i not in manifest.jobs]
    if not waiting:
        return
    grace = ctx.options.grace
    ctx.report.line(f"waiting up to {grace:g} s for {len(waiting)} running jobs to finish")
    deadline = time.monotonic() + grace
    poll = 0.5  # quick finishes are seen at once; long waits cost one DescribeJobs per 100 jobs every 15 s
    while waiting and time.monotonic() < deadline:
        time.sleep(min(poll, max(0.0, deadline - time.monotonic())))
        poll = min(15.0, poll * 1.5)
        statuses = ctx.batch.statuses(waiting)
        waiting = [i for i in waiting if statuses.get(i) in ACTIVE_STATUSES]
    ctx.report.line(
        f"grace period over: {len(waiting)} jobs still active" if waiting else "every running job finished within the grace period"
    )


def _pass(ctx: Context, manifest: Manifest, queues: list[Queue], statuses: tuple[str, ...], final: bool) -> None:
    """Record and terminate the queues' jobs in `statuses` that the manifest does not hold yet."""
    for queue in queues:
        new_ids = [i for i in ctx.batch.active_job_ids(queue.arn, statuses) if i not in manifest.jobs]
        kind = "active" if final else "queued"
        with ctx.report.group(f"queue {queue.name}: {len(new_ids)} {kind} jobs"):
            for page in chunks(new_ids, RECORD_PAGE):
                records = [r for r in _records(ctx, queue.name, page, statuses) if final or _action(ctx, r) != WAIT]
                records = [_kept_running(r) if _action(ctx, r) == WAIT else r for r in records]
                if ctx.options.dry_run:
                    for record in records:
                        ctx.report.job(record, "would drain" if record.outcome == RECORDED else None)
                    continue
                manifest.put(records)
                ctx.save(manifest)
                for record in records:
                    if record.outcome != RECORDED:
                        _announce(ctx, record)
                _terminate(ctx, manifest, [r for r in records if r.outcome == RECORDED])


def _action(ctx: Context, record: JobRecord) -> str:
    return action_for(ctx.options.policies, record.queue, record.job_name, record.job_definition)


def _kept_running(record: JobRecord) -> JobRecord:
    """A job under the wait policy that is still active when the grace period ends."""
    return record.moved_to(FAILED, DRAIN, error=f"policy wait: still {record.status_at_drain} after the grace period; not terminated")


def _records(ctx: Context, queue: str, job_ids: list[str], statuses: tuple[str, ...]) -> list[JobRecord]:
    """Records for the jobs still in `statuses`, in the order listed."""
    details = ctx.batch.describe_jobs(job_ids)
    jobs = [details[i] for i in job_ids if details.get(i, {}).get("status") in statuses]
    definitions = ctx.batch.job_definitions(j["jobDefinition"] for j in jobs)
    return [_record(job, queue, definitions.get(job["jobDefinition"])) for job in jobs]


def _record(job: dict[str, Any], queue: str, definition: dict[str, Any] | None) -> JobRecord:
    stamp = now()
    record = JobRecord(
        job_id=job["jobId"],
        job_arn=job.get("jobArn", ""),
        job_name=job["jobName"],
        queue=queue,
        job_definition=_short_definition(job["jobDefinition"]),
        status_at_drain=job["status"],
        submission={},
        outcome=RECORDED,
        stage=DRAIN,
        times={RECORDED: stamp},
        created_at=job.get("createdAt"),
        started_at=job.get("startedAt"),
        attempts=len(job.get("attempts") or []),
        job_type=_job_type(job),
        lineage_id=(job.get("tags") or {}).get(LINEAGE_TAG),
        resubmits=_count((job.get("tags") or {}).get(RESUBMITS_TAG)),
    )
    if definition is None:
        # Without its revision the overrides cannot be told from the definition: leave it running.
        return record.moved_to(FAILED, DRAIN, error=f"job definition {job['jobDefinition']} not found: cannot recover the submission")
    return replace(record, submission=recover_submission(job, definition))


def _job_type(job: dict[str, Any]) -> str:
    for field, kind in (("nodeProperties", "multinode"), ("ecsProperties", "ecs"), ("eksProperties", "eks")):
        if job.get(field):
            return kind
    return "container"


def _count(tag: str | None) -> int:
    return int(tag) if tag and tag.isdigit() else 0


def _short_definition(arn: str) -> str:
    """`name:revision` from a job definition ARN."""
    return arn.rsplit("/", 1)[-1]


def _terminate(ctx: Context, manifest: Manifest, records: list[JobRecord]) -> None:
    reason = f"jobguard: drained for deploy {manifest.deploy_id}"

    def terminate(record: JobRecord) -> JobRecord:
        try:
            ctx.batch.terminate(record.job_id, reason)
        except (ClientError, BotoCoreError) as exc:  # one job's failure must not stop the others
            return record.moved_to(FAILED, DRAIN, error=f"TerminateJob failed: {error_code(exc)}: {exc}")
        record = record.moved_to(TERMINATED, DRAIN)
        if _action(ctx, record) == ABANDON:
            record = record.moved_to(SKIPPED, DRAIN, error="policy abandon: terminated, not resubmitted")
        return record

    done = in_parallel(terminate, records, ctx.options.workers)
    for record in done:
        _announce(ctx, record)
    manifest.put(done)
    ctx.save(manifest)


def _announce(ctx: Context, record: JobRecord) -> None:
    if record.outcome == FAILED:
        ctx.report.error(f"{record.job_name} [{record.job_id}]: {record.error}")
    ctx.report.job(record)
