"""drain: record every active job of the named queues as it was submitted, then terminate it.

No job is terminated before its record is in the store: each page of jobs is saved first,
and a store that cannot be written stops the drain before anything more is terminated.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ..adapters.batch import DESCRIBE_BATCH, chunks
from ..manifest import ACTIVE_STATUSES, DRAIN, FAILED, RECORDED, TERMINATED, JobRecord, Manifest, now
from ..retry import error_code
from ..submission import recover_submission
from .context import Context


def drain(ctx: Context, deploy_id: str) -> Manifest:
    """Drain the queues of `ctx.options` into the manifest of `deploy_id` and return it."""
    manifest = ctx.store.load(deploy_id)
    manifest = ctx.check_owner(manifest) if manifest else ctx.new_manifest(deploy_id)
    verb = "would drain" if ctx.options.dry_run else None
    unfinished = [r for r in manifest if r.outcome == RECORDED]
    if unfinished and not ctx.options.dry_run:
        ctx.report.line(f"continuing deploy {deploy_id}: {len(unfinished)} recorded jobs still to terminate")
        _terminate(ctx, manifest, unfinished)
    if not ctx.options.dry_run:
        ctx.save(manifest)
    for name in ctx.options.queues:
        queue = ctx.batch.queue(name)
        if queue is None:
            ctx.report.warning(f"queue {name}: does not exist, skipped")
            continue
        new_ids = [i for i in ctx.batch.active_job_ids(queue.arn) if i not in manifest.jobs]
        with ctx.report.group(f"queue {queue.name}: {len(new_ids)} active jobs"):
            for page in chunks(new_ids, DESCRIBE_BATCH):
                records = _records(ctx, queue.name, page)
                if ctx.options.dry_run:
                    for record in records:
                        ctx.report.job(record, verb)
                    continue
                manifest.put(records)
                ctx.save(manifest)
                _terminate(ctx, manifest, [r for r in records if r.outcome == RECORDED])
    return manifest


def _records(ctx: Context, queue: str, job_ids: list[str]) -> list[JobRecord]:
    """Records for the jobs still active, in the order listed."""
    details = ctx.batch.describe_jobs(job_ids)
    jobs = [details[i] for i in job_ids if details.get(i, {}).get("status") in ACTIVE_STATUSES]
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
    )
    if definition is None:
        # Without its revision the overrides cannot be told from the definition: leave it running.
        return record.moved_to(FAILED, DRAIN, error=f"job definition {job['jobDefinition']} not found: cannot recover the submission")
    return replace(record, submission=recover_submission(job, definition))


def _short_definition(arn: str) -> str:
    """`name:revision` from a job definition ARN."""
    return arn.rsplit("/", 1)[-1]


def _terminate(ctx: Context, manifest: Manifest, records: list[JobRecord]) -> None:
    reason = f"jobguard: drained for deploy {manifest.deploy_id}"
    done = []
    for record in records:
        try:
            ctx.batch.terminate(record.job_id, reason)
            record = record.moved_to(TERMINATED, DRAIN)
        except (ClientError, BotoCoreError) as exc:  # one job's failure must not stop the others
            record = record.moved_to(FAILED, DRAIN, error=f"TerminateJob failed: {error_code(exc)}: {exc}")
            ctx.report.error(f"{record.job_name} [{record.job_id}]: {record.error}")
        ctx.report.job(record)
        done.append(record)
    manifest.put(done)
    ctx.save(manifest)
