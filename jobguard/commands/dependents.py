"""The jobs waiting on jobs a drain stops: Batch fails a job whose dependency fails, so the drain
records and stops it too ("depends on X"), in any queue.

Every queue's SUBMITTED and PENDING jobs are listed and described once per pass, before the pass
stops anything, and each page of the pass takes its dependents from that one listing: listed per
page, it cost three round trips a page and a description of every waiting job a page (at 100 000
jobs, 200 pages). A job that comes to depend on a stopped one after the listing is found by the
drain's last look (`look_late`): still waiting, it is taken as above; already failed with its
dependency (a job not yet started is cancelled at once), it is recorded as a late job the deploy killed
(`failed_since`, `killed_by`), for restore to judge and resubmit, its dependency remapped. Restore's sweep of the
deploy window finds such a job only on a queue the deploy drained, not on a configured queue the plan
leaves alone.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..adapters.aws import Aws
from ..adapters.batch import Batch, Queue
from ..domain.window import DEPENDENCY_FAILED, KILLED, judge
from .context import Context

Json = dict[str, Any]
WAITING = ("SUBMITTED", "PENDING")  # in lifecycle order: a job moving on between the two listings is still seen


@dataclass(frozen=True)
class Waiting:
    """Every job waiting on others, as listed at one moment: its queue, its JobDetail, who needs whom."""

    queue_of: dict[str, str]  # waiting job id -> its queue name
    details: dict[str, Json]
    needs: dict[str, list[str]]  # job id -> the waiting jobs that depend on it (on it, or on one of its children)

    def dependents(self, stopping: set[str], taken: Callable[[str], bool]) -> dict[str, str]:
        """Each job still waiting on one of `stopping` (directly or through another): dependent -> the job it depends on.

        `taken`: jobs already recorded (by this drain, or owed by another deploy), left out.
        """
        chosen: dict[str, str] = {}
        frontier = list(stopping)
        while frontier:
            stopped = frontier.pop()
            for dependent in self.needs.get(stopped, []):
                if dependent in chosen or dependent in stopping or taken(dependent):
                    continue
                if self.details[dependent].get("status") in WAITING:
                    chosen[dependent] = stopped
                    frontier.append(dependent)
        return chosen


def list_waiting(batch: Batch, aws: Aws, taken: Callable[[str], bool], queues: list[Queue] | None = None) -> Waiting:
    """Every queue's waiting jobs (`taken` ones left out), described: one listing, queues side by side.

    `queues`: every queue of the account, when the caller has just listed them; else listed here.
    A queue's two statuses are listed in lifecycle order, SUBMITTED then PENDING: a job moving on from one
    to the other between two listings side by side would be in neither, and no later look is sure to see
    it (its dependency stopped, Batch fails it; created before the drain, the last look's failed ones
    leave it out).
    """

    def listed(queue: Queue) -> list[tuple[str, str]]:
        return [(str(s["jobId"]), queue.name) for status in WAITING for s in batch.list_jobs(queue.arn, status)]

    queue_of: dict[str, str] = {}
    for pairs in aws.parallel(listed, batch.queues() if queues is None else queues):
        queue_of.update((job_id, name) for job_id, name in pairs if not taken(job_id))
    details = batch.describe(queue_of) if queue_of else {}
    needs: dict[str, list[str]] = {}
    for job_id, job in details.items():
        for dependency in job.get("dependsOn") or []:  # on a job, or on one child of an array (ARRAY:INDEX)
            needs.setdefault(str(dependency.get("jobId", "")).split(":", 1)[0], []).append(job_id)
    return Waiting(queue_of, details, needs)


def failed_since(ctx: Context, queues: list[Queue], since_ms: int, taken: Callable[[str], bool]) -> dict[str, Json]:
    """JobDetail by id of the jobs created on `queues` since `since_ms` (Batch's clock) that Batch failed because
    a dependency failed; `taken` ones left out.

    A job waiting when the pass listed was seen then: only one created since can be a late dependent. One
    listing of each queue's new jobs (not of its FAILED ones: those the drain stopped are among them); those
    FAILED because a dependency failed are described.
    """

    def listed(queue: Queue) -> list[str]:
        return [
            str(s["jobId"])
            for s in ctx.batch.list_created_after(queue.arn, since_ms)
            if s.get("status") == "FAILED"
            and str(s.get("statusReason") or DEPENDENCY_FAILED).startswith(DEPENDENCY_FAILED)
            and not taken(str(s["jobId"]))
        ]

    ids = [job_id for found in ctx.aws.parallel(listed, queues) for job_id in found]
    return ctx.batch.describe(ids) if ids else {}


def killed_by(failed: dict[str, Json], stopped: set[str]) -> list[Json]:
    """Of `failed` (from `failed_since`), the jobs Batch failed because a job of `stopped` failed, directly or
    through another of them."""
    killed, chosen = set(stopped), dict[str, Json]()
    while True:  # a chain: a job failed because a dependent failed, which failed because a stopped job did
        more = {i: job for i, job in failed.items() if i not in chosen and judge(job, killed=killed).kind == KILLED}
        if not more:
            return list(chosen.values())
        chosen.update(more)
        killed |= set(more)


@dataclass(frozen=True)
class LateLook:
    """What the drain's last look read: every queue's waiting jobs, and the jobs Batch failed for a dependency
    on `allowed` queues since the drain began."""

    waiting: Waiting
    failed: dict[str, Json]


def look_late(ctx: Context, taken: Callable[[str], bool], allowed: frozenset[str], since_ms: int | None) -> LateLook:
    """The reads of the last look, its two listings side by side (they only read: a pass may list meanwhile).

    `since_ms`: when the drain began (Batch's clock, less the clocks' margin); None: no deploy window, so no
    failed jobs are looked for."""
    queues = ctx.batch.queues()  # one listing for both
    if since_ms is None:
        return LateLook(list_waiting(ctx.batch, ctx.aws, taken, queues), {})
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="jobguard-late") as pool:
        failed = pool.submit(failed_since, ctx, [q for q in queues if q.name in allowed], since_ms, taken)
        return LateLook(list_waiting(ctx.batch, ctx.aws, taken, queues), failed.result())
