"""Benchmark row for precision: a Terraform plan replaces one compute environment under a queue of
many queued and a few running jobs. The apply takes only the running jobs' instances away; the
queued jobs would run on the new environment.

Measured side by side in one run, on one simulated AWS (jobguard.sim, the same layer as bench.run:
latency per call, a token-bucket limit per Batch action, Batch's asynchronous stops):

- precise: `drain --plan plan.json` (only the started jobs are drained), then `restore`;
- everything: `drain` without a plan, as jobguard did before precision (and as it still does
  without a plan), then `restore`; stops are bulk (TerminateJobs) in both.

For each: jobguard's calls by action, seconds (drain less Batch's stop wait, as in bench.run),
peak RSS, jobs stopped and resubmitted, and the floor at AWS's 50 calls/s for those calls
(max over actions of calls/50: each action has its own budget). `--limit` raises the simulated
limit (and jobguard's own rate, 96 % of it) for the whole run: at 50 calls/s the 100 500
SubmitJob calls of "everything" alone take 33 minutes.

  python -m bench.precision [--queued 100000] [--running 500] [--limit 50] [--latency 0.05] [--stop-seconds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.run import Stops, _process, _watch_stops
from jobguard.sim import Seeder, SimulatedAWS
from jobguard.sim import Timing as BatchTiming

AWS_LIMIT = 50.0
QUEUE = "science"


def _plan(environment_arn: str) -> dict[str, Any]:
    """`terraform show -json` of a plan that replaces the queue's compute environment (EC2 -> SPOT)."""
    resources = {"type": "EC2", "instance_type": ["optimal"], "max_vcpus": 256, "min_vcpus": 0, "subnets": ["subnet-1"]}
    before = {"compute_environment_name": f"{QUEUE}-ce", "arn": environment_arn, "type": "MANAGED", "compute_resources": [resources]}
    after = {**before, "arn": None, "compute_resources": [{**resources, "type": "SPOT"}]}
    change = {"actions": ["create", "delete"], "before": before, "after": after}
    return {
        "format_version": "1.2",
        "resource_changes": [
            {"address": "aws_batch_compute_environment.science", "type": "aws_batch_compute_environment", "change": change}
        ],
    }


def _seed(aws: SimulatedAWS, queued: int, running: int) -> tuple[list[str], list[str]]:
    """Jobs put straight into the simulation (through the API, seeding would be throttled)."""
    ids: dict[str, list[str]] = {"RUNNABLE": [], "RUNNING": []}
    for status, count in (("RUNNING", running), ("RUNNABLE", queued)):
        for index in range(count):
            request = {"jobName": f"{status.lower()}-{index}", "jobQueue": QUEUE, "jobDefinition": "work"}
            job_id = aws.batch.submit_job(request)["jobId"]
            aws.batch.set_status(job_id, status)
            aws.batch.backdate(job_id, 60)  # submitted a while ago: past ListJobs' lag
            ids[status].append(job_id)
    return ids["RUNNABLE"], ids["RUNNING"]


