"""status: what each manifest says, where the replacements are now, and who holds the queues.

Without a deploy id it shows the open deploys (one listing of the index); `--all` shows every
manifest in the store. `--json` prints one document for scripts; `--watch` follows the
replacements until they finish.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from ..adapters.lease import LeaseRecord, Leases, lease_is_live, lease_scope, lease_state, list_leases, read_lease
from ..domain.manifest import RESUBMITTED, Manifest, replacements
from ..errors import JobguardError, ManifestError, UsageError
from ..output.summary import SUMMARY_BUDGET, counts_line, markdown, print_table
from .context import Context
from .doubles import reconcile
from .manifests import ForeignManifestError
from .requests import Requests

FINAL = ("SUCCEEDED", "FAILED")


def load_manifests(ctx: Context, deploy_id: str | None, preferred: str | None = None) -> tuple[list[Manifest], list[str]]:
    """The named manifest, else the `preferred` one if it exists, else the open ones (--all: every one), oldest first.

    Also what could not be read, one line each.
    """
    if not deploy_id and preferred and not ctx.options.all and ctx.store.load(preferred) is not None:
        deploy_id = preferred
    if deploy_id:
        manifest = ctx.manifests.load(deploy_id)
        if manifest is None:
            raise UsageError(f"no manifest for deploy {deploy_id} at {ctx.store.uri(deploy_id)}")
        return [manifest], []
    ids = ctx.store.deploy_ids() if ctx.options.all else ctx.manifests.open_ids()
    manifests, problems = [], []
    for each in ids:
        try:
            manifest = ctx.manifests.load(each)
        except ForeignManifestError as exc:  # a store shared by accounts or regions: that deploy is not this one's to show or check
            ctx.report.notice(f"skipped: {exc}")  # stderr: `--json` keeps one document on stdout
            continue
        except ManifestError as exc:
            problems.append(str(exc))
            continue
        if manifest is not None:
            manifests.append(manifest)
    return sorted(manifests, key=lambda m: m.created_at), problems


def replacement_states(ctx: Context, manifests: list[Manifest]) -> dict[str, str]:
    """Current Batch status of every replacement, by replacement id."""
    ids = [r.replacement_id for m in manifests for r in m if r.replacement_id]
    return {i: s.status for i, s in ctx.batch.states(ids).items()}


def status(ctx: Context, deploy_id: str | None, preferred: str | None = None) -> int:
    """Print the manifests with their replacements' status; 2 when a manifest could not be read."""
    manifests, problems = load_manifests(ctx, deploy_id, preferred)
    current = replacement_states(ctx, manifests)
    if ctx.options.json:
        document = {
            "deploys": [_as_json(ctx, m, current) for m in manifests],
            "leases": [_lease_json(ctx, lease) for lease in _leases(ctx)],
            "replacements": replacements(manifests),
            "unreadable": problems,
        }
        text = json.dumps(document, indent=2, sort_keys=True)
        if ctx.report.github:  # the runner reads `##[command]` anywhere in a line; in JSON `#` is only ever inside a string
            text = text.replace("##[", "#\\u0023[")
        ctx.report.out.write(text + "\n")
        return 2 if problems else 0
    if not manifests and not problems:
        scope = "" if ctx.options.all else " with work left (`jobguard status --all` shows every manifest)"
        ctx.report.line(f"no deploys{scope} in {ctx.store.location()}")
    leases = _leases(ctx)
    for lease in leases:
        ctx.report.line(_lease_line(ctx, lease))
    if leases:
        ctx.report.line()
    for manifest in manifests:
        ctx.report.line(f"deploy {manifest.deploy_id} ({ctx.store.uri(manifest.deploy_id)}), updated {manifest.updated_at}")
        if manifest.origin.get("run_url"):
            ctx.report.line(f"  run: {manifest.origin['run_url']}")
        print_table(ctx.report, manifest, current)
        share = SUMMARY_BUDGET // len(manifests)  # every section in one step's summary: GitHub's 1 MiB is for all
        ctx.report.append_summary(markdown("status", manifest, ctx.store.uri(manifest.deploy_id), current=current, budget=share))
        ctx.report.line()
    for problem in problems:
        ctx.report.error(problem)
    return 2 if problems else 0


