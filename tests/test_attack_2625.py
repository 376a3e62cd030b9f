"""Attacks on engines (issue 26) and precision + bulk stop (issue 25): the cases that found defects,
and the hostile cases that held, kept so they stay held."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from jobguard.domain.engines import BUILTIN, classify
from jobguard.domain.host_retry import retried_by_batch
from jobguard.sim import Seeder, SimulatedAWS

from .conftest import overlapping, records, replacements_of

ACCOUNT = "arn:aws:batch:us-east-1:123456789012"


def _plan(path: Path, *changes: dict[str, Any]) -> str:
    path.write_text(json.dumps({"format_version": "1.2", "resource_changes": list(changes)}))
    return str(path)


def _ce_replaced(name: str) -> dict[str, Any]:
    before = {"compute_environment_name": name, "arn": f"{ACCOUNT}:compute-environment/{name}", "type": "MANAGED"}
    return {
        "address": f"aws_batch_compute_environment.{name}",
        "type": "aws_batch_compute_environment",
        "change": {"actions": ["create", "delete"], "before": before, "after": {**before, "arn": None}},
    }


def _queue_deleted(name: str) -> dict[str, Any]:
    return {
        "address": f"aws_batch_job_queue.{name}",
        "type": "aws_batch_job_queue",
        "change": {"actions": ["delete"], "before": {"name": name}, "after": None},
    }


def test_a_compute_environment_of_two_queues_replaced_and_one_queue_deleted(
    seed: Seeder, run: Any, aws: SimulatedAWS, workdir: Path
) -> None:
    """The deleted queue loses every job; the kept one only its started jobs; queued jobs of the kept one stay."""
    seed.definition("proc")
    shared = seed.compute_environment("shared-ce")
    seed.queue("gone", compute_environment=shared)
    seed.queue("kept", compute_environment=shared)
    jobs = {
        (queue, status): seed.job(status=status, jobName=f"{queue}-{status}", jobQueue=queue, jobDefinition="proc")
        for queue in ("gone", "kept")
        for status in ("RUNNING", "RUNNABLE")
    }
    plan = _plan(workdir / "plan.json", _ce_replaced("shared-ce"), _queue_deleted("gone"))
    store = f"file://{workdir}/m"
    result = run("drain", "--plan", plan, "--queue", "gone", "--queue", "kept", "--store", store, "--deploy-id", "d1")
    assert result.code == 0, result.err
    assert set(records(store, seed, "d1")) == {jobs["gone", "RUNNING"], jobs["gone", "RUNNABLE"], jobs["kept", "RUNNING"]}
    assert "queue kept: 1 queued jobs left queued" in result.out and "queue gone: " not in result.out.split("left queued")[0][-40:]
    assert aws.batch.jobs[jobs["kept", "RUNNABLE"]].status == "RUNNABLE"


def _stopped_jobs(seed: Seeder, count: int) -> list[str]:
    seed.definition("proc")
    seed.queue("work")
    return [seed.job(status="RUNNING", jobName=f"work-{i}", jobQueue="work", jobDefinition="proc") for i in range(count)]


@pytest.mark.parametrize("action", ["batch:TerminateJobs", "batch:TerminateJob"])
def test_a_stop_carried_out_then_throttled_to_the_bound_is_not_taken_for_refused(
    seed: Seeder, run: Any, aws: SimulatedAWS, workdir: Path, action: str
) -> None:
    """The first call is carried out but its reply is lost; every retry is throttled until the bound.
    The last error (throttling) proves only that the LAST try was refused: the jobs were stopped. Before,
    they were recorded `failed` ('left running'), never resubmitted: lost."""
    aws.bulk_stop = action == "batch:TerminateJobs"
    jobs = _stopped_jobs(seed, 3)

    def asked(job_id: str) -> bool:
        with aws.batch.lock:
            return bool(aws.batch.jobs[job_id].stop_kind or aws.batch.jobs[job_id].stop_requested)

    def fault(called: str, n: int) -> Any:
        # Carried out (reply lost) until Batch has been asked to stop every job, throttled from then on.
        # Not by call count: one job's retry may come before another job's first call (they run in threads).
        if called != action:
            return None
        return "lost-reply" if not all(asked(j) for j in jobs) else (429, "TooManyRequestsException")

    aws.fault = fault
    store = f"file://{workdir}/m"
    drained = run("drain", "--queue", "work", "--store", store, "--deploy-id", "d1")
    aws.fault = None
    outcomes = {j: r["outcome"] for j, r in records(store, seed, "d1").items()}
    assert all(asked(j) for j in jobs)  # Batch was asked: they stop
    assert set(outcomes.values()) == {"terminated"}, (outcomes, drained.err)
    assert run("restore", "--store", store, "--deploy-id", "d1").code == 0
    assert {j: len(v) for j, v in replacements_of(aws).items()} == dict.fromkeys(jobs, 1)
    assert overlapping(aws) == []


@pytest.mark.slow
def test_a_dependent_in_a_queue_the_plan_leaves_alone_comes_back_after_its_dependency(
    seed: Seeder, run: Any, aws: SimulatedAWS, workdir: Path
) -> None:
    """Precision: only the started job of the kept queue is at risk, but the job PENDING on it in another
    (configured, untouched) queue would fail with it: drained too, and restored after it, once each."""
    seed.definition("proc")
    seed.queue("science-queue", compute_environment=seed.compute_environment("science-queue-ce"))
    seed.queue("reports")
    running = seed.job(status="RUNNING", jobName="running", jobQueue="science-queue", jobDefinition="proc")
    queued = seed.job(status="RUNNABLE", jobName="queued", jobQueue="science-queue", jobDefinition="proc")
    report = seed.job(status="PENDING", jobName="report", jobQueue="reports", jobDefinition="proc", dependsOn=[{"jobId": running}])
    plan = _plan(workdir / "plan.json", _ce_replaced("science-queue-ce"))
    store = f"file://{workdir}/m"
    drained = run("drain", "--plan", plan, "--queue", "science-queue", "--queue", "reports", "--store", store, "--deploy-id", "d1")
    assert drained.code == 0, drained.err
    assert set(records(store, seed, "d1")) == {running, report}
    assert aws.batch.jobs[queued].status == "RUNNABLE"
    restored = run("restore", "--store", store, "--deploy-id", "d1")
    assert restored.code == 0, restored.err
    replaced = replacements_of(aws)
    assert {j: len(v) for j, v in replaced.items()} == {running: 1, report: 1}
    (new_report,) = replaced[report]
    assert [d["jobId"] for d in seed.batch.describe_jobs(jobs=[new_report])["jobs"][0]["dependsOn"]] == replaced[running]
    assert overlapping(aws) == []


@pytest.mark.parametrize(("count", "calls"), [(49, 1), (50, 1), (51, 2), (101, 3)])
def test_page_boundaries_stop_each_job_once(seed: Seeder, run: Any, aws: SimulatedAWS, workdir: Path, count: int, calls: int) -> None:
    jobs = _stopped_jobs(seed, count)
    store = f"file://{workdir}/m"
    assert run("drain", "--queue", "work", "--store", store, "--deploy-id", "d1").code == 0
    assert aws.calls["batch:TerminateJobs"] == calls and aws.calls["batch:TerminateJob"] == 0
    stops = sorted(c.resource.rsplit("/", 1)[-1] for c in aws.recorded if c.action == "batch:TerminateJob")
    assert stops == sorted(jobs)  # each job in exactly one page
    assert set(records(store, seed, "d1")) == set(jobs)


@pytest.mark.parametrize("minutes", [7201, 10**12])
def test_an_update_timeout_batch_would_refuse_is_named_not_waited_for(workdir: Path, run: Any, seed: Seeder, minutes: int) -> None:
    """drain gives running jobs the update's timeout as their grace period: a plan saying 10**12 minutes
    held the pipeline until it was killed; Batch takes 1 to 7200 (UpdatePolicy)."""
    seed.definition("proc")
    seed.queue("etl-queue", compute_environment=seed.compute_environment("etl-ce"))
    seed.job(status="RUNNING", jobName="long", jobQueue="etl-queue", jobDefinition="proc")
    before = {"compute_environment_name": "etl-ce", "arn": f"{ACCOUNT}:compute-environment/etl-ce", "compute_resources": [{"type": "EC2"}]}
    after = {
        **before,
        "compute_resources": [{"type": "EC2", "instance_type": ["c5"]}],
        "update_policy": [{"job_execution_timeout_minutes": minutes}],
    }
    change = {"address": "aws_batch_compute_environment.etl", "type": "aws_batch_compute_environment"}
    plan = _plan(workdir / "plan.json", {**change, "change": {"actions": ["update"], "before": before, "after": after}})
    result = run("drain", "--plan", plan, "--queue", "etl-queue", "--store", f"file://{workdir}/m", "--deploy-id", "d1")
    assert result.code == 2, result.err
    assert f"update_policy[0].job_execution_timeout_minutes: expected a whole number of minutes from 1 to 7200, got {minutes}" in result.err


@pytest.mark.parametrize(
    "job",
    [
        {"jobName": "nf-report", "jobDefinition": f"{ACCOUNT}:job-definition/report:1"},
        {"jobName": "x", "jobDefinition": f"{ACCOUNT}:job-definition/report:1", "parameters": {"nf-token": "abc"}},
        {"jobName": "x", "jobDefinition": f"{ACCOUNT}:job-definition/nf-ubuntu:1"},
        {"jobName": "x", "jobDefinition": f"{ACCOUNT}:job-definition/metaflow_x:1", "parameters": {"flow": "a"}},
        {"jobName": "snakejob-a-b", "jobDefinition": f"{ACCOUNT}:job-definition/report:1"},
    ],
    ids=["named-nf", "nf-token-elsewhere", "nf-definition-without-token", "metaflow-definition-name", "snakejob-name-only"],
)
def test_half_an_engine_mark_is_an_ordinary_job(job: dict[str, Any]) -> None:
    """README: a built-in rule needs every fact in bold of its row."""
    assert classify(job, BUILTIN) is None


NEXTFLOW_SPOT_RETRY = {
    "attempts": 5,
    "evaluateOnExit": [{"action": "RETRY", "onStatusReason": "Host EC2*"}, {"action": "EXIT", "onReason": "*"}],
}


@pytest.mark.parametrize(
    ("strategy", "retried"),
    [
        ({"attempts": 3}, True),  # no rule: any failed attempt is retried while attempts are left
        (NEXTFLOW_SPOT_RETRY, True),  # aws.batch.maxSpotAttempts
        ({"attempts": 1}, False),
        ({"attempts": 3, "evaluateOnExit": [{"action": "EXIT", "onStatusReason": "*"}]}, False),
        ({"attempts": 3, "evaluateOnExit": [{"action": "RETRY", "onStatusReason": "Host EC2*", "onExitCode": "1"}]}, False),
        ({"attempts": 3, "evaluateOnExit": [{"action": "EXIT", "onStatusReason": "Essential*"}]}, True),  # about another failure
        (None, False),
    ],
)
def test_whether_batch_runs_a_job_again_when_its_host_goes(strategy: Any, retried: bool) -> None:
    job: dict[str, Any] = {"jobId": "j", "status": "RUNNING", **({"retryStrategy": strategy} if strategy else {})}
    assert retried_by_batch(job) is retried
    assert not retried_by_batch({**job, "attempts": [{}] * 4})  # its attempts used up
    assert not retried_by_batch({**job, "arrayProperties": {"size": 2}})


def test_where_only_instances_go_a_job_batch_retries_itself_is_left_running(
    seed: Seeder, run: Any, aws: SimulatedAWS, workdir: Path
) -> None:
    """A Nextflow task with maxSpotAttempts, or any job with attempts left: Batch runs it again (same id) on the
    new environment, so drain neither stops it (an engine retry spent for nothing) nor resubmits it; nor the job
    PENDING on it. Jobs without such a strategy are drained and come back once, as before."""
    from .engine_jobs import NEXTFLOW_TASK
    from .test_precision import _replace_compute_environment

    seed.definition("proc")
    seed.definition("retrying", retryStrategy={"attempts": 3})
    seed.batch.register_job_definition(**NEXTFLOW_TASK.definition)
    seed.queue("science-queue", compute_environment=seed.compute_environment("science-queue-ce"))

    def job(name: str, definition: str, **extra: Any) -> str:
        return seed.job(status="RUNNING", jobName=name, jobQueue="science-queue", jobDefinition=definition, **extra)

    plain = job("plain", "proc")
    retrying = job("retrying", "retrying")
    task = job(
        "task",
        NEXTFLOW_TASK.definition["jobDefinitionName"],
        **{k: v for k, v in NEXTFLOW_TASK.submit.items() if k != "jobDefinition" and k != "jobName"},
    )
    waiting = seed.job(status="PENDING", jobName="waiting", jobQueue="science-queue", jobDefinition="proc", dependsOn=[{"jobId": retrying}])
    plan = _plan(workdir / "plan.json", _ce_replaced("science-queue-ce"))
    store = f"file://{workdir}/m"
    drained = run("drain", "--plan", plan, "--queue", "science-queue", "--store", store, "--deploy-id", "d1")
    assert drained.code == 0, drained.err
    assert "queue science-queue: 2 started jobs left running: their retryStrategy has Batch run them again" in drained.out
    assert set(records(store, seed, "d1")) == {plain}
    assert not any(aws.batch.jobs[j].stop_requested or aws.batch.jobs[j].stop_kind for j in (retrying, task, waiting))
    _replace_compute_environment(seed, "science-queue")
    deadline = time.monotonic() + 10
    while aws.batch.jobs[retrying].status != "RUNNABLE" or aws.batch.jobs[task].status != "RUNNABLE":
        with aws.batch.lock:
            aws.batch.tick()
        assert time.monotonic() < deadline, "Batch never ran them again"
        time.sleep(0.05)
    restored = run("restore", "--store", store, "--deploy-id", "d1")
    assert restored.code == 0, restored.err
    assert {j: len(v) for j, v in replacements_of(aws).items()} == {plain: 1}
    assert aws.batch.jobs[waiting].status == "PENDING" and overlapping(aws) == []


def test_a_job_left_to_batch_that_batch_does_not_run_again_comes_back_once(
    seed: Seeder, run: Any, aws: SimulatedAWS, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The safety net of leaving such a job: should Batch not retry it after all, it ends FAILED with the
    host-terminated reason, and restore's sweep of the window resubmits it once (it is in no manifest)."""
    from .test_precision import _replace_compute_environment

    seed.definition("retrying", retryStrategy={"attempts": 3})
    seed.queue("science-queue", compute_environment=seed.compute_environment("science-queue-ce"))
    retrying = seed.job(status="RUNNING", jobName="retrying", jobQueue="science-queue", jobDefinition="retrying")
    plan = _plan(workdir / "plan.json", _ce_replaced("science-queue-ce"))
    store = f"file://{workdir}/m"
    assert run("drain", "--plan", plan, "--queue", "science-queue", "--store", store, "--deploy-id", "d1").code == 0
    assert records(store, seed, "d1") == {}
    monkeypatch.setattr(aws.batch, "_retried", lambda job: False)  # Batch did not run it again after all
    _replace_compute_environment(seed, "science-queue")
    deadline = time.monotonic() + 10
    while aws.batch.jobs[retrying].status != "FAILED":
        with aws.batch.lock:
            aws.batch.tick()
        assert time.monotonic() < deadline, "the simulated apply never took the job's host away"
        time.sleep(0.05)
    restored = run("restore", "--store", store, "--deploy-id", "d1")
    assert restored.code == 0, restored.err
    assert {j: len(v) for j, v in replacements_of(aws).items()} == {retrying: 1} and overlapping(aws) == []


