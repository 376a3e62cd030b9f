"""Whatever fails, no job is lost and none runs twice: throttling, server errors, lost replies,
a failing store, and a process killed (kill -9) after every single AWS call."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from jobguard.simulated_aws import Seeder, SimulatedAWS

from .conftest import create_table, jobs_by_original, load_manifest, record_faults, run_process


def _world(seed: Seeder, jobs: int = 3) -> list[str]:
    seed.queue("work")
    seed.definition("proc")
    first = seed.job(jobName="j0", jobQueue="work", jobDefinition="proc")
    rest = [
        seed.job(status="PENDING", jobName=f"j{i}", jobQueue="work", jobDefinition="proc", dependsOn=[{"jobId": first}])
        for i in range(1, jobs)
    ]
    return [first, *rest]


def _assert_exactly_once(aws: SimulatedAWS, jobs: list[str], runs: int = 1, kills: int = 0) -> None:
    """Every job replaced exactly once; the figures go to the fault report."""
    replacements = jobs_by_original(aws)
    counts = {j: len(replacements.get(j, [])) for j in jobs}
    record_faults(
        runs=runs,
        faults=sum(aws.faults.values()) + kills,
        jobs=len(jobs),
        lost=sum(c == 0 for c in counts.values()),
        doubled=sum(c > 1 for c in counts.values()),
    )
    assert counts == dict.fromkeys(jobs, 1)


@pytest.mark.parametrize("share", [2, 3])
def test_throttling_is_absorbed(seed: Seeder, store: str, run, aws: SimulatedAWS, share: int) -> None:
    jobs = _world(seed, jobs=9)
    aws.fault = lambda action, n: (429, "TooManyRequestsException") if action.startswith("batch:") and n % share == 0 else None
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    assert run("restore", "--store", store).code == 0
    assert aws.faults["batch:SubmitJob"] >= 9 // share and aws.faults["batch:TerminateJob"] >= 9 // share
    _assert_exactly_once(aws, jobs)


@pytest.mark.parametrize("fault", [(500, "ServerException"), (503, "ServiceUnavailable"), "drop", "lost-reply"])
def test_server_errors_and_broken_connections_on_every_batch_action(seed: Seeder, store: str, run, aws: SimulatedAWS, fault) -> None:
    jobs = _world(seed)
    aws.fault = lambda action, n: fault if action.startswith("batch:") and n % 2 == 1 else None
    drain = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1")
    assert drain.code == 0, drain.err
    restore = run("restore", "--store", store)
    assert restore.code == 0, restore.err
    assert {action for action in aws.faults} >= {"batch:SubmitJob", "batch:TerminateJob", "batch:DescribeJobs", "batch:ListJobs"}
    _assert_exactly_once(aws, jobs)


def test_retries_are_bounded_and_failure_is_per_job(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    jobs = _world(seed)
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    stubborn = jobs[0]
    aws.fault = lambda action, n: (500, "ServerException") if action == "batch:SubmitJob" and n > 3 else None
    result = run("restore", "--store", store)
    assert result.code == 1
    records = {r["job_id"]: r for r in load_manifest(store, seed, "d1")["jobs"]}
    assert records[stubborn]["outcome"] == "failed" and "ServerException" in records[stubborn]["error"]
    assert aws.faults["batch:SubmitJob"] <= 10 * 3  # bounded: 10 attempts per job at most
    aws.fault = None
    assert run("restore", "--store", store).code == 0
    _assert_exactly_once(aws, jobs)


def test_invalid_request_is_not_retried(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    jobs = _world(seed, jobs=1)
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    seed.batch.update_job_queue(jobQueue="work", state="DISABLED")
    result = run("restore", "--store", store)
    assert result.code == 1 and "queue work is DISABLED" in result.err
    assert aws.calls["batch:SubmitJob"] == 1  # the seeded job only
    seed.batch.update_job_queue(jobQueue="work", state="ENABLED")
    assert run("restore", "--store", store).code == 0
    _assert_exactly_once(aws, jobs)


@pytest.mark.parametrize(
    ("kind", "write", "first_failing"),
    [
        ("s3", "s3:PUT", 5),  # the bucket, the lock, the empty manifest, the first page; then the store fails
        ("dynamodb", "dynamodb:TransactWriteItems", 4),  # the empty manifest, the first page (two transactions); then it fails
    ],
)
def test_store_failing_mid_drain_stops_terminating(
    seed: Seeder, run, aws: SimulatedAWS, kind: str, write: str, first_failing: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("jobguard.commands.drain.RECORD_PAGE", 100)
    if kind == "s3":
        seed.client("s3").create_bucket(Bucket="jobguard-manifests")
        store = "s3://jobguard-manifests/deploys"
    else:
        create_table(seed, "jobguard-manifests")
        store = "dynamodb://jobguard-manifests"
    seed.queue("work")
    seed.definition("proc")
    jobs = [seed.job(jobName=f"j{i}", jobQueue="work", jobDefinition="proc") for i in range(150)]
    aws.fault = lambda action, n: (500, "InternalError") if action == write and n >= first_failing else None
    result = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1")
    assert result.code == 1 and "cannot write manifest" in result.err
    terminated = {j for j in jobs if aws.batch.jobs[j].terminated}
    recorded = {r["job_id"] for r in load_manifest(store, seed, "d1")["jobs"]}
    assert terminated and terminated <= recorded  # no job terminated without a record
    assert len(terminated) == 100  # the second page was never terminated
    aws.fault = None
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    assert run("restore", "--store", store).code == 0
    _assert_exactly_once(aws, jobs)


def _kill_after(aws: SimulatedAWS, k: int) -> list[int]:
    """Arrange for the next started process to be killed after the k-th AWS call it makes."""
    pid: list[int] = []
    seen: list[int] = [0]

    def after(action: str, n: int) -> None:
        if not pid:
            return
        seen[0] += 1
        if seen[0] == k:
            os.kill(pid[0], signal.SIGKILL)

    aws.after = after
    return pid


@pytest.mark.parametrize("command", ["drain", "restore"])
def test_kill_9_after_every_call_then_rerun(seed: Seeder, store: str, run, aws: SimulatedAWS, command: str, workdir: Path) -> None:
    jobs = 5
    _world(seed, jobs=jobs)
    with open(workdir / ".jobguard.yml", "a") as config:
        config.write("max-resubmits: 1000\n")  # each round resubmits the previous round's replacements
    killed = 0
    k = 1
    while True:
        deploy = f"d{k}"
        if command == "restore":
            assert run("drain", "--store", store, "--queue", "work", "--deploy-id", deploy).code == 0
        pid = _kill_after(aws, k)
        process = (
            run_process(command, "--store", store, "--queue", "work", "--deploy-id", deploy)
            if command == "drain"
            else run_process(command, "--store", store, "--deploy-id", deploy)
        )
        pid.append(process.pid)
        _, err = process.communicate(timeout=60)
        aws.after = None
        if process.returncode != -signal.SIGKILL:
            assert process.returncode == 0, err
            break
        killed += 1
        # whatever instant it died at: every active job is untouched or recorded ...
        manifest = _manifest_or_empty(store, seed, deploy)
        recorded = {r["job_id"] for r in manifest["jobs"]}
        active = [j for j in _active_originals(aws) if aws.batch.jobs[j].terminated]
        assert set(active) <= recorded
        # ... and after a rerun and a restore, each is replaced exactly once
        if command == "drain":
            assert run("drain", "--store", store, "--queue", "work", "--deploy-id", deploy).code == 0
        assert run("restore", "--store", store, "--deploy-id", deploy).code == 0
        current = _active_originals(aws)
        _assert_exactly_once(aws, [j for j in current if aws.batch.jobs[j].terminated], runs=3 if command == "drain" else 2, kills=1)
        # the replacements are the work of the next round
        for job in list(aws.batch.jobs.values()):
            if job.terminated:
                job.request.setdefault("tags", {})["jobguard:original-job-id"] = "done"
                job.terminated = False
        k += 1
    # at least once per job plus the lookups before the first TerminateJob / SubmitJob
    assert killed > jobs, f"the sweep killed the process only {killed} times"


def _active_originals(aws: SimulatedAWS) -> list[str]:
    return [
        j.job_id
        for j in aws.batch.jobs.values()
        if j.index is None and (j.request.get("tags") or {}).get("jobguard:original-job-id") != "done"
    ]


def _manifest_or_empty(store: str, seed: Seeder, deploy: str) -> dict:
    try:
        return load_manifest(store, seed, deploy)
    except Exception:
        return {"jobs": []}
