"""Benchmark: jobguard's drain and restore against the AWS rate limit and the hand-written loop.

moto's server runs on loopback behind jobguard's simulation layer, which adds a fixed latency to
every call and throttles each Batch action with a token bucket (HTTP 429 TooManyRequestsException,
as AWS answers). jobguard and the loop run as separate processes, measured in the same run.

  python -m bench.run [--sizes 300,2000,10000] [--latencies 0.05,0.1] [--limit 50] [--loop-sample 1000]

The loop is measured on min(N, --loop-sample) jobs and scaled to N (it is linear: one call after
another); the table says so. Ratios are the figures to read: timings on shared machines are noisy.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from jobguard.simulated_aws import Seeder, SimulatedAWS

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Timing:
    seconds: float
    peak_rss_mb: float
    code: int


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
    peak_kb = int(peak.read_text() or 0)
    peak.unlink()
    return Timing(seconds, peak_kb / 1024, process.returncode)


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
        ids.append(job_id)
    return ids


def measure(count: int, latency: float, limit: float, loop_sample: int, work: Path) -> list[dict[str, object]]:
    """One size at one latency: jobguard's drain and restore, then the loop's."""
    with SimulatedAWS(latency=latency, rate=limit, burst=limit) as aws:
        seed = Seeder(aws)
        seed.queue("bench")
        seed.queue("loop")
        seed.definition("work")
        env = {**os.environ, **aws.env()}
        folder = Path(tempfile.mkdtemp(dir=work))
        (folder / ".jobguard.yml").write_text("lock-timeout: 5\n")
        store = f"file://{folder}/manifests"
        jobs = _seed(aws, "bench", count)
        before = sum(aws.throttled.values())
        drain = _process("jobguard", ["drain", "--store", store, "--queue", "bench", "--deploy-id", "bench"], env, str(folder))
        drain_429 = sum(aws.throttled.values()) - before
        seed.definition("work")  # the deploy
        before = sum(aws.throttled.values())
        restore = _process("jobguard", ["restore", "--store", store, "--deploy-id", "bench"], env, str(folder))
        restore_429 = sum(aws.throttled.values()) - before
        terminated = sum(aws.batch.jobs[j].terminated for j in jobs)
        originals = [(j.request.get("tags") or {}).get("jobguard:original-job-id") for j in aws.batch.jobs.values() if j.index is None]
        replaced = [o for o in originals if o]
        lost, doubled = count - len(set(replaced)), len(replaced) - len(set(replaced))
        assert drain.code == restore.code == 0 and terminated == count, (drain, restore, terminated)
        sample = min(count, loop_sample)
        _seed(aws, "loop", sample)
        saved = str(folder / "loop.json")
        loop_drain = _process("bench.loop", ["drain", "loop", saved], env, str(folder))
        loop_restore = _process("bench.loop", ["restore", "loop", saved], env, str(folder))
        scale = count / sample
    floor = count / limit
    rows = []
    for name, timing, loop, throttled in (("drain", drain, loop_drain, drain_429), ("restore", restore, loop_restore, restore_429)):
        loop_seconds = loop.seconds * scale
        rows.append(
            {
                "N": count,
                "latency_ms": int(latency * 1000),
                "op": name,
                "seconds": timing.seconds,
                "floor_ratio": timing.seconds / floor,
                "loop_seconds": loop_seconds,
                "loop_ratio": loop_seconds / timing.seconds,
                "loop_sample": sample,
                "peak_rss_mb": timing.peak_rss_mb,
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
    args = parser.parse_args()
    machine = f"{platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(f"machine: {machine}; limit {args.limit:g} calls/s per action", flush=True)
    print("| N | latency | op | jobguard s | ÷ N/limit | loop s | loop ÷ jobguard | peak RSS MB | 429s | lost | doubled |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as work:
        for latency in (float(x) for x in args.latencies.split(",")):
            for count in (int(x) for x in args.sizes.split(",")):
                for row in measure(count, latency, args.limit, args.loop_sample, Path(work)):
                    sampled = "" if row["loop_sample"] == row["N"] else f" (scaled from {row['loop_sample']})"
                    print(
                        f"| {row['N']} | {row['latency_ms']} ms | {row['op']} | {row['seconds']:.1f} | {row['floor_ratio']:.2f} | "
                        f"{row['loop_seconds']:.1f}{sampled} | {row['loop_ratio']:.2f} | {row['peak_rss_mb']:.0f} | {row['throttled']} | "
                        f"{row['lost']} | {row['doubled']} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
