"""The deploy window: jobs the application submitted while the deploy ran.

Drain opens the window (`open_window`: Batch's clock when it began); every job created on a
queue at risk after that is in no drain pass. Restore closes it:

1. `sweep`: each queue the deploy drained (and did not freeze) is listed with an AFTER_CREATED_AT
   filter (Batch then ignores jobStatus: every status comes back, page by page), and its FAILED
   jobs that ended during the window are listed too (a job drain left queued, because the plan
   takes only instances, may have started before the apply took them). Jobs this deploy
   recorded or made are left out; the FAILED ones are described and judged (domain/window.py);
   those the deploy killed are recorded WATCHED (`watch`), before anything is submitted, then the
   window is stamped swept with what was found. A rerun after a crash lists again and finds the
   records it saved: each late job is recorded once, by its id.
2. `settle`: every WATCHED record (the sweep's, and those `jobguard run` recorded while the apply
   ran) is described by id and judged: killed by the deploy and not claimed by a rule or policy
   -> TERMINATED (owed: restore resubmits it exactly once, like a drained job); otherwise left
   alone with the reason (SKIPPED, FINISHED, or KEPT while it still runs).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..adapters.batch import LIFECYCLE
from ..domain.manifest import (
    DELETED,
    DRAIN,
    DRAINED,
    FINISHED,
    KEPT,
    LATE,
    OPENED,
    RESTORE,
    SKIPPED,
    SWEPT,
    TERMINATED,
    WATCHED,
    WATCHED_DELETED,
    JobRecord,
    Manifest,
)
from ..domain.tags import mark_of
from ..domain.window import ACTIVE, KILLED, KIND_WORDS, OWN, SUCCEEDED, Verdict, decide, failed_array, hms, judge, judge_array, window_line
from .context import Context
from .records import records_of

Json = dict[str, Any]
# The window is kept on Batch's clock, known to the second (the Date of its answers); ListJobs lags and a
# job is created while drain lists: the listing starts this much before drain began. A job created in
# that margin was listed by drain itself, or had ended before it.
CLOCK_MARGIN_MS = 60_000
CLOCK_SLACK_MS = 2_000  # how well jobguard knows Batch's clock: the Date of its answers has whole seconds
SHOWN = 50  # late jobs named one by one per kind; the rest are counted


def open_window(ctx: Context, manifest: Manifest) -> None:
    """Drain begins: the window opens now (Batch's clock), unless this deploy's window is already open."""
    manifest.open_window(_clock_ms(ctx))


def close_drain(ctx: Context, manifest: Manifest, frozen: Iterable[str]) -> str:
    """Drain finished its passes: stamp it, and the words the summary gives the user about the window."""
    manifest.stamp_window(DRAINED, _clock_ms(ctx))
    opened = int(manifest.window.get(OPENED, manifest.window[DRAINED]))
    frozen = set(frozen)
    open_queues = [q for q in manifest.queues if q not in frozen]
    if not open_queues:
        return "deploy window: every drained queue is frozen (disabled) until restore: the application's SubmitJob is refused meanwhile"
    seconds = (manifest.window[DRAINED] - opened) / 1000
    return (
        f"deploy window open since {hms(opened)} ({seconds:.0f} s so far) on {', '.join(sorted(open_queues))}: jobs submitted "
        "from then until restore are not drained; restore sweeps these queues for those the deploy kills and resubmits them"
    )


def watch(ctx: Context, manifest: Manifest, jobs: list[Json], stage: str = DRAIN) -> list[JobRecord]:
    """Record late jobs (JobDetails) in the manifest as WATCHED, each as it was submitted, and save it.

    What `jobguard run`'s watcher and restore's sweep call. Jobs already recorded (by id) and the
    replacements this deploy made are left out, so calling it twice records nothing twice. The
    caller holds the deploy's leases (the save is fenced by them). Returns the new records.
    """
    made = {r.replacement_id for r in manifest if r.replacement_id}
    new = [j for j in jobs if str(j["jobId"]) not in manifest.jobs and str(j["jobId"]) not in made and not _ours(manifest, j)]
    if not new:
        return []
    records = records_of(ctx, new, lambda job: LATE, {}, outcome=WATCHED, stage=stage)
    manifest.put(records)
    ctx.manifests.save(manifest)
    for record in records:
        ctx.report.job(record, "found", f" (status {record.status_at_drain})")
    return records


def settle(
    ctx: Context, manifest: Manifest, records: list[JobRecord], finish: Callable[[JobRecord], None], known: Mapping[str, Json] | None = None
) -> list[JobRecord]:
    """Judge WATCHED records from what Batch says of them now; returns those owed a replacement (TERMINATED).

    `finish` records each new outcome (restore's: put, report, event). `known`: JobDetails this run
    has just read (the sweep's, of jobs that had ended: they cannot change), not described again.
    Ids Batch forgot are skipped with an error: what the deploy did to them can no longer be told.
    """
    if not records:
        return []
    known = known or {}
    details = {r.job_id: dict(known[r.job_id]) for r in records if r.job_id in known}
    details.update(ctx.batch.describe(r.job_id for r in records if r.job_id not in known))
    gone = _gone_queues(ctx, {r.queue for r in records}) | set(manifest.window.get(DELETED, []))
    details.update(_doomed_end(ctx, [r for r in records if r.queue in gone and _active(details.get(r.job_id))]))
    killed = _killed(manifest)
    verdicts = _judged(
        ctx,
        {r.job_id: details[r.job_id] for r in records if r.job_id in details},
        killed,
        lambda job_id: manifest.jobs[job_id].queue in gone,
    )
    owed = []
    for record in records:
        job = details.get(record.job_id)
        if job is None:
            finish(
                record.moved_to(
                    SKIPPED,
                    RESTORE,
                    error="submitted during the deploy, and Batch no longer knows it: cannot tell whether the deploy killed it",
                )
            )
            continue
        verdict = verdicts[record.job_id]
        decision = decide(record, verdict, ctx.options.policies, ctx.options.engines)
        if decision.replace:
            record = record.moved_to(TERMINATED, RESTORE, error=None, reason=f"{LATE}; killed by the deploy: {decision.why}")
            owed.append(record)
        elif verdict.kind == SUCCEEDED:
            record = record.moved_to(FINISHED, RESTORE, note="submitted during the deploy; succeeded: nothing to resubmit")
        elif verdict.kind == ACTIVE:
            record = record.moved_to(KEPT, RESTORE, note=f"submitted during the deploy; {verdict.why} after it: left alone")
        else:
            record = record.moved_to(SKIPPED, RESTORE, note=f"left alone: {decision.why}")
        finish(record)
    return owed


@dataclass
class Swept:
    """What one sweep found: late jobs by kind, and lines for the summary."""

    found: Counter[str] = field(default_factory=Counter)
    facts: list[str] = field(default_factory=list)
    problems: int = 0
    recorded: dict[str, Json] = field(default_factory=dict)  # JobDetails of the killed jobs it recorded (ended: final)


def sweep(ctx: Context, manifest: Manifest, queues: set[str], frozen: set[str], known: Collection[str] = ()) -> Swept:
    """Find the jobs created on this deploy's queues since its drain began, record those the deploy
    killed (WATCHED, then judged by `settle`), and stamp the window swept. `queues`: the queues this
    restore may act on; `frozen`: queues the drain disabled (nothing could be submitted to them);
    `known`: jobs another open deploy records or made (two deploys' windows can overlap: one owner)."""
    swept = Swept()
    if not manifest.window_open:
        return swept
    opened = int(manifest.window[OPENED])
    if DRAINED not in manifest.window:
        ctx.report.warning(f"deploy {manifest.deploy_id}: its drain never finished; the deploy window is swept from when it began")
    elsewhere = sorted(q for q in manifest.queues if q not in queues and q not in frozen)
    for name in elsewhere:  # another deploy holds it, or a matrix leg restores it: that restore sweeps it
        ctx.report.line(f"queue {name}: not swept by this restore: the deploy window stays open until a restore of it does")
    watched = set(manifest.window.get(WATCHED_DELETED, []))
    for name in sorted(watched & set(manifest.queues)):
        ctx.report.line(f"queue {name}: deleted during the deploy; `jobguard run` recorded the jobs submitted to it until then")
    listed, unreachable, closed = _listed(ctx, manifest, sorted(q for q in manifest.queues if q in queues and q not in frozen), watched)
    _warn_deleted(ctx, manifest, frozen | watched, unreachable)
    swept.problems += len(unreachable)
    made = {r.replacement_id for r in manifest if r.replacement_id}
    late = {i: s for i, s in listed.items() if i not in manifest.jobs and i not in made and i not in known}
    failed = [i for i, s in late.items() if s.get("status") == "FAILED"]
    details = {i: j for i, j in ctx.batch.describe(failed).items() if not _ours(manifest, j)}
    late = {i: s for i, s in late.items() if i in details or i not in failed}  # less this deploy's own replacements
    # Listed only because of the margin, it ended before the drain began (a spot reclaim, its own failure):
    # nothing of this deploy touched it; its application retries it, or not.
    before = {i for i, j in details.items() if ended_before(j, opened)}
    verdicts = _judged(ctx, {i: j for i, j in details.items() if i not in before}, _killed(manifest), lambda job_id: False)
    verdicts.update({i: Verdict(OWN, "ended before the deploy began") for i in before})
    verdicts.update({i: judge(s) for i, s in late.items() if i not in verdicts})
    swept.found.update(v.kind for v in verdicts.values())
    _report(ctx, late, verdicts)
    if not ctx.options.dry_run:
        swept.recorded = {i: details[i] for i, v in verdicts.items() if v.killed}
        watch(ctx, manifest, list(swept.recorded.values()), stage=RESTORE)
        if not unreachable and not elsewhere:
            manifest.stamp_window("found", {k: swept.found[k] for k in (KILLED, OWN, SUCCEEDED, ACTIVE) if swept.found[k]})
            manifest.stamp_window(SWEPT, closed)
        ctx.manifests.save(manifest)
    swept.facts.append(window_line(manifest.deploy_id, {OPENED: opened, SWEPT: closed, "found": dict(swept.found)}) or "")
    ctx.report.line(swept.facts[-1])
    return swept


def _listed(ctx: Context, manifest: Manifest, names: list[str], watched: set[str]) -> tuple[dict[str, Json], list[str], int]:
    """Summaries of the jobs created on `names` in the window, and of those that ended FAILED in it, by id (none
    this deploy drained: each of those ended FAILED in the window, 100 000 of them in a large deploy);
    the queues that no longer exist (but those in `watched`: `jobguard run` recorded their jobs until they went);
    and when the window closed: Batch's clock as the sweep began, read from its first answer.

    The listing starts CLOCK_MARGIN_MS before drain began: a job created in that margin was listed by
    drain itself (it is in the manifest), or had ended before it (then only one the deploy could not
    have killed, or one a spot interruption took just before, is judged too).
    """
    listed: dict[str, Json] = {}
    unreachable = []
    closed: int | None = None
    for name in names:
        queue = ctx.batch.queue(name)
        if closed is None:  # this process may not have heard from Batch before: now its clock is known
            closed = _clock_ms(ctx)
        if queue is None and name in watched:
            continue
        if queue is None:
            unreachable.append(name)
            ctx.report.error(
                f"queue {name}: no longer exists: the jobs submitted to it during the deploy cannot be listed "
                "(run the apply under `jobguard run`, or freeze the queue, so none is lost)"
            )
            continue
        opened = int(manifest.window[OPENED])
        for summary in ctx.batch.list_created_after(queue.arn, opened - CLOCK_MARGIN_MS):
            if str(summary["jobId"]) in manifest.jobs:  # drained (created in the margin), not late
                continue
            if int(summary.get("createdAt") or 0) <= closed + CLOCK_SLACK_MS:  # one created once restore began is not late
                listed[str(summary["jobId"])] = summary
        # Jobs queued before drain began that started afterwards, on instances the apply then took away
        # (where the plan takes only instances, drain leaves queued jobs in place): they ended FAILED
        # during the window, and no AFTER_CREATED_AT listing shows them.
        for summary in ctx.batch.list_jobs(queue.arn, "FAILED"):
            stopped = summary.get("stoppedAt")
            if str(summary["jobId"]) in manifest.jobs:  # drained, not late (every drained job is listed here: not kept)
                continue
            if isinstance(stopped, int) and opened - CLOCK_MARGIN_MS // 2 <= stopped <= closed + CLOCK_SLACK_MS:
                listed.setdefault(str(summary["jobId"]), summary)
    return listed, unreachable, _clock_ms(ctx) if closed is None else closed


def _warn_deleted(ctx: Context, manifest: Manifest, frozen: set[str], unreachable: list[str]) -> None:
    for name in sorted(set(manifest.window.get(DELETED, [])) & set(manifest.queues) - frozen - set(unreachable)):
        ctx.report.warning(
            f"queue {name}: deleted during the deploy and made again: the jobs submitted to the old queue meanwhile cannot be "
            "listed (only those `jobguard run` recorded are judged); freeze the queues the plan deletes (the default)"
        )


def _judged(ctx: Context, details: dict[str, Json], killed: set[str], queue_gone: Callable[[str], bool]) -> dict[str, Verdict]:
    """Each job judged; a job that failed because another late job the deploy killed failed is killed too (chains).
    An array parent Batch failed for its children is judged by its FAILED children (one listing and their details)."""
    killed = set(killed)
    children = {i: _failed_children(ctx, i) for i, job in details.items() if failed_array(job)}
    verdicts: dict[str, Verdict] = {}
    while True:
        verdicts = {
            i: judge_array(job, [judge(c, queue_gone(i), killed) for c in children[i]], queue_gone(i))
            if i in children
            else judge(job, queue_gone(i), killed)
            for i, job in details.items()
        }
        more = {i for i, v in verdicts.items() if v.killed} - killed
        if not more:
            return verdicts
        killed |= more


def _failed_children(ctx: Context, array_id: str) -> list[Json]:
    indexes = ctx.batch.list_children(array_id, "FAILED")
    return list(ctx.batch.describe(f"{array_id}:{index}" for index in indexes).values())


def _doomed_end(ctx: Context, records: list[JobRecord]) -> dict[str, Json]:
    """Jobs still active on a queue the deploy deleted: Batch ends them (about 16 a second), so wait for
    that (up to stop-timeout) rather than judge them survivors. Their JobDetails as they are then."""
    if not records:
        return {}
    bound = ctx.options.stop_timeout
    ctx.report.line(f"waiting up to {bound:g} s for {len(records)} late jobs of deleted queues to end")
    started, poll = time.monotonic(), 0.25
    details = ctx.batch.describe(r.job_id for r in records)
    while any(_active(details.get(r.job_id)) for r in records) and time.monotonic() - started < bound:
        time.sleep(min(poll, max(0.0, bound - (time.monotonic() - started))))
        poll = min(5.0, poll * 1.5)
        details = ctx.batch.describe(r.job_id for r in records)
    return details


def ended_before(job: Json, opened: int) -> bool:
    """True when the job had ended before the drain began (both on Batch's clock, known to the second)."""
    stopped = job.get("stoppedAt")
    return isinstance(stopped, int) and stopped < opened - CLOCK_SLACK_MS


def _active(job: Json | None) -> bool:
    return job is not None and str(job.get("status")) in LIFECYCLE


def _killed(manifest: Manifest) -> set[str]:
    """Jobs of this deploy that ended because of it: stopped by its drain, or late jobs it killed."""
    return {r.job_id for r in manifest if r.stop_asked or TERMINATED in r.times}


def _gone_queues(ctx: Context, names: set[str]) -> set[str]:
    return {name for name in sorted(names) if ctx.batch.queue(name) is None}


def _ours(manifest: Manifest, job: Json) -> bool:
    """A replacement this deploy submitted (its mark names this deploy)."""
    mark = mark_of(job)
    return mark is not None and mark.deploy_id == manifest.deploy_id


def _report(ctx: Context, late: dict[str, Json], verdicts: dict[str, Verdict]) -> None:
    """One line per late job left alone (SHOWN of each kind, then a count); the killed ones are told as they are recorded."""
    said: Counter[str] = Counter()
    for job_id, summary in late.items():
        verdict = verdicts[job_id]
        said[verdict.kind] += 1
        if not verdict.killed and said[verdict.kind] <= SHOWN:
            ctx.report.line(f"  late job     {summary.get('jobName', '')} [{job_id}]: {verdict.why}: left alone")
    for kind, count in said.items():
        if kind != KILLED and count > SHOWN:
            ctx.report.line(f"  ... and {count - SHOWN} more late jobs {KIND_WORDS[kind]}: left alone")


def _clock_ms(ctx: Context) -> int:
    """Batch's clock (the Date of its last answer): the window is compared with createdAt and stoppedAt,
    which are Batch's. The store's clock may be the runner's (the file store), minutes off AWS's."""
    return int(ctx.aws.server_time("batch") * 1000)
