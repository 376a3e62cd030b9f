"""Precision: a plan that keeps a queue and only takes instances away (a compute environment replaced,
removed from the queue's order, or given an infrastructure update that terminates jobs) puts only
the jobs on those instances at risk: STARTING and RUNNING jobs, array parents whose children run,
and the jobs PENDING on them. Queued jobs stay in the queue. An update that lets running jobs finish
gives them job_execution_timeout_minutes. A queue deleted or replaced, a trigger, or no plan at all:
every active job, as before."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from jobguard.domain.plan import Change, Exposure, Risk, exposure, risks
from jobguard.errors import UsageError
from jobguard.sim import Seeder, SimulatedAWS

from .conftest import overlapping, records, replacements_of

PLANS = Path(__file__).parent / "plans"
CE = "arn:aws:batch:us-east-1:123456789012:compute-environment/"


# -- what a plan puts at risk (domain) -----------------------------------------------------------


def _ce(policy: dict[str, Any] | None = None, **resources: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"compute_environment_name": "ce", "compute_resources": [{"type": "EC2", "max_vcpus": 8, **resources}]}
    if policy is not None:
        values["update_policy"] = [policy]
    return values


def _update(before: dict[str, Any], after: dict[str, Any], kind: str = "aws_batch_compute_environment") -> Change:
    return Change("x.y", kind, ("update",), before, after)


def _queue(*environments: str) -> dict[str, Any]:
    return {"name": "q", "compute_environment_order": [{"order": i, "compute_environment": CE + e} for i, e in enumerate(environments)]}


@pytest.mark.parametrize(
    ("change", "instances_only", "grace"),
    [
        (Change("x.y", "aws_batch_job_queue", ("delete", "create"), {"name": "q"}, {"name": "q"}), False, 0),
        (Change("x.y", "aws_batch_compute_environment", ("create", "delete"), _ce(), _ce()), True, 0),
        (_update(_ce(instance_type=["m5"]), _ce({"terminate_jobs_on_update": True}, instance_type=["c5"])), True, 0),
        (
            _update(
                _ce(instance_type=["m5"]),
                _ce({"terminate_jobs_on_update": False, "job_execution_timeout_minutes": 45}, instance_type=["c5"]),
            ),
            True,
            45,
        ),
        (_update(_ce(instance_type=["m5"]), _ce(instance_type=["c5"])), True, 30),  # no policy anywhere: AWS's defaults
        (_update(_ce({"terminate_jobs_on_update": True}, instance_type=["m5"]), _ce(instance_type=["c5"])), True, 0),  # the one it has
        (_update(_queue("a", "b"), _queue("b"), "aws_batch_job_queue"), True, 0),
    ],
    ids=["queue-replaced", "ce-replaced", "infra-terminates", "infra-keeps-45", "infra-defaults", "infra-policy-kept", "ce-out-of-order"],
)
def test_a_plan_says_whether_the_queue_goes_or_only_its_instances(change: Change, instances_only: bool, grace: int) -> None:
    (risk,) = risks([change], ())
    assert (risk.instances_only, risk.grace_minutes) == (instances_only, grace)
    assert risk.queue_goes == (change.kind == "aws_batch_job_queue" and not instances_only)


def test_a_queue_update_that_only_adds_or_reorders_environments_puts_nothing_at_risk() -> None:
    assert risks([_update(_queue("a"), _queue("b", "a"), "aws_batch_job_queue")], ()) == []
    (risk,) = risks([_update(_queue("a", "b"), _queue("b"), "aws_batch_job_queue")], ())
    assert risk.queue == "q" and "lose compute environment a" in risk.reason


@pytest.mark.parametrize(
    ("policy", "words"),
    [
        ({"terminate_jobs_on_update": "yes"}, "terminate_jobs_on_update: expected true or false"),
        ({"job_execution_timeout_minutes": "30"}, "job_execution_timeout_minutes: expected a whole number of minutes"),
        ({"job_execution_timeout_minutes": 0}, "job_execution_timeout_minutes"),
    ],
)
def test_a_bad_update_policy_is_named(policy: dict[str, Any], words: str) -> None:
    with pytest.raises(UsageError) as raised:
        risks([_update(_ce(instance_type=["m5"]), _ce(policy, instance_type=["c5"]))], ())
    assert words in str(raised.value) and "change.after.update_policy[0]" in str(raised.value)


def test_a_queue_takes_the_broadest_of_its_risks() -> None:
    goes = Risk("a", "queue replaced", queue="q")
    now = Risk("b", "ce replaced", compute_environment="c", instances_only=True)
    later = Risk("c", "update keeps 30", compute_environment="c", instances_only=True, grace_minutes=30, update=True)
    sooner = Risk("d", "update keeps 10", compute_environment="d", instances_only=True, grace_minutes=10, update=True)
    assert exposure([later, goes, now]) == Exposure("queue replaced")
    assert exposure([later, now]) == Exposure("ce replaced", every_job=False)  # an update among them: Batch's retries not counted on
    assert exposure([now]) == Exposure("ce replaced", every_job=False, hosts_lost=True)
    assert exposure([later, sooner]) == Exposure("update keeps 10", every_job=False, grace_minutes=10)


# -- drain against the simulated Batch -------------------------------------------------------------


def _world(seed: Seeder, queue: str = "science-queue") -> dict[str, Any]:
    """A queue with work in every state: what the apply kills and what it leaves."""
    seed.definition("proc")
    seed.queue(queue)

    def job(name: str, status: str, **extra: Any) -> str:
        return seed.job(status=status, jobName=name, jobQueue=queue, jobDefinition="proc", **extra)

    running = [job(f"running-{i}", "RUNNING") for i in range(3)]
    starting = job("starting", "STARTING")
    queued = [job(f"queued-{i}", "RUNNABLE") for i in range(20)] + [job(f"submitted-{i}", "SUBMITTED") for i in range(3)]
    array_running = job("array-running", "RUNNING", arrayProperties={"size": 2})  # the parent is PENDING, its children run
    array_queued = job("array-queued", "RUNNABLE", arrayProperties={"size": 2})  # the parent is PENDING, its children queued
    needs_running = job("needs-running", "PENDING", dependsOn=[{"jobId": running[0]}])  # Batch fails it with running-0
    needs_queued = job("needs-queued", "PENDING", dependsOn=[{"jobId": queued[0]}])
    return {
        "at_risk": {*running, starting, array_running, needs_running},
        "left": {*queued, array_queued, needs_queued},
        "running": running,
        "queued": queued,
    }


def _drain(run: Any, workdir: Path, plan: str | None, *queues: str) -> Any:
    flags = [f for q in queues or ("science-queue",) for f in ("--queue", q)]
    return run("drain", *(["--plan", str(PLANS / plan)] if plan else []), *flags, "--store", f"file://{workdir}/m", "--deploy-id", "d1")


def _replace_compute_environment(seed: Seeder, queue: str) -> None:
    """The apply: a new compute environment, the queue moved onto it, the old one deleted (its instances go)."""
    (described,) = seed.batch.describe_job_queues(jobQueues=[queue])["jobQueues"]
    old = described["computeEnvironmentOrder"][0]["computeEnvironment"]
    new = seed.compute_environment(f"{queue}-ce-2")
    seed.batch.update_job_queue(jobQueue=queue, computeEnvironmentOrder=[{"order": 1, "computeEnvironment": new}])
    seed.batch.update_compute_environment(computeEnvironment=old, state="DISABLED")
    seed.batch.delete_compute_environment(computeEnvironment=old)


def _asked_to_stop(aws: SimulatedAWS, jobs: set[str]) -> set[str]:
    """The jobs Batch was asked to stop (an array parent: through its children)."""

    def asked(job_id: str) -> bool:
        job = aws.batch.jobs[job_id]
        return bool(job.stop_kind or job.stop_requested) or any(asked(c) for c in job.children)

    return {j for j in jobs if asked(j)}


@pytest.mark.parametrize(
    ("plan", "queue", "why"),
    [
        ("ce-replace.json", "science-queue", "aws_batch_compute_environment.science will be replaced"),
        ("queue-loses-ce.json", "etl-queue", "aws_batch_job_queue.etl will lose compute environment etl-queue-ce from its order"),
        (
            "ce-infrastructure-update.json",
            "etl-queue",
            "aws_batch_compute_environment.etl gets an infrastructure update that terminates running jobs",
        ),
    ],
)
def test_instances_taken_away_drain_only_the_jobs_on_them(
    seed: Seeder, run, aws: SimulatedAWS, workdir: Path, plan: str, queue: str, why: str
) -> None:
    world = _world(seed, queue)
    drained = _drain(run, workdir, plan, queue)
    assert drained.code == 0, drained.err
    assert f"queue {queue}: at risk: {why}; only its started jobs are drained, queued jobs stay" in drained.out
    assert set(records(f"file://{workdir}/m", seed, "d1")) == world["at_risk"]
    assert _asked_to_stop(aws, world["at_risk"] | world["left"]) == world["at_risk"]
    assert all(aws.batch.jobs[j].status == "RUNNABLE" for j in world["queued"][:20])
    assert f"queue {queue}: 25 queued jobs left queued: Batch runs them on the new environment" in drained.out
    stopped = [c for c in aws.recorded if c.action == "batch:TerminateJob"]
    assert len(stopped) == len(world["at_risk"]) and aws.calls["batch:TerminateJobs"] == 1


def test_without_a_plan_or_when_the_queue_goes_every_active_job_is_drained(seed: Seeder, run, aws: SimulatedAWS, workdir: Path) -> None:
    world = _world(seed)
    drained = _drain(run, workdir, "queue-replace.json")
    assert drained.code == 0, drained.err
    assert set(records(f"file://{workdir}/m", seed, "d1")) == world["at_risk"] | world["left"]
    assert "left queued" not in drained.out


def test_a_trigger_drains_every_job_even_where_only_instances_go(seed: Seeder, run, aws: SimulatedAWS, workdir: Path) -> None:
    world = _world(seed)
    (workdir / ".jobguard.yml").write_text(
        (workdir / ".jobguard.yml").read_text() + "triggers: ['aws_batch_compute_environment.science']\n"
    )
    drained = _drain(run, workdir, "ce-replace.json")
    assert drained.code == 0, drained.err
    assert "aws_batch_compute_environment.science will be replaced and is a trigger" in drained.out
    assert set(records(f"file://{workdir}/m", seed, "d1")) == world["at_risk"] | world["left"]


def test_no_plan_drains_every_active_job(seed: Seeder, run, aws: SimulatedAWS, workdir: Path) -> None:
    world = _world(seed)
    assert _drain(run, workdir, None).code == 0
    assert set(records(f"file://{workdir}/m", seed, "d1")) == world["at_risk"] | world["left"]


def test_dry_run_shows_what_precision_would_drain(seed: Seeder, run, aws: SimulatedAWS, workdir: Path) -> None:
    world = _world(seed)
    result = run(
        "drain", "--plan", str(PLANS / "ce-replace.json"), "--queue", "science-queue", "--dry-run", "--store", f"file://{workdir}/m"
    )
    assert result.code == 0, result.err
    assert "queue science-queue: 5 started jobs (their instances go) would be drained" in result.out  # dependents: the real drain
    assert all(f"would drain  {j}" in result.out for j in world["running"])
    assert "26 queued jobs left queued" in result.out and aws.stop_calls == 0


def test_an_update_that_keeps_running_jobs_gives_them_its_timeout(seed: Seeder, run, aws: SimulatedAWS, workdir: Path) -> None:
    """terminate_jobs_on_update false, job_execution_timeout_minutes 1: a running job that ends within
    the minute is not drained, queued jobs stay, and nothing else is stopped."""
    seed.definition("proc")
    seed.queue("etl-queue")
    quick = seed.job(jobName="quick", jobQueue="etl-queue", jobDefinition="proc")
    queued = seed.job(status="RUNNABLE", jobName="queued", jobQueue="etl-queue", jobDefinition="proc")
    aws.after = lambda action, n: (
        aws.batch.finish(quick) if action == "batch:DescribeJobs" and aws.batch.jobs[quick].status == "RUNNING" else None
    )
    started = time.monotonic()
    drained = _drain(run, workdir, "ce-update-keeps-running.json", "etl-queue")
    assert drained.code == 0, drained.err
    assert "lets running jobs run up to 1 minutes, then replaces their instances; its running jobs get 1 minutes to finish" in drained.out
    assert "waiting up to 60 s for 1 running jobs to finish" in drained.out and time.monotonic() - started < 30
    assert records(f"file://{workdir}/m", seed, "d1") == {} and aws.stop_calls == 0
    assert aws.batch.jobs[queued].status == "RUNNABLE" and "1 queued jobs left queued" in drained.out


def test_the_apply_then_kills_what_was_drained_and_restore_brings_each_back_once(
    seed: Seeder, run, aws: SimulatedAWS, workdir: Path
) -> None:
    """The compute environment replaced for real (the simulated apply): the drained jobs come back once,
    the queued ones were never touched and run on the new environment."""
    world = _world(seed)
    assert _drain(run, workdir, "ce-replace.json").code == 0
    _replace_compute_environment(seed, "science-queue")
    restored = run("restore", "--store", f"file://{workdir}/m", "--deploy-id", "d1")
    assert restored.code == 0, restored.err
    assert {j: len(v) for j, v in replacements_of(aws).items()} == dict.fromkeys(world["at_risk"], 1)
    assert overlapping(aws) == []
    assert _asked_to_stop(aws, world["left"]) == set()
    assert all(aws.batch.jobs[j].status == "RUNNABLE" and not aws.batch.jobs[j].terminated for j in world["queued"][:20])


def test_a_queued_job_that_starts_after_drain_and_is_killed_by_the_apply_comes_back_once(
    seed: Seeder, run, aws: SimulatedAWS, workdir: Path
) -> None:
    """The lag: drain leaves queued jobs; one starts on the old environment's instances (freed by the
    jobs drain stopped) before the apply takes them away. Restore's sweep finds it FAILED with Batch's
    host-terminated reason and resubmits it once; the others stay queued, untouched."""
    world = _world(seed)
    store = f"file://{workdir}/m"
    assert _drain(run, workdir, "ce-replace.json").code == 0
    unlucky = world["queued"][1]
    aws.batch.set_status(unlucky, "RUNNING")  # Batch placed it on a freed instance of the old environment
    _replace_compute_environment(seed, "science-queue")
    deadline = time.monotonic() + 10
    while True:
        with aws.batch.lock:
            aws.batch.tick()
            if aws.batch.jobs[unlucky].status == "FAILED":
                break
        assert time.monotonic() < deadline, "the simulated apply never took the job's host away"
        time.sleep(0.05)
    restored = run("restore", "--store", store, "--deploy-id", "d1")
    assert restored.code == 0, restored.err
    assert {j: len(v) for j, v in replacements_of(aws).items()} == dict.fromkeys(world["at_risk"] | {unlucky}, 1)
    assert "killed by the deploy: its host was taken away" in records(store, seed, "d1")[unlucky]["reason"]
    assert overlapping(aws) == []
    assert all(aws.batch.jobs[j].status == "RUNNABLE" for j in world["queued"][:20] if j != unlucky)


def test_a_plan_with_a_bad_update_policy_stops_nothing(seed: Seeder, run, aws: SimulatedAWS, workdir: Path) -> None:
    world = _world(seed, "etl-queue")
    plan = json.loads((PLANS / "ce-update-keeps-running.json").read_text())
    plan["resource_changes"][0]["change"]["after"]["update_policy"] = [{"job_execution_timeout_minutes": "thirty"}]
    (workdir / "plan.json").write_text(json.dumps(plan))
    result = run("drain", "--plan", "plan.json", "--queue", "etl-queue", "--store", f"file://{workdir}/m")
    assert result.code == 2 and result.err.count("error:") == 1
    assert "plan.json: resource_changes[0].change.after.update_policy[0].job_execution_timeout_minutes" in result.err
    assert aws.stop_calls == 0 and _asked_to_stop(aws, world["at_risk"]) == set()
