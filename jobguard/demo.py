"""`jobguard demo`: a whole deploy cycle against a simulated AWS, as a user would see it.

Seeds two queues with running, queued, array and dependent jobs (one dependent in the other
queue), drains one of them, registers a new job-definition revision as a deploy would, restores,
restores again (nothing), and shows where the replacements are. The simulated Batch behaves like
the real one: a stopped job keeps running for a while (here 3 s; ECS allows 30 to 120 s), and a
job PENDING on a stopped job fails with it, in any queue.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import UsageError
from .output.report import Reporter

QUEUE, OTHER_QUEUE = "science-queue", "reports-queue"
REVISION_1 = {
    "image": "rnaseq:1.0",
    "command": ["python", "align.py", "Ref::sample"],
    "environment": [{"name": "REFERENCE", "value": "GRCh37"}, {"name": "THREADS", "value": "4"}],
    "resourceRequirements": [{"type": "VCPU", "value": "4"}, {"type": "MEMORY", "value": "8192"}],
}
REVISION_2 = {
    **REVISION_1,
    "image": "rnaseq:2.0",
    "environment": [{"name": "REFERENCE", "value": "GRCh38"}, {"name": "THREADS", "value": "8"}],
    "resourceRequirements": [{"type": "VCPU", "value": "8"}, {"type": "MEMORY", "value": "16384"}],
}


def run_demo(report: Reporter, main: Callable[[list[str]], int]) -> int:
    """Run the cycle with `main` (the CLI's: `jobguard ARGS`); 0 when every drained job came back exactly once on the new revision."""
    try:
        from .sim import Seeder, SimulatedAWS, Timing
    except ImportError:
        raise UsageError("the demo needs a simulated AWS", hint="pip install 'jobguard[demo]'") from None
    folder = Path(tempfile.mkdtemp(prefix="jobguard-demo-"))
    store = f"file://{folder / 'manifests'}"
    config = folder / "jobguard.yml"
    config.write_text(
        f"store: {store}\nqueues: [{QUEUE}, {OTHER_QUEUE}]\nsigning-key: file:{folder / 'signing.key'}\nlookup-window: 2s\nlock-ttl: 10\n"
    )
    timing = Timing(stop_seconds=3.0, cancel_seconds=0.5, list_lag_seconds=1.0)
    with SimulatedAWS(timing=timing) as aws, aws.environment():
        seed = Seeder(aws)
        report.line(f"== A simulated AWS account ({aws.endpoint}) with queues {QUEUE} and {OTHER_QUEUE}, job definition rnaseq:1")
        seed.queue(QUEUE)
        seed.queue(OTHER_QUEUE)
        # One attempt: a lost host ends the job. With attempts left, Batch would run a started job again
        # after the apply (same job id), and jobguard would rightly leave it running: nothing to show.
        seed.definition("rnaseq", containerProperties=REVISION_1, parameters={"sample": "none"}, retryStrategy={"attempts": 1})
        align = seed.job(
            jobName="align-sample-17",
            jobQueue=QUEUE,
            jobDefinition="rnaseq",
            parameters={"sample": "s3://lab/s17.fastq"},
            containerOverrides={
                "resourceRequirements": [{"type": "MEMORY", "value": "32768"}],
                "environment": [{"name": "PRIORITY_RUN", "value": "yes"}],
            },
        )
        seed.job(
            status="STARTING",
            jobName="align-sample-18",
            jobQueue=QUEUE,
            jobDefinition="rnaseq",
            parameters={"sample": "s3://lab/s18.fastq"},
        )
        seed.job(status="RUNNABLE", jobName="quantify-batch", jobQueue=QUEUE, jobDefinition="rnaseq", arrayProperties={"size": 10})
        seed.job(status="PENDING", jobName="merge-results", jobQueue=QUEUE, jobDefinition="rnaseq", dependsOn=[{"jobId": align}])
        seed.job(status="PENDING", jobName="weekly-report", jobQueue=OTHER_QUEUE, jobDefinition="rnaseq", dependsOn=[{"jobId": align}])
        seed.job(status="SUCCEEDED", jobName="align-sample-16", jobQueue=QUEUE, jobDefinition="rnaseq")
        report.line(f"   4 active jobs on {QUEUE} (one an array of 10, one waiting on another), one on {OTHER_QUEUE} waiting on")
        report.line("   align-sample-17, and one that already finished.\n")

        plan = folder / "plan.json"
        plan.write_text(json.dumps(_plan()))
        report.line(f"== Before terraform apply, with the plan that replaces {QUEUE}'s compute environment:")
        report.line("   jobguard drain --plan plan.json --deploy-id demo-1")
        codes = [main(["drain", "--config", str(config), "--plan", str(plan), "--deploy-id", "demo-1"])]

        report.line("\n== terraform apply (simulated): registers rnaseq:2 with a new image, environment and resources")
        seed.definition("rnaseq", containerProperties=REVISION_2, parameters={"sample": "none"}, retryStrategy={"attempts": 3})

        report.line("\n== After terraform apply: jobguard restore --deploy-id demo-1")
        codes.append(main(["restore", "--config", str(config), "--deploy-id", "demo-1"]))

        report.line("\n== A second restore submits nothing (exactly once)")
        codes.append(main(["restore", "--config", str(config), "--deploy-id", "demo-1"]))

        aws.batch.advance()
        aws.batch.advance()
        report.line("\n== Batch schedules the replacements: jobguard status --deploy-id demo-1")
        codes.append(main(["status", "--config", str(config), "--deploy-id", "demo-1"]))
        return _verdict(report, aws, codes, align, store)


def _plan() -> dict[str, Any]:
    """What `terraform show -json` says of a plan that replaces the science queue's compute environment."""
    before = {"compute_environment_name": f"{QUEUE}-ce", "type": "UNMANAGED"}
    change = {"actions": ["delete", "create"], "before": before, "after": before}
    return {
        "format_version": "1.2",
        "resource_changes": [
            {"address": "aws_batch_compute_environment.science", "type": "aws_batch_compute_environment", "change": change}
        ],
    }


def _verdict(report: Reporter, aws: Any, codes: list[int], align: str, store: str) -> int:
    from .domain.tags import mark_of

    replaced: dict[str, list[str]] = {}
    stopped = set()
    for job in list(aws.batch.jobs.values()):
        if job.index is None:
            mark = mark_of(aws.batch.detail(job))
            if mark:
                replaced.setdefault(mark.original_id, []).append(job.job_id)
            if job.terminated or job.cancelled:
                stopped.add(job.job_id)
    # The plan only replaces the compute environment: the started jobs and their dependents are
    # drained, the queued array job is left queued (Batch runs it on the new environment).
    exactly_once = bool(stopped) and set(replaced) == stopped and all(len(v) == 1 for v in replaced.values())
    detail = aws.batch.detail(aws.batch.jobs[replaced[align][0]]) if align in replaced else None
    ok = exactly_once and codes == [0, 0, 0, 0] and detail is not None and detail["jobDefinition"].endswith(":2")
    if detail is not None:
        resources = {r["type"]: r["value"] for r in detail["container"]["resourceRequirements"]}
        report.line(f"\nalign-sample-17 came back on {detail['jobDefinition'].rsplit('/', 1)[-1]}, image {detail['container']['image']}:")
        kept = f"kept its own MEMORY ({resources['MEMORY']}) and parameters"
        report.line(f"  {kept}; took VCPU ({resources['VCPU']}) and the rest from the new revision.")
    verdict = "Demo complete: every drained job was resubmitted exactly once." if ok else f"Demo FAILED (exit codes {codes})."
    report.line(f"Manifests are in {store}. {verdict}")
    return 0 if ok else 1
