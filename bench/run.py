"""Benchmark: jobguard's drain and restore against the AWS rate limit and the hand-written loop.

moto's server runs on loopback behind jobguard's simulation layer (`jobguard.sim`), which adds a
fixed latency to every call and throttles each Batch action with a token bucket (HTTP 429
TooManyRequestsException, as AWS answers). Batch is the real-world model: TerminateJob is
asynchronous (a running job stops `--stop-seconds` later; ECS's default is 30 s) and ListJobs
shows a new job after `--list-lag` seconds. jobguard and the loop run as separate processes,
measured in the same run.

  python -m bench.run [--sizes 300,2000,10000] [--latencies 0.05,0.1] [--limit 50] [--loop-sample 1000]
                      [--stop-seconds 30] [--list-lag 1] [--restore-limits 100000=150]

`--restore-limits N=RATE` raises the simulated limit (and jobguard's own `rate`, 96 % of it, as the
defaults are 48 of AWS's 50) for the restores of N jobs: at 50 calls/s, 100 000 SubmitJob calls take
33 minutes. Drain always runs at `--limit`. Each row says the limit it ran at; its floors are at that limit.

"store B/job" is what drain and restore wrote to the (folder) store, in bytes per job: manifest
heads, pages, leases and index entries, counted where the store writes them. "load" is the
machine's 1-minute load average when the row's operation ended (2 cores: above 2, others were
running too).

drain waits until every job it stopped has ended: that wait is Batch's stop time, not jobguard's
work, so the table shows it apart ("stop wait s"): "jobguard s" and "÷ floor" of drain count from
its start to its last stop call plus whatever follows the wait; restore has no such wait.

The floors ("floor s"): restore's is N/limit s, one SubmitJob per job at the limit. drain stops in
bulk (TerminateJobs, 50 jobs a call), so what it must call is its listing, its describing and its
stopping: ceil(N/1000) ListJobs pages one after another (a page needs the previous page's token, so
each costs a round trip, `--latencies`; the statuses are listed side by side, and the bench's jobs are
all RUNNING), then every job described (DescribeJobs, 100 a call) before it is stopped (TerminateJobs,
50 a call), each at the limit: floor = ceil(N/1000) x latency + (ceil(N/100) + ceil(N/50)) / limit.

"start s" is what any Python tool pays before its work: a process that imports boto3 and makes one
call (GetCallerIdentity, as jobguard does to learn its account), measured in the same run against the
same simulated AWS. "÷ floor+start" divides each operation's time by its floor plus that start.

Every process timed loads jobguard's (and the bench's) bytecode, written before the first: as pip
writes it when it installs jobguard. A checkout run with PYTHONDONTWRITEBYTECODE set (or whose
__pycache__ cannot be written) would otherwise compile jobguard's source in each process: 50-60 ms
of a drain's start that no installed jobguard pays (boto3, in the "start s" process, is compiled).

The loop is measured on min(N, --loop-sample) jobs and scaled to N (it is linear: one call after
another); the table says so. Ratios are the figures to read: timings on shared machines are noisy.
"""

from __future__ import annotations

import argparse
import compileall
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from jobguard.domain.tags import mark_of
from jobguard.sim import Seeder, SimulatedAWS
from jobguard.sim import Timing as BatchTiming

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Timing:
    seconds: float
    peak_rss_mb: float
    code: int
    store_bytes: int = 0
    load: float = 0.0


@dataclass
class Stops:
    """When drain's TerminateJob calls and its waiting for the jobs to end happened (monotonic clock)."""

    last_terminate: float = 0.0
    wait: float = 0.0  # seconds from the last TerminateJob to the first look that found every job ended


def _process(module: str, args: list[str], env: dict[str, str], cwd: str) -> Timing:
    """Run `python -m module args` to the end: its time, its own peak RSS, its exit code."""
    peak = Path(tempfile.mkstemp(suffix=".peak")[1])
    command = [sys.executable, "-m", "bench.peak", str(peak), module, *args]
    started = time.monotonic()
    process = subprocess.run(
        command, env={**env, "PYTHONPATH": str(ROOT)}, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False
    )
    seconds = time.monotonic() - started
    if process.returncode != 0:
        sys.stderr.write(process.stderr.decode()[-2000:])
    peak_kb, written = ([int(x) for x in peak.read_text().split()] + [0, 0])[:2]
    peak.unlink()
    return Timing(seconds, peak_kb / 1024, process.returncode, written, os.getloadavg()[0])


