"""Stopping in bulk: TerminateJobs, 50 job ids a call, read job by job; per-job errors retried where
Batch says so and reported per job otherwise; TerminateJob per job where the endpoint does not know
TerminateJobs (moto, an older API: found out once a run); IAM sees TerminateJob on each job."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from jobguard.adapters.batch import PROBE_PAGES, STOP_PAGE
from jobguard.sim import Seeder, SimulatedAWS
from jobguard.sim.batch import BULK_STOP, ClientException

from .conftest import configure, overlapping, records, replacements_of, run_process


def _jobs(seed: Seeder, count: int, queue: str = "work", status: str = "RUNNING") -> list[str]:
    return [seed.job(status=status, jobName=f"{queue}-{i}", jobQueue=queue, jobDefinition="proc") for i in range(count)]


def _world(seed: Seeder, *queues: str) -> None:
    seed.definition("proc")
    for queue in queues or ("work",):
        seed.queue(queue)


def _drain(run: Any, store: str, *queues: str, deploy: str = "d1") -> Any:
    flags = [flag for queue in queues or ("work",) for flag in ("--queue", queue)]
    return run("drain", "--store", store, *flags, "--deploy-id", deploy)


def _outcomes(store: str, seed: Seeder, deploy: str = "d1") -> dict[str, str]:
    return {job_id: record["outcome"] for job_id, record in records(store, seed, deploy).items()}


def test_jobs_are_stopped_50_a_call_and_authorised_as_terminate_job_on_each(seed: Seeder, run, aws: SimulatedAWS, workdir: Path) -> None:
    _world(seed, "work", "other")
    jobs = _jobs(seed, 120) + _jobs(seed, 3, "other")
    store = f"file://{workdir}/m"
    drained = _drain(run, store, "work", "other")
    assert drained.code == 0, drained.err
    assert set(_outcomes(store, seed).values()) == {"terminated"} and len(_outcomes(store, seed)) == len(jobs)
    assert aws.calls["batch:TerminateJobs"] == 3 + 1  # 50 + 50 + 20 on work, 3 on other: a call holds one queue's jobs
    assert aws.calls["batch:TerminateJob"] == aws.calls["batch:CancelJobs"] == aws.calls["batch:CancelJob"] == 0
    stops = [c for c in aws.recorded if "Terminate" in c.action or "Cancel" in c.action]
    assert {c.action for c in stops} == {"batch:TerminateJob"}  # there is no IAM action batch:TerminateJobs
    assert sorted(c.resource.rsplit("/", 1)[-1] for c in stops) == sorted(jobs)


@pytest.mark.slow
def test_an_endpoint_without_terminate_jobs_is_found_out_once_and_gets_one_call_per_job(
    seed: Seeder, run, aws: SimulatedAWS, workdir: Path
) -> None:
    aws.bulk_stop = False  # as moto: TerminateJobs answers HTTP 500 with an HTML page
    _world(seed, "work", "other")
    jobs = _jobs(seed, (PROBE_PAGES + 2) * STOP_PAGE) + _jobs(seed, 2, "other")
    store = f"file://{workdir}/m"
    drained = _drain(run, store, "work", "other")
    assert drained.code == 0, drained.err
    assert set(_outcomes(store, seed).values()) == {"terminated"}
    assert aws.calls["batch:TerminateJobs"] == PROBE_PAGES  # the first wave, not retried, not asked again for the other pages
    assert aws.calls["batch:TerminateJob"] == len(jobs)


@pytest.mark.slow
def test_per_job_errors_are_retried_where_batch_says_so_and_reported_per_job_otherwise(
    seed: Seeder, run, aws: SimulatedAWS, workdir: Path
) -> None:
    configure(workdir, "stop-timeout: 2")
    _world(seed)
    throttled, denied, broken, *fine = _jobs(seed, 6)
    answers = {throttled: 0}

    def refuse(job_id: str) -> tuple[str, str] | None:
        if job_id == throttled and answers[throttled] < 2:
            answers[throttled] += 1
            return ("ThrottlingException", "Rate exceeded")
        if job_id == denied:
            return ("AccessDenied", "not authorized to perform batch:TerminateJob on this job")
        if job_id == broken:
            return ("ServerException", "internal error")
        return None

    aws.refuse_stop = refuse
    store = f"file://{workdir}/m"
    drained = _drain(run, store)
    assert drained.code == 1
    outcomes = _outcomes(store, seed)
    assert outcomes[throttled] == "terminated" and all(outcomes[j] == "terminated" for j in fine)
    assert outcomes[denied] == "failed" and aws.batch.jobs[denied].status == "RUNNING"
    assert f"[{denied}]: TerminateJobs refused it: AccessDenied: not authorized" in drained.err and "left running" in drained.err
    # A ServerException may have been carried out: kept `terminating`, and the wait for the stops tells it still runs.
    assert outcomes[broken] == "terminating" and f"[{broken}] on work: still running 2 s after" in drained.err
    assert aws.calls["batch:TerminateJobs"] >= 3 and aws.calls["batch:TerminateJob"] == 0  # only the refused ids sent again
    aws.refuse_stop = None
    aws.batch.finish(broken, "FAILED")
    assert run("restore", "--store", store, "--deploy-id", "d1").code == 0
    assert {j: len(v) for j, v in replacements_of(aws).items()} == {j: 1 for j in (throttled, broken, *fine)}
    assert overlapping(aws) == []


def test_a_refused_stop_is_recorded_left_running_when_the_next_page_stops_the_drain(
    seed: Seeder, run, aws: SimulatedAWS, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first page's TerminateJobs go out on a worker thread while the second page is recorded; that page
    # has a dependent on a queue jobguard may not act on, which stops the drain (exit 2) before the answers
    # of the first page are taken. Batch refused one of its jobs: that answer must still be saved.
    monkeypatch.setattr("jobguard.commands.drain.RECORD_PAGE", 2)
    _world(seed, "work", "elsewhere")
    # ListJobs answers newest first: `later`, the oldest, is alone on the second page
    denied, stopped, later = (seed.job(age=age, jobName=f"j{age}", jobQueue="work", jobDefinition="proc") for age in (100, 200, 300))
    outsider = seed.job(status="PENDING", jobName="outsider", jobQueue="elsewhere", jobDefinition="proc", dependsOn=[{"jobId": later}])
    aws.refuse_stop = lambda job_id: (
        ("AccessDenied", "not authorized to perform batch:TerminateJob on this job") if job_id == denied else None
    )
    store = f"file://{workdir}/m"
    drained = _drain(run, store)
    assert drained.code == 2 and f"job {outsider} on queue elsewhere depends on job {later}" in drained.err, drained.err
    assert _outcomes(store, seed) == {denied: "failed", stopped: "terminating"}, drained.out
    assert f"[{denied}]: TerminateJobs refused it: AccessDenied" in drained.err and "left running" in drained.err
    aws.refuse_stop = None
    assert run("restore", "--store", store, "--deploy-id", "d1").code == 0  # the refused job is left running, not stopped again
    assert aws.batch.jobs[denied].status == "RUNNING" and aws.batch.jobs[later].status == "RUNNING"
    assert {j: len(v) for j, v in replacements_of(aws).items()} == {stopped: 1}
    assert overlapping(aws) == []


def test_a_call_refused_whole_is_sent_again_one_job_at_a_time_and_bulk_stays_on(
    seed: Seeder, run, aws: SimulatedAWS, workdir: Path
) -> None:
    _world(seed)
    _jobs(seed, 4)
    aws.fault = lambda action, n: (400, "ClientException") if action == "batch:TerminateJobs" and n == 1 else None
    store = f"file://{workdir}/m"
    assert _drain(run, store).code == 0
    assert set(_outcomes(store, seed).values()) == {"terminated"} and aws.calls["batch:TerminateJob"] == 4
    aws.fault = None
    _jobs(seed, 2, status="RUNNABLE")
    assert _drain(run, store).code == 0  # the workflow re-run: the same deploy
    assert aws.calls["batch:TerminateJobs"] == 2 and aws.calls["batch:TerminateJob"] == 4  # a refusal is not an unknown operation


@pytest.mark.slow
def test_a_drain_killed_at_its_second_page_left_every_job_marked_and_restore_brings_each_back_once(
    seed: Seeder, run, aws: SimulatedAWS, workdir: Path
) -> None:
    configure(workdir, "workers: 1")  # one page at a time: the kill falls between two of them
    _world(seed)
    jobs = _jobs(seed, BULK_STOP + 5)
    pid: list[int] = []

    def kill(action: str, count: int) -> str | None:
        if action == "batch:TerminateJobs" and count == 2 and pid:
            os.kill(pid[0], signal.SIGKILL)
            return "drop"  # never carried out
        return None

    aws.fault = kill
    store = f"file://{workdir}/m"
    process = run_process("drain", "--store", store, "--queue", "work", "--deploy-id", "d1")
    pid.append(process.pid)
    process.communicate(timeout=120)
    aws.fault = None
    assert process.returncode == -signal.SIGKILL
    assert set(_outcomes(store, seed).values()) == {"terminating"}  # every one marked before its page was sent
    assert sum(aws.batch.stopping(j) for j in jobs) == BULK_STOP  # the first page was sent; the second never was
    restored = run("restore", "--store", store, "--deploy-id", "d1")
    assert restored.code == 0, restored.err
    assert {j: len(v) for j, v in replacements_of(aws).items()} == dict.fromkeys(jobs, 1)
    assert overlapping(aws) == []


# -- the simulation's TerminateJobs / CancelJobs, as Batch documents them -----------------------------


def test_the_simulated_bulk_calls_behave_as_batch_documents_them(seed: Seeder, aws: SimulatedAWS) -> None:
    _world(seed)
    running, queued = _jobs(seed, 1) + _jobs(seed, 1, status="RUNNABLE")
    answer = seed.batch.cancel_jobs(jobs=[running, queued, "no-such-job"], reason="r")
    assert sorted(answer["successful"]) == sorted([running, queued, "no-such-job"]) and answer["errors"] == []  # unknown: processed
    assert not aws.batch.stopping(running) and aws.batch.stopping(queued)  # CancelJobs leaves a started job running
    seed.batch.terminate_jobs(jobs=[running], reason="r")
    assert aws.batch.stopping(running)
    with pytest.raises(ClientException):
        aws.batch.terminate_jobs({"jobs": [running] * (BULK_STOP + 1), "reason": "r"})
    aws.refuse_stop = lambda job_id: ("AccessDenied", "no")
    assert seed.batch.terminate_jobs(jobs=[queued], reason="r")["errors"] == [{"job": queued, "code": "AccessDenied", "message": "no"}]


@pytest.mark.parametrize("bulk", [True, False], ids=["TerminateJobs", "TerminateJob"])
def test_a_stop_whose_every_reply_is_lost_is_still_waited_for_and_its_job_comes_back_once(
    seed: Seeder, run, aws: SimulatedAWS, workdir: Path, bulk: bool
) -> None:
    """Batch carried the call out, and no answer arrived on any attempt: the jobs may have been
    stopped, so they stay `terminating` and the wait tells (a job recorded `failed` and "left
    running" that had in fact stopped would never come back)."""
    configure(workdir, "retry:\n  attempts: 2\n")
    aws.bulk_stop = bulk
    _world(seed)
    jobs = _jobs(seed, 3)
    lost = "batch:TerminateJobs" if bulk else "batch:TerminateJob"  # without bulk, moto's answer to TerminateJobs comes through
    aws.fault = lambda action, n: "lost-reply" if action == lost else None
    store = f"file://{workdir}/m"
    drained = _drain(run, store)
    assert drained.code == 0, drained.err
    assert set(_outcomes(store, seed).values()) == {"terminated"}
    aws.fault = None
    assert run("restore", "--store", store, "--deploy-id", "d1").code == 0
    assert {j: len(v) for j, v in replacements_of(aws).items()} == dict.fromkeys(jobs, 1)
    assert overlapping(aws) == []