def _leases(ctx: Context) -> list[LeaseRecord]:
    """Every queue lease of this account and region: who holds each queue, and since when."""
    try:
        return list_leases(ctx.store, lease_scope(ctx.account, ctx.region))
    except JobguardError as exc:
        ctx.report.warning(f"cannot list the queue leases: {exc}")
        return []


def _lease_line(ctx: Context, lease: LeaseRecord) -> str:
    view = _lease_json(ctx, lease)
    left = f"; free in {view['free_in_seconds']:.0f} s" if view["free_in_seconds"] else ""
    return f"queue {lease.queue}: deploy {lease.deploy_id}, {view['state']} since {view['since']} ({lease.holder}){left}"


def _lease_json(ctx: Context, lease: LeaseRecord) -> dict[str, Any]:
    state, left = lease_state(lease, ctx.store.clock())
    return {
        "queue": lease.queue,
        "deploy_id": lease.deploy_id,
        "holder": lease.holder,
        "state": state,
        "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(lease.taken_at)),
        "renewed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(lease.renewed_at)),
        "free_in_seconds": round(left, 1),
        "release": f"jobguard restore --store {ctx.store.location()} --deploy-id {lease.deploy_id}",
    }


def _as_json(ctx: Context, manifest: Manifest, current: dict[str, str]) -> dict[str, Any]:
    return {
        "deploy_id": manifest.deploy_id,
        "manifest": ctx.store.uri(manifest.deploy_id),
        "created_at": manifest.created_at,
        "updated_at": manifest.updated_at,
        "origin": manifest.origin,
        "queues": manifest.queues,
        "frozen_queues": manifest.frozen_queues,
        "counts": manifest.counts(),
        "summary": counts_line(manifest),
        "work_left": manifest.has_work_left,
        "window": manifest.window,
        "jobs": [
            {
                "job_id": r.job_id,
                "job_arn": r.job_arn,
                "job_name": r.job_name,
                "queue": r.queue,
                "job_definition": r.job_definition,
                "status_at_drain": r.status_at_drain,
                "outcome": r.outcome,
                "stage": r.stage,
                "reason": r.reason,
                "replacement_id": r.replacement_id,
                "replacement_job_definition": r.replacement_job_definition,
                "replacement_status": current.get(r.replacement_id or ""),
                "lineage_id": r.lineage,
                "error": r.error,
                "note": r.note,
                "engine": r.engine,
                "engine_role": r.engine_role,
                "kind": "late" if r.late else "drained",
            }
            for r in manifest
        ],
    }


def check(ctx: Context, deploy_id: str | None, preferred: str | None = None) -> int:
    """Find replacements made twice (a run paused mid-call; commands/doubles.py) and stop all but the one each
    manifest records, under each deploy's leases; 1 when a job is owed again (its restore must run), 2 when a
    manifest could not be read."""
    manifests, problems = load_manifests(ctx, deploy_id, preferred)
    owed = 0
    for manifest in manifests:
        if any(r.outcome == RESUBMITTED for r in manifest):
            owed += _check_deploy(ctx, manifest.deploy_id)
    for problem in problems:
        ctx.report.error(problem)
    return 2 if problems else 1 if owed else 0