def _watch_stops(aws: SimulatedAWS, jobs: list[str], stops: Stops) -> None:
    """Note the last TerminateJob, and how long after it drain's polling first found every job ended."""

    def after(action: str, count: int) -> None:
        if action in ("batch:TerminateJob", "batch:TerminateJobs", "batch:CancelJob", "batch:CancelJobs"):
            stops.last_terminate = time.monotonic()
        elif action == "batch:DescribeJobs" and stops.last_terminate and not stops.wait:
            with aws.batch.lock:
                if all(aws.batch.jobs[j].status in ("SUCCEEDED", "FAILED") for j in jobs):
                    stops.wait = time.monotonic() - stops.last_terminate

    aws.after = after


def _seed(aws: SimulatedAWS, queue: str, count: int) -> list[str]:
    """Running jobs, put straight into the simulation (seeding through the API would be throttled)."""
    ids = []
    for index in range(count):
        job_id = aws.batch.submit_job(
            {
                "jobName": f"job-{index}",
                "jobQueue": queue,
                "jobDefinition": "work",
                "containerOverrides": {"environment": [{"name": "INPUT", "value": f"s3://in/{index}"}]},
            }
        )["jobId"]
        aws.batch.set_status(job_id, "RUNNING")
        aws.batch.backdate(job_id, 60)  # submitted a while ago: past ListJobs' lag
        ids.append(job_id)
    return ids


def _pace(aws: SimulatedAWS, folder: Path, limit: float) -> None:
    """The simulated limit, and jobguard's own pacing under it (its defaults, 48 burst 50, are for AWS's 50)."""
    aws.rate = aws.burst = limit
    pace = f"rate: {limit * 0.96:g}\nburst: {limit:g}\n" if limit != 50 else ""
    # ListJobs lags 1 s here: the pass for jobs it was slow to show runs 5 s into the wait for the stops. At the
    # default 30 s, as long as ECS's stop time, it lands at the wait's end, and is counted when it falls after it.
    (folder / ".jobguard.yml").write_text(f"lock-timeout: 5\nlookup-window: 5s\n{pace}")


def _start(env: dict[str, str], cwd: str) -> float:
    """Seconds for a Python process that imports boto3 and makes one call, the least any tool's start costs."""
    command = [sys.executable, "-c", "import boto3; boto3.client('sts').get_caller_identity()"]
    times = []
    for _ in range(3):  # the least of three: the start, not the machine's other work
        started = time.monotonic()
        subprocess.run(command, env=env, cwd=cwd, check=True)
        times.append(time.monotonic() - started)
    return min(times)


