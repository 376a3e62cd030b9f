"""Deploy-aware draining: the Terraform plan decides which queues are at risk; a grace period
lets running jobs finish; --freeze disables queues for the deploy; per-job policies."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from jobguard.sim import Seeder, SimulatedAWS

from .conftest import load_manifest, records, replacements_of

PLANS = Path(__file__).parent / "plans"
QUEUES = ("science-queue", "etl-queue", "legacy-queue")


def _world(seed: Seeder) -> dict[str, str]:
    """One running job on each queue; the job id by queue."""
    seed.definition("proc")
    jobs = {}
    for queue in QUEUES:
        seed.queue(queue)
        jobs[queue] = seed.job(jobName=f"{queue}-job", jobQueue=queue, jobDefinition="proc")
    return jobs


def _drained(aws: SimulatedAWS, jobs: dict[str, str]) -> set[str]:
    return {queue for queue, job in jobs.items() if aws.batch.jobs[job].terminated}


ALL_QUEUES = [arg for queue in QUEUES for arg in ("--queue", queue)]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("plan", "at_risk", "reason"),
    [
        ("queue-replace.json", {"science-queue"}, "aws_batch_job_queue.science will be replaced"),
        ("queue-delete.json", {"legacy-queue"}, "aws_batch_job_queue.legacy will be deleted"),
        ("ce-replace.json", {"science-queue"}, "aws_batch_compute_environment.science will be replaced"),
        ("ce-infrastructure-update.json", {"etl-queue"}, "gets an infrastructure update that terminates running jobs"),
        ("ce-scaling-update.json", set(), "the plan puts none of the configured queues at risk"),
        ("ce-fargate-network-update.json", set(), "the plan puts none of the configured queues at risk"),  # AWS replaces no task
        ("no-batch-change.json", set(), "the plan puts none of the configured queues at risk"),
        ("trigger.json", set(), "the plan puts none of the configured queues at risk"),  # no trigger configured
    ],
)
def test_plan_decides_what_is_drained(
    seed: Seeder, run, aws: SimulatedAWS, workdir: Path, plan: str, at_risk: set[str], reason: str
) -> None:
    jobs = _world(seed)
    result = run("drain", "--plan", str(PLANS / plan), *ALL_QUEUES, "--store", f"file://{workdir}/m", "--deploy-id", "d1")
    assert result.code == 0, result.err
    assert _drained(aws, jobs) == at_risk
    assert reason in result.out
    for queue in at_risk:
        assert f"queue {queue}: at risk: " in result.out
    for queue in set(QUEUES) - at_risk:
        assert f"queue {queue}: not at risk" in result.out


def test_named_queues_are_narrowed_to_those_at_risk(seed: Seeder, run, aws: SimulatedAWS, workdir: Path) -> None:
    jobs = _world(seed)
    result = run("drain", "--plan", str(PLANS / "queue-replace.json"), "--queue", "etl-queue", "--store", f"file://{workdir}/m")
    assert result.code == 0 and _drained(aws, jobs) == set()
    assert "the plan puts none of the configured queues at risk" in result.out
    assert "queue science-queue: at risk (aws_batch_job_queue.science will be replaced) but not one of the configured queues" in result.out
    result = run(
        "drain",
        "--plan",
        str(PLANS / "queue-replace.json"),
        "--queue",
        "etl-queue",
        "--queue",
        "science-queue",
        "--store",
        f"file://{workdir}/m",
    )
    assert result.code == 0 and _drained(aws, jobs) == {"science-queue"}


def test_trigger_puts_every_configured_queue_at_risk(seed: Seeder, run, aws: SimulatedAWS, workdir: Path) -> None:
    jobs = _world(seed)
    (workdir / ".jobguard.yml").write_text("queues: [science-queue, etl-queue]\ntriggers: ['aws_db_instance.*']\nlock-ttl: 1\n")
    result = run("drain", "--plan", str(PLANS / "trigger.json"), "--store", f"file://{workdir}/m")
    assert result.code == 0
    assert _drained(aws, jobs) == {"science-queue", "etl-queue"}
    assert "aws_db_instance.main will be updated and is a trigger" in result.out


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("{not json", "not valid JSON"),
        ('{"resource_changes": []}', "not a Terraform JSON plan"),
        ('{"format_version": "1.2", "resource_changes": [{"change": {"actions": ["update"], "before": "x"}}]}', "change.before"),
    ],
)
def test_bad_plan_is_refused(seed: Seeder, run, aws: SimulatedAWS, workdir: Path, content: str, words: str) -> None:
    jobs = _world(seed)
    (workdir / "plan.json").write_text(content)
    result = run("drain", "--plan", "plan.json", *ALL_QUEUES, "--store", f"file://{workdir}/m")
    assert result.code == 2 and words in result.err and "plan.json" in result.err
    assert _drained(aws, jobs) == set()


def _finish_on_poll(aws: SimulatedAWS, job: str, describe_call: int) -> None:
    """Finish `job` when drain makes its n-th DescribeJobs call: a poll of the grace-period wait."""
    aws.after = lambda action, n: aws.batch.set_status(job, "SUCCEEDED") if action == "batch:DescribeJobs" and n == describe_call else None


def _finish_later(aws: SimulatedAWS, job: str, after: float) -> threading.Thread:
    def finish() -> None:
        time.sleep(after)
        aws.batch.set_status(job, "SUCCEEDED")

    thread = threading.Thread(target=finish)
    thread.start()
    return thread


@pytest.mark.slow
def test_grace_drains_queued_jobs_first_and_lets_running_ones_finish(seed: Seeder, run, aws: SimulatedAWS, workdir: Path) -> None:
    seed.queue("work")
    seed.definition("proc")
    queued = seed.job(status="RUNNABLE", jobName="queued", jobQueue="work", jobDefinition="proc")
    quick = seed.job(jobName="quick", jobQueue="work", jobDefinition="proc")
    slow = seed.job(jobName="slow", jobQueue="work", jobDefinition="proc")
    _finish_on_poll(aws, quick, describe_call=2)  # the first describes the queued page, the second is a poll
    started = time.monotonic()
    result = run("drain", "--queue", "work", "--grace", "2s", "--store", f"file://{workdir}/m", "--deploy-id", "d1")
    elapsed = time.monotonic() - started
    assert result.code == 0, result.err
    assert 2 <= elapsed < 10
    recorded = {r["job_id"]: r for r in load_manifest(f"file://{workdir}/m", seed, "d1")["jobs"]}
    assert set(recorded) == {queued, slow}  # the job that finished on its own is not resubmitted
    assert aws.batch.jobs[quick].status == "SUCCEEDED" and not aws.batch.jobs[quick].terminated
    assert "waiting up to 2 s for 2 running jobs" in result.out and "grace period over: 1 jobs still active" in result.out
    assert result.out.index("pass 1: 1 new queued jobs") < result.out.index("waiting up to 2 s")  # queued work stopped first


def test_grace_ends_early_when_everything_finished(seed: Seeder, run, aws: SimulatedAWS, workdir: Path) -> None:
    seed.queue("work")
    seed.definition("proc")
    job = seed.job(jobName="quick", jobQueue="work", jobDefinition="proc")
    _finish_on_poll(aws, job, describe_call=1)  # nothing queued: the first DescribeJobs is a poll
    started = time.monotonic()
    result = run("drain", "--queue", "work", "--grace", "30m", "--store", f"file://{workdir}/m", "--deploy-id", "d1")
    assert result.code == 0 and time.monotonic() - started < 10
    assert "every running job finished within the grace period" in result.out
    assert load_manifest(f"file://{workdir}/m", seed, "d1")["jobs"] == []


def test_freeze_disables_queues_until_restore(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    seed.queue("work")
    seed.definition("proc")
    job = seed.job(jobName="j", jobQueue="work", jobDefinition="proc")
    assert run("drain", "--queue", "work", "--freeze", "--store", store, "--deploy-id", "d1").code == 0
    assert seed.batch.describe_job_queues(jobQueues=["work"])["jobQueues"][0]["state"] == "DISABLED"
    assert load_manifest(store, seed, "d1")["frozen_queues"] == {"work": "ENABLED"}
    result = run("restore", "--store", store, "--deploy-id", "d1")
    assert result.code == 0, result.err
    assert seed.batch.describe_job_queues(jobQueues=["work"])["jobQueues"][0]["state"] == "ENABLED"
    assert len(replacements_of(aws)[job]) == 1 and "queue work: ENABLED again" in result.out
    assert load_manifest(store, seed, "d1")["frozen_queues"] == {}


def test_policies_wait_abandon_and_resubmit(seed: Seeder, run, aws: SimulatedAWS, workdir: Path) -> None:
    seed.queue("work")
    seed.definition("proc")
    seed.definition("scratch")
    precious = seed.job(jobName="precious-run", jobQueue="work", jobDefinition="proc")
    finishing = seed.job(jobName="precious-finishing", jobQueue="work", jobDefinition="proc")
    scratch = seed.job(jobName="tmp", jobQueue="work", jobDefinition="scratch")
    normal = seed.job(jobName="normal", jobQueue="work", jobDefinition="proc")
    (workdir / ".jobguard.yml").write_text(
        "lock-ttl: 1\npolicies:\n  - job-name: 'precious-*'\n    action: wait\n  - job-definition: scratch\n    action: abandon\n"
    )
    finisher = _finish_later(aws, finishing, 0.3)
    store = f"file://{workdir}/m"
    result = run("drain", "--queue", "work", "--grace", "1s", "--store", store, "--deploy-id", "d1")
    finisher.join()
    assert result.code == 1  # a wait job still running after the grace period fails the step
    assert "precious-run" in result.err and "policy wait: still RUNNING after the grace period" in result.err
    assert aws.batch.jobs[precious].status == "RUNNING" and not aws.batch.jobs[precious].terminated
    assert aws.batch.jobs[finishing].status == "SUCCEEDED"
    assert aws.batch.jobs[scratch].terminated and aws.batch.jobs[normal].terminated
    stored = records(store, seed, "d1")
    assert stored[scratch]["outcome"] == "skipped" and stored[precious]["outcome"] == "kept" and finishing not in stored
    assert run("restore", "--store", store, "--deploy-id", "d1").code == 0
    assert set(replacements_of(aws)) == {normal}


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ("policies:\n  - action: explode\n", "policies[0].action"),
        ("policies:\n  - job_name: x\n    action: wait\n", "did you mean 'job-name'"),
        ("grace: soon\n", "expected a duration"),
    ],
)
def test_bad_policy_config(aws: SimulatedAWS, run, workdir: Path, config: str, words: str) -> None:
    (workdir / ".jobguard.yml").write_text(config)
    result = run("drain", "--queue", "q")
    assert result.code == 2 and words in result.err and ".jobguard.yml" in result.err
