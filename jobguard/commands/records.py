"""A job's record, built from its JobDetail: what drain records before it stops a job, and what the
deploy window's sweep (and `jobguard run`) records of a job submitted during the deploy."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..adapters.batch import JobState
from ..domain import engines, submission
from ..domain.manifest import DRAIN, FAILED, RECORDED, JobRecord, now
from ..domain.tags import mark_of
from .context import Context

Json = dict[str, Any]


def records_of(
    ctx: Context, jobs: list[Json], reason_of: Callable[[Json], str], queues: dict[str, str], outcome: str = RECORDED, stage: str = DRAIN
) -> list[JobRecord]:
    """A record per JobDetail, its submission recovered against its own job-definition revision.

    `queues`: job id -> queue name where known (else the JobDetail's queue). A job whose revision
    Batch cannot describe is recorded FAILED at `stage`: its overrides cannot be told from the definition.
    """
    definitions = ctx.batch.job_definitions(str(j["jobDefinition"]) for j in jobs)
    dependency_ids = {str(d["jobId"]) for j in jobs for d in j.get("dependsOn") or [] if "jobId" in d}
    dependency_states = ctx.batch.states(dependency_ids) if dependency_ids else {}
    records = []
    for job in jobs:
        queue = queues.get(job["jobId"]) or str(job.get("jobQueue", "")).rsplit("/", 1)[-1]
        definition = definitions.get(str(job["jobDefinition"]))
        records.append(_record(ctx, job, queue, definition, reason_of(job), dependency_states, outcome, stage))
    return records


def _record(
    ctx: Context, job: Json, queue: str, definition: Json | None, reason: str, states: dict[str, JobState], outcome: str, stage: str
) -> JobRecord:
    mark = mark_of(job)
    dependencies = {
        str(d["jobId"]): (states[str(d["jobId"])].status if str(d["jobId"]) in states else "UNKNOWN")
        for d in job.get("dependsOn") or []
        if "jobId" in d
    }
    record = JobRecord(
        job_id=str(job["jobId"]),
        job_arn=str(job.get("jobArn", "")),
        job_name=str(job["jobName"]),
        queue=queue,
        job_definition=str(job["jobDefinition"]).rsplit("/", 1)[-1],
        status_at_drain=str(job["status"]),
        submission={"jobName": str(job["jobName"])},
        outcome=outcome,
        stage=stage,
        times={outcome: now()},
        job_type=submission.job_type(job),
        created_at=_ms(job.get("createdAt")),
        started_at=_ms(job.get("startedAt")),
        attempts=len(job.get("attempts") or []),
        reason=reason or None,
        dependencies=dependencies,
        array_succeeded=_succeeded_children(ctx, job),
        lineage_id=mark.lineage_id if mark else None,
        resubmits=mark.resubmits if mark else 0,
    )
    record = engines.with_engine(record, job, ctx.options.engines, definition)
    if definition is None:
        # Without its own revision the overrides cannot be told from the definition: leave it running.
        left = "left running" if outcome == RECORDED else "not resubmitted"
        return record.moved_to(
            FAILED, stage, error=f"job definition {record.job_definition} not found: cannot recover the submission; {left}"
        )
    return replace(record, submission=submission.recover_submission(job, definition))


def _succeeded_children(ctx: Context, job: Json) -> list[int]:
    summary = (job.get("arrayProperties") or {}).get("statusSummary") or {}
    if ctx.options.arrays != "unfinished" or not summary.get("SUCCEEDED"):
        return []
    return ctx.batch.list_children(str(job["jobId"]), "SUCCEEDED")


def _ms(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 else None