def measure(
    count: int, latency: float, limits: tuple[float, float], loop_sample: int, work: Path, timing: BatchTiming
) -> list[dict[str, object]]:
    """One size at one latency: jobguard's drain and restore, then the loop's; `limits`: drain's and restore's."""
    with SimulatedAWS(timing) as aws:
        aws.latency = latency
        seed = Seeder(aws)
        seed.queue("bench")
        seed.queue("loop")
        seed.definition("work")
        env = {**os.environ, **aws.env()}
        folder = Path(tempfile.mkdtemp(dir=work))
        _pace(aws, folder, limits[0])
        start = _start(env, str(folder))
        store = f"file://{folder}/manifests"
        jobs = _seed(aws, "bench", count)
        stops = Stops()
        _watch_stops(aws, jobs, stops)
        before = sum(aws.throttled.values())
        drain = _process("jobguard", ["drain", "--store", store, "--queue", "bench", "--deploy-id", "bench"], env, str(folder))
        aws.after = None
        drain_429 = sum(aws.throttled.values()) - before
        seed.definition("work")  # the deploy
        _pace(aws, folder, limits[1])
        before = sum(aws.throttled.values())
        restore = _process("jobguard", ["restore", "--store", store, "--deploy-id", "bench"], env, str(folder))
        restore_429 = sum(aws.throttled.values()) - before
        terminated = sum(aws.batch.jobs[j].terminated for j in jobs)
        with aws.batch.lock:
            marks = [mark_of(aws.batch.detail(j)) for j in list(aws.batch.jobs.values()) if j.index is None]
        replaced = [m.original_id for m in marks if m]
        lost, doubled = count - len(set(replaced)), len(replaced) - len(set(replaced))
        assert drain.code == restore.code == 0 and terminated == count, (drain, restore, terminated)
        drain = replace(drain, seconds=drain.seconds - stops.wait)  # jobguard's own time, without Batch's stop time
        sample = min(count, loop_sample)
        _seed(aws, "loop", sample)
        saved = str(folder / "loop.json")
        _pace(aws, folder, limits[0])
        loop_drain = _process("bench.loop", ["drain", "loop", saved], env, str(folder))  # the loop never waits for the stops
        _pace(aws, folder, limits[1])
        loop_restore = _process("bench.loop", ["restore", "loop", saved], env, str(folder))
        scale = count / sample
    floors = {
        # a chain of round trips, each needing the answer before it (ListJobs pages, then DescribeJobs, then
        # TerminateJobs), and every describing and stopping call at the limit (docs/benchmarks.md)
        "drain": (math.ceil(count / 1000) + 2) * latency + (math.ceil(count / 100) + math.ceil(count / 50)) / limits[0],
        "restore": count / limits[1],
    }
    rows = []
    for name, limit, measured, loop, throttled, waited in (
        ("drain", limits[0], drain, loop_drain, drain_429, stops.wait),
        ("restore", limits[1], restore, loop_restore, restore_429, 0.0),
    ):
        loop_seconds = loop.seconds * scale
        rows.append(
            {
                "N": count,
                "limit": limit,
                "latency_ms": int(latency * 1000),
                "op": name,
                "seconds": measured.seconds,
                "stop_wait": waited,
                "floor": floors[name],
                "floor_ratio": measured.seconds / floors[name],
                "start": start,
                "started_ratio": measured.seconds / (floors[name] + start),
                "loop_seconds": loop_seconds,
                "loop_ratio": loop_seconds / measured.seconds,
                "loop_sample": sample,
                "peak_rss_mb": measured.peak_rss_mb,
                "store_bytes_per_job": measured.store_bytes / count,
                "load": measured.load,
                "throttled": throttled,
                "lost": lost,
                "doubled": doubled,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="300,2000,10000")
    parser.add_argument("--latencies", default="0.05,0.1")
    parser.add_argument("--limit", type=float, default=50.0, help="calls/s per Batch action (AWS: 50)")
    parser.add_argument("--loop-sample", type=int, default=1000)
    parser.add_argument("--stop-seconds", type=float, default=30.0, help="how long a terminated running job runs on (ECS: 30 s)")
    parser.add_argument("--list-lag", type=float, default=1.0, help="seconds before ListJobs shows a new job")
    parser.add_argument("--restore-limits", default="", help="N=RATE,...: the simulated limit for the restores of N jobs")
    args = parser.parse_args()
    restore_limits = {int(n): float(rate) for n, _, rate in (pair.partition("=") for pair in args.restore_limits.split(",") if pair)}
    timing = BatchTiming(stop_seconds=args.stop_seconds, cancel_seconds=min(1.0, args.stop_seconds), list_lag_seconds=args.list_lag)
    machine = f"{platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(
        f"machine: {machine}; limit {args.limit:g} calls/s per action; stop {args.stop_seconds:g} s, list lag {args.list_lag:g} s",
        flush=True,
    )
    print(
        "| N | limit/s | latency | op | jobguard s | floor s | ÷ floor | start s | ÷ floor+start | stop wait s | loop s | loop ÷ jobguard "
        "| peak RSS MB | store B/job | load | 429s | lost | doubled |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for package in ("jobguard", "bench"):  # as pip compiles an installed package: no process timed compiles source
        compileall.compile_dir(ROOT / package, quiet=1)
    with tempfile.TemporaryDirectory() as work:
        for latency in (float(x) for x in args.latencies.split(",")):
            for count in (int(x) for x in args.sizes.split(",")):
                limits = (args.limit, restore_limits.get(count, args.limit))
                for row in measure(count, latency, limits, args.loop_sample, Path(work), timing):
                    sampled = "" if row["loop_sample"] == row["N"] else f" (scaled from {row['loop_sample']})"
                    print(
                        f"| {row['N']} | {row['limit']:g} | {row['latency_ms']} ms | {row['op']} | {row['seconds']:.1f} | "
                        f"{row['floor']:.2f} | {row['floor_ratio']:.2f} | {row['start']:.2f} | {row['started_ratio']:.2f} | "
                        f"{row['stop_wait']:.1f} | "
                        f"{row['loop_seconds']:.1f}{sampled} | {row['loop_ratio']:.2f} | "
                        f"{row['peak_rss_mb']:.0f} | {row['store_bytes_per_job']:.0f} | {row['load']:.1f} | {row['throttled']} | "
                        f"{row['lost']} | {row['doubled']} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
