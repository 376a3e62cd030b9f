"""status: what each manifest says, and where the replacements are now."""

from __future__ import annotations

import json
import time
from typing import Any

from ..errors import UsageError
from ..manifest import Manifest
from ..report import counts_line
from .context import Context


def load_for_status(ctx: Context, deploy_id: str | None) -> list[Manifest]:
    """The named manifest, or all of them oldest first."""
    ids = [deploy_id] if deploy_id else ctx.store.deploy_ids()
    manifests = []
    for i in ids:
        manifest = ctx.store.load(i)
        if manifest is None:
            raise UsageError(f"no manifest for deploy {i} at {ctx.store.uri(i)}")
        manifests.append(manifest)
    return sorted(manifests, key=lambda m: m.created_at)


def replacement_status(ctx: Context, manifests: list[Manifest]) -> dict[str, str]:
    """Current Batch status of every replacement, by replacement id."""
    ids = [r.replacement_id for m in manifests for r in m if r.replacement_id]
    return ctx.batch.statuses(ids)


def status(ctx: Context, deploy_id: str | None) -> list[Manifest]:
    """Print the manifests (all of them, or the one named) with their replacements' status."""
    manifests = load_for_status(ctx, deploy_id)
    current = replacement_status(ctx, manifests)
    if ctx.options.json:
        ctx.report.line(json.dumps([_as_json(ctx, m, current) for m in manifests], indent=2))
        return manifests
    if not manifests:
        ctx.report.line(f"no manifests in {ctx.options.store}")
    for manifest in manifests:
        ctx.report.line(f"deploy {manifest.deploy_id} ({ctx.store.uri(manifest.deploy_id)}), updated {manifest.updated_at}")
        if manifest.origin.get("run_url"):
            ctx.report.line(f"  run: {manifest.origin['run_url']}")
        ctx.report.table(manifest, current)
        ctx.report.summary("status", manifest, ctx.store.uri(manifest.deploy_id), current)
        ctx.report.line()
    return manifests


def _as_json(ctx: Context, manifest: Manifest, current: dict[str, str]) -> dict[str, Any]:
    return {
        "deploy_id": manifest.deploy_id,
        "manifest": ctx.store.uri(manifest.deploy_id),
        "created_at": manifest.created_at,
        "updated_at": manifest.updated_at,
        "origin": manifest.origin,
        "counts": manifest.counts(),
        "summary": counts_line(manifest),
        "jobs": [
            {
                "job_id": r.job_id,
                "job_name": r.job_name,
                "queue": r.queue,
                "job_definition": r.job_definition,
                "status_at_drain": r.status_at_drain,
                "outcome": r.outcome,
                "replacement_id": r.replacement_id,
                "replacement_job_definition": r.replacement_job_definition,
                "replacement_status": current.get(r.replacement_id or ""),
                "error": r.error,
            }
            for r in manifest
        ],
    }


FINAL = ("SUCCEEDED", "FAILED")


def watch(ctx: Context, deploy_id: str | None, timeout: float | None = None) -> int:
    """Follow the replacements until every one has finished; 1 if any failed (or time ran out)."""
    manifests = load_for_status(ctx, deploy_id)
    ids = [r.replacement_id for m in manifests for r in m if r.replacement_id]
    if not ids:
        ctx.report.line("no replacements to follow")
        return 0
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        current = replacement_status(ctx, manifests)
        done = [i for i in ids if current.get(i) in FINAL]
        failed = [i for i in ids if current.get(i) == "FAILED"]
        active = sorted({current.get(i, "UNKNOWN") for i in ids} - set(FINAL))
        ctx.report.line(
            f"{len(done)}/{len(ids)} replacements finished: {len(done) - len(failed)} succeeded, {len(failed)} failed"
            + (f"; still {', '.join(f'{sum(current.get(i) == s for i in ids)} {s}' for s in active)}" if active else "")
        )
        if len(done) == len(ids):
            break
        if deadline is not None and time.monotonic() >= deadline:
            ctx.report.error(f"gave up watching after {timeout:g} s: {len(ids) - len(done)} replacements still active")
            return 1
        time.sleep(ctx.options.interval if deadline is None else max(0.0, min(ctx.options.interval, deadline - time.monotonic())))
    names = {r.replacement_id: r.job_name for m in manifests for r in m}
    for job_id in failed:
        ctx.report.error(f"{names.get(job_id)}: replacement {job_id} FAILED")
    return 1 if failed else 0