def test_an_infrastructure_update_still_drains_jobs_batch_would_retry(seed: Seeder, run: Any, aws: SimulatedAWS, workdir: Path) -> None:
    """What an update that terminates jobs puts in their status reason (and whether Batch retries them) is not
    documented: there, a job with attempts left is drained as before."""
    seed.definition("retrying", retryStrategy={"attempts": 3})
    seed.queue("etl-queue")
    retrying = seed.job(status="RUNNING", jobName="retrying", jobQueue="etl-queue", jobDefinition="retrying")
    plan = str(Path(__file__).parent / "plans" / "ce-infrastructure-update.json")
    store = f"file://{workdir}/m"
    drained = run("drain", "--plan", plan, "--queue", "etl-queue", "--store", store, "--deploy-id", "d1")
    assert drained.code == 0, drained.err
    assert set(records(store, seed, "d1")) == {retrying} and "left running" not in drained.out


def test_dry_run_says_which_started_jobs_batch_runs_again(seed: Seeder, run: Any, aws: SimulatedAWS, workdir: Path) -> None:
    seed.definition("proc")
    seed.definition("retrying", retryStrategy={"attempts": 3})
    seed.queue("science-queue", compute_environment=seed.compute_environment("science-queue-ce"))
    plain = seed.job(status="RUNNING", jobName="plain", jobQueue="science-queue", jobDefinition="proc")
    retrying = seed.job(status="RUNNING", jobName="retrying", jobQueue="science-queue", jobDefinition="retrying")
    plan = _plan(workdir / "plan.json", _ce_replaced("science-queue-ce"))
    result = run("drain", "--plan", plan, "--queue", "science-queue", "--dry-run", "--store", f"file://{workdir}/m")
    assert result.code == 0, result.err
    assert "queue science-queue: 1 started jobs left running: their retryStrategy has Batch run them again" in result.out
    assert "queue science-queue: 1 started jobs (their instances go) would be drained" in result.out
    assert f"would drain  {plain}" in result.out and f"would drain  {retrying}" not in result.out and aws.stop_calls == 0