def measure(precise: bool, queued: int, running: int, limit: float, latency: float, timing: BatchTiming, work: Path) -> dict[str, Any]:
    """One drain and restore of the scenario: with the plan (precise) or without (everything)."""
    with SimulatedAWS(timing) as aws:
        aws.latency, aws.rate, aws.burst = latency, limit, limit
        seed = Seeder(aws)
        environment = seed.compute_environment(f"{QUEUE}-ce")
        seed.queue(QUEUE, compute_environment=environment)
        seed.definition("work")
        waiting, started = _seed(aws, queued, running)
        folder = Path(tempfile.mkdtemp(dir=work))
        pace = f"rate: {limit * 0.96:g}\nburst: {limit:g}\n" if limit != AWS_LIMIT else ""
        (folder / ".jobguard.yml").write_text(f"lock-timeout: 5\nstop-timeout: 600\n{pace}")
        (folder / "plan.json").write_text(json.dumps(_plan(environment)))
        store = f"file://{folder}/manifests"
        env = {**os.environ, **aws.env()}
        seeded = Counter(aws.calls)
        stops = Stops()
        _watch_stops(aws, started, stops)
        plan = ["--plan", "plan.json"] if precise else []
        drain = _process("jobguard", ["drain", *plan, "--store", store, "--queue", QUEUE, "--deploy-id", "bench"], env, str(folder))
        aws.after = None
        drained = Counter(aws.calls) - seeded
        seed.definition("work")  # the deploy's new revision
        deployed = Counter(aws.calls)
        restore = _process("jobguard", ["restore", "--store", store, "--deploy-id", "bench"], env, str(folder))
        restored = Counter(aws.calls) - deployed
        with aws.batch.lock:
            stopped = sum(1 for j in waiting + started if aws.batch.jobs[j].terminated or aws.batch.jobs[j].cancelled)
            left = sum(1 for j in waiting if aws.batch.jobs[j].status == "RUNNABLE")
        assert drain.code == restore.code == 0, (drain, restore)
    return {
        "case": "precise (--plan)" if precise else "everything (no plan)",
        "drain_s": drain.seconds - stops.wait,
        "stop_wait": stops.wait,
        "restore_s": restore.seconds,
        "drain_calls": drained,
        "restore_calls": restored,
        "stopped": stopped,
        "resubmitted": restored["batch:SubmitJob"],
        "left": left,
        "rss": max(drain.peak_rss_mb, restore.peak_rss_mb),
    }


def _floor(calls: Counter[str]) -> float:
    """Seconds at AWS's limit: each Batch action has its own budget of 50 calls/s."""
    return max((n / AWS_LIMIT for action, n in calls.items() if action.startswith("batch:")), default=0.0)


def _calls(calls: Counter[str]) -> str:
    shown = {a.split(":", 1)[1]: n for a, n in sorted(calls.items()) if a.startswith("batch:") and n}
    return ", ".join(f"{a} {n}" for a, n in shown.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queued", type=int, default=100_000)
    parser.add_argument("--running", type=int, default=500)
    parser.add_argument("--limit", type=float, default=AWS_LIMIT, help="simulated calls/s per Batch action (AWS: 50)")
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--stop-seconds", type=float, default=2.0, help="how long a terminated running job runs on")
    parser.add_argument("--only", choices=("precise", "everything"), help="measure one case")
    args = parser.parse_args()
    timing = BatchTiming(stop_seconds=args.stop_seconds, cancel_seconds=min(1.0, args.stop_seconds), list_lag_seconds=1.0)
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} cores; {args.queued} queued + {args.running} running jobs; "
        f"limit {args.limit:g} calls/s per action; latency {args.latency * 1000:.0f} ms; stop {args.stop_seconds:g} s",
        flush=True,
    )
    print(
        "| case | drain s (less stop wait) | restore s | stopped | resubmitted | left queued | drain calls | restore calls "
        "| floor at 50/s: drain + restore s | peak RSS MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    cases = [c for c in (True, False) if args.only is None or (args.only == "precise") == c]
    with tempfile.TemporaryDirectory() as work:
        for precise in cases:
            started = time.monotonic()
            row = measure(precise, args.queued, args.running, args.limit, args.latency, timing, Path(work))
            print(
                f"| {row['case']} | {row['drain_s']:.1f} | {row['restore_s']:.1f} | {row['stopped']} | {row['resubmitted']} | "
                f"{row['left']} | {_calls(row['drain_calls'])} | {_calls(row['restore_calls'])} | "
                f"{_floor(row['drain_calls']):.0f} + {_floor(row['restore_calls']):.0f} | {row['rss']:.0f} |",
                flush=True,
            )
            print(f"  (case measured in {time.monotonic() - started:.0f} s wall, seeding included)", flush=True)


if __name__ == "__main__":
    main()