def _check_deploy(ctx: Context, deploy_id: str) -> int:
    """Reconcile one deploy under its leases; how many of its jobs are owed again."""
    leases = Leases(ctx.store, deploy_id, ctx.options.lease, ctx.report.notice, lease_scope(ctx.account, ctx.region))
    try:
        manifest = ctx.manifests.load(deploy_id)
        if manifest is None:
            return 0
        busy = _held_by_others(ctx, deploy_id, manifest.record_queues())
        leases.acquire(manifest.record_queues() - busy)
        ctx.manifests.fence = ctx.aws.guard = leases.check
        manifest = ctx.manifests.load(deploy_id) or manifest  # read again under the leases
        queues = Requests(ctx.batch, ctx.options, {}, lambda _: None)
        records = [r for r in manifest if r.outcome == RESUBMITTED and r.queue not in busy]
        done = reconcile(ctx, queues.queue, manifest, records)  # twice, lookup-window apart: ListJobs lags
        if manifest.changed:
            ctx.manifests.save(manifest)
        ctx.report.line(f"deploy {deploy_id}: {len(records)} replacements checked, {len(done.stopped)} doubles stopped")
        if done.reopened:
            ctx.report.error(
                f"deploy {deploy_id}: {len(done.reopened)} jobs are owed again (their replacement was stopped as a double): "
                f"run `jobguard restore --store {ctx.store.location()} --deploy-id {deploy_id}`"
            )
        return len(done.reopened)
    finally:
        ctx.manifests.fence = lambda: None
        ctx.aws.guard = None
        # Each lease as found: a queue in the deploy's apply stays its own (with its own times), any other is free again.
        leases.hand_back(raise_errors=sys.exc_info()[0] is None)


def _held_by_others(ctx: Context, deploy_id: str, queues: set[str]) -> set[str]:
    """The queues another live deploy holds, each said once: checked later. Waiting for them would last
    that deploy's whole apply (lock-timeout, then exit 3), and its drain already stopped the doubles of
    this deploy it found there (commands/doubles.py `doubles_of_others`)."""
    busy = set()
    scope = lease_scope(ctx.account, ctx.region)
    for queue in sorted(queues):
        lease = read_lease(ctx.store, queue, scope)
        if lease is not None and lease.deploy_id != deploy_id and lease_is_live(lease, ctx.store.clock()):
            busy.add(queue)
            ctx.report.line(
                f"queue {queue}: not checked: deploy {lease.deploy_id} holds it ({lease.holder}); check again once it is restored"
            )
    return busy


def watch(ctx: Context, deploy_id: str | None, preferred: str | None = None) -> int:
    """Follow the replacements until every one has finished; 1 if any failed (or time ran out)."""
    manifests, problems = load_manifests(ctx, deploy_id, preferred)
    for problem in problems:
        ctx.report.error(problem)
    ids = [r.replacement_id for m in manifests for r in m if r.replacement_id]
    if not ids:
        ctx.report.line("no replacements to follow")
        return 0
    timeout = ctx.options.timeout
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        current = replacement_states(ctx, manifests)
        done = [i for i in ids if current.get(i) in FINAL]
        failed = [i for i in ids if current.get(i) == "FAILED"]
        still = [current.get(i, "UNKNOWN") for i in ids if current.get(i) not in FINAL]
        counts = ", ".join(f"{still.count(s)} {s}" for s in sorted(set(still)))
        ctx.report.line(
            f"{len(done)}/{len(ids)} replacements finished: {len(done) - len(failed)} succeeded, {len(failed)} failed"
            + (f"; still {counts}" if counts else "")
        )
        if len(done) == len(ids):
            break
        if deadline is not None and time.monotonic() >= deadline:
            ctx.report.error(f"gave up watching after {timeout:g} s: {len(ids) - len(done)} replacements still active")
            return 1
        wait = ctx.options.interval if deadline is None else max(0.0, min(ctx.options.interval, deadline - time.monotonic()))
        time.sleep(wait)
    names = {r.replacement_id: r.job_name for m in manifests for r in m}
    for job_id in failed:
        ctx.report.error(f"{names.get(job_id)}: replacement {job_id} FAILED")
    return 1 if failed else 0
