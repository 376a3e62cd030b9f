"""The deploy window: jobs the application submits while the deploy runs (issue 23).

A late job is in no drain pass. When the apply kills it (its compute environment replaced, its
queue deleted), restore's sweep finds it and resubmits it exactly once; a late job that failed on
its own, succeeded or still runs is never touched.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from jobguard.domain.manifest import LATE
from jobguard.sim import Seeder, SimulatedAWS

from .conftest import configure, load_manifest, overlapping, records, replacements_of


def _until(check: Any, bound: float = 10.0) -> None:
    """Poll `check` until it holds (bounded: the machine may be loaded)."""
    deadline = time.monotonic() + bound
    while not check():
        assert time.monotonic() < deadline, "timed out waiting for the simulated Batch"
        time.sleep(0.05)


def _replace_compute_environment(seed: Seeder, queue: str) -> None:
    """The apply replaces the queue's compute environment: a new one, the queue moved onto it, the old one deleted."""
    (described,) = seed.batch.describe_job_queues(jobQueues=[queue])["jobQueues"]
    old = described["computeEnvironmentOrder"][0]["computeEnvironment"]
    new = seed.compute_environment(f"{queue}-ce-{int(time.time() * 1000)}")
    seed.batch.update_job_queue(jobQueue=queue, computeEnvironmentOrder=[{"order": 1, "computeEnvironment": new}])
    seed.batch.update_compute_environment(computeEnvironment=old, state="DISABLED")
    seed.batch.delete_compute_environment(computeEnvironment=old)


def _status(aws: SimulatedAWS, job_id: str) -> str:
    with aws.batch.lock:
        aws.batch.tick()
        return aws.batch.jobs[job_id].status


def _world(seed: Seeder) -> str:
    seed.queue("work")
    seed.definition("proc")
    return seed.job(jobName="drained", jobQueue="work", jobDefinition="proc")


def _late(seed: Seeder, name: str, status: str) -> str:
    return seed.job(status=status, age=0, jobName=name, jobQueue="work", jobDefinition="proc")


def test_a_late_job_the_apply_kills_is_resubmitted_once(aws: SimulatedAWS, seed: Seeder, store: str, run) -> None:
    drained = _world(seed)
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    running = _late(seed, "late-running", "RUNNING")
    queued = _late(seed, "late-queued", "RUNNABLE")
    done = _late(seed, "late-done", "SUCCEEDED")
    own = _late(seed, "late-own", "RUNNING")
    aws.batch.finish(own, "FAILED", exit_code=3)
    _replace_compute_environment(seed, "work")
    _until(lambda: _status(aws, running) == "FAILED")
    assert aws.batch.detail(aws.batch.jobs[running])["statusReason"].startswith("Host EC2 (instance i-")
    assert _status(aws, queued) == "RUNNABLE"  # queued jobs stay
    time.sleep(aws.batch.timing.list_lag_seconds)

    restored = run("restore", "--store", store, "--deploy-id", "d1")
    assert restored.code == 0, restored.err
    assert {k: len(v) for k, v in replacements_of(aws).items()} == {drained: 1, running: 1}
    assert not overlapping(aws)
    late = records(store, seed, "d1")[running]
    assert late["reason"].startswith(f"{LATE}; killed by the deploy: its host was taken away (Host EC2 (instance i-")
    assert late["outcome"] == "resubmitted" and late["status_at_drain"] == "FAILED"
    assert set(records(store, seed, "d1")) == {drained, running}  # the others are counted, never touched
    window = load_manifest(store, seed, "d1")["window"]
    assert window["found"] == {"killed": 1, "own": 1, "succeeded": 1, "active": 1}
    assert "late jobs: 1 killed by the deploy, 1 failed on their own, 1 succeeded, 1 still active" in restored.out
    for job_id, why in ((queued, "still RUNNABLE"), (done, "succeeded"), (own, "exit code 3")):
        assert f"[{job_id}]: {why}" in restored.out

    submitted = aws.calls["batch:SubmitJob"]
    again = run("restore", "--store", store, "--deploy-id", "d1")
    assert again.code == 0, again.err
    assert aws.calls["batch:SubmitJob"] == submitted
    assert aws.calls["batch:ListJobs"] and "late jobs" not in again.out  # swept once


def test_a_quiet_window_is_swept_and_closed(aws: SimulatedAWS, seed: Seeder, store: str, run) -> None:
    _world(seed)
    drained = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1")
    assert "deploy window open since" in drained.out and "restore sweeps these queues" in drained.out
    restored = run("restore", "--store", store, "--deploy-id", "d1")
    assert restored.code == 0, restored.err
    assert "no job was submitted to its queues meanwhile" in restored.out
    assert "swept" in load_manifest(store, seed, "d1")["window"]
    assert run("status", "--store", store).out.startswith("no deploys")  # nothing left open


@pytest.mark.parametrize("action", ["app-retries", "abandon"])
def test_a_late_job_the_app_retries_is_left_to_it(aws: SimulatedAWS, seed: Seeder, workdir: Any, run, action: str) -> None:
    configure(workdir, f"policies:\n  - action: {action}\n    job-name: 'late-*'\n")
    _world(seed)
    assert run("drain", "--queue", "work", "--deploy-id", "d1").code == 0
    running = _late(seed, "late-running", "RUNNING")
    _replace_compute_environment(seed, "work")
    _until(lambda: _status(aws, running) == "FAILED")
    time.sleep(aws.batch.timing.list_lag_seconds)
    restored = run("restore", "--deploy-id", "d1")
    assert restored.code == 0, restored.err
    assert running not in replacements_of(aws)
    assert f"policy {action}" in restored.out