@pytest.mark.parametrize(
    ("policy", "words"),
    [
        ({"job-name": "^critical-.*$", "action": "wait"}, "policies[0].job-name: '^critical-.*$' can never match"),
        ({"queue": f"{ACCOUNT}:job-queue/etl", "action": "wait"}, "policies[0].queue: "),
        ({"job-definition": "etl/.*", "action": "abandon"}, "policies[0].job-definition: 'etl/.*' can never match"),
    ],
)
def test_a_policy_pattern_no_name_can_match_is_refused(
    aws: SimulatedAWS, run: Any, workdir: Path, policy: dict[str, Any], words: str
) -> None:
    """A `wait` policy written as a regular expression matched nothing: the jobs it was meant to protect were stopped."""
    from .conftest import configure

    configure(workdir, json.dumps({"policies": [policy]}))
    result = run("drain", "--queue", "etl")
    assert result.code == 2 and words in result.err and "can never match" in result.err, result.err
    assert len([line for line in result.err.splitlines() if line.startswith("error:")]) == 1


def test_policy_globs_that_can_match_still_load(aws: SimulatedAWS, run: Any, workdir: Path) -> None:
    from jobguard.options import policies

    found = policies([{"queue": "etl-*", "job-name": "[a-z]*_x?", "job-definition": "proc:1*", "action": "wait"}], "policies")
    assert found[0].matches("etl-1", "ab_x1", "proc:12")
