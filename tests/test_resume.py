"""Resume instead of restart: lineage variables on replacements, the checkpoint helper under
SIGTERM, the cap on deploy resubmissions, retry budgets, notifications and status --watch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from jobguard.sim import Seeder, SimulatedAWS

from .conftest import Hook, configure, load_manifest, replacements_of

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "jobs" / "checkpointed_sum.py"
STEPS = 400  # the interrupted run would take 20 s: the drain and its SIGTERM always come first, even on a loaded machine


def _env(detail: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in detail["container"]["environment"]}


def _cycle(seed: Seeder, run, store: str, deploy: str) -> None:
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", deploy).code == 0
    assert run("restore", "--store", store, "--deploy-id", deploy).code == 0


@pytest.mark.slow
def test_replacements_carry_their_lineage(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    seed.queue("work")
    seed.definition("proc")
    original = seed.job(
        jobName="j", jobQueue="work", jobDefinition="proc", containerOverrides={"environment": [{"name": "INPUT", "value": "x"}]}
    )
    _cycle(seed, run, store, "d1")
    (first,) = replacements_of(aws)[original]
    detail = seed.batch.describe_jobs(jobs=[first])["jobs"][0]
    assert {k: v for k, v in _env(detail).items() if k.startswith("JOBGUARD_") or k == "INPUT"} == {
        "INPUT": "x",
        "JOBGUARD_LINEAGE_ID": original,
        "JOBGUARD_PREVIOUS_JOB_ID": original,
        "JOBGUARD_DEPLOY_ID": "d1",
        "JOBGUARD_RESUME_COUNT": "1",
    }
    assert detail["tags"]["jobguard"] == f"d=d1 o={original} l={original} n=1"
    aws.batch.set_status(first, "RUNNING")
    aws.batch.backdate(first, 60)  # past ListJobs' lag: the next deploy comes later
    _cycle(seed, run, store, "d2")  # a second deploy catches the replacement
    (second,) = replacements_of(aws)[first]
    environment = seed.batch.describe_jobs(jobs=[second])["jobs"][0]["container"]["environment"]
    assert [e["name"] for e in environment].count("JOBGUARD_LINEAGE_ID") == 1
    assert {e["name"]: e["value"] for e in environment}["JOBGUARD_LINEAGE_ID"] == original
    assert {e["name"]: e["value"] for e in environment}["JOBGUARD_PREVIOUS_JOB_ID"] == first
    assert {e["name"]: e["value"] for e in environment}["JOBGUARD_RESUME_COUNT"] == "2"


def test_lineage_variables_can_be_turned_off(seed: Seeder, run, aws: SimulatedAWS, workdir: Path) -> None:
    seed.queue("work")
    seed.definition("proc")
    original = seed.job(jobName="j", jobQueue="work", jobDefinition="proc")
    configure(workdir, "lineage-env: false")
    _cycle(seed, run, f"file://{workdir}/m", "d1")
    (replacement,) = replacements_of(aws)[original]
    assert not any(k.startswith("JOBGUARD_") for k in _env(seed.batch.describe_jobs(jobs=[replacement])["jobs"][0]))


@pytest.mark.slow
def test_deploys_stop_resubmitting_after_the_cap(seed: Seeder, run, aws: SimulatedAWS, workdir: Path) -> None:
    seed.queue("work")
    seed.definition("proc")
    job = seed.job(jobName="unlucky", jobQueue="work", jobDefinition="proc")
    store = f"file://{workdir}/m"
    for deploy in ("d1", "d2", "d3"):
        _cycle(seed, run, store, deploy)
        (job,) = replacements_of(aws)[job]
        aws.batch.set_status(job, "RUNNING")
        aws.batch.backdate(job, 60)
    drained = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d4")
    assert drained.code == 0 and "its line was already resubmitted 3 times (max-resubmits 3): left running, not drained" in drained.err
    assert aws.batch.jobs[job].status == "RUNNING" and aws.stop_calls == 3  # never stopped by d4
    result = run("restore", "--store", store, "--deploy-id", "d4")
    assert result.code == 0 and job not in replacements_of(aws)
    (record,) = load_manifest(store, seed, "d4")["jobs"]
    assert record["outcome"] == "kept" and record["resubmits"] == 3


def test_replacement_gets_the_full_retry_budget(seed: Seeder, run, aws: SimulatedAWS, workdir: Path) -> None:
    seed.queue("work")
    seed.definition("proc", retryStrategy={"attempts": 2})
    job = seed.job(jobName="j", jobQueue="work", jobDefinition="proc", retryStrategy={"attempts": 5})
    _cycle(seed, run, f"file://{workdir}/m", "d1")
    (replacement,) = replacements_of(aws)[job]
    detail = seed.batch.describe_jobs(jobs=[replacement])["jobs"][0]
    assert detail["retryStrategy"] == {"attempts": 5, "evaluateOnExit": []} and detail["attempts"] == []  # a new job: no attempt spent


def test_checkpointed_job_resumes_where_its_predecessor_stopped(seed: Seeder, run, aws: SimulatedAWS, workdir: Path) -> None:
    seed.client("s3").create_bucket(Bucket="checkpoints")
    seed.queue("work")
    seed.definition("proc")
    original = seed.job(jobName="sum", jobQueue="work", jobDefinition="proc")
    base = {**os.environ, **aws.env(), "JOBGUARD_CHECKPOINT_BUCKET": "checkpoints", "PYTHONUNBUFFERED": "1"}
    uninterrupted = subprocess.run(
        [sys.executable, str(EXAMPLE), str(STEPS), "0"],
        env={**base, "AWS_BATCH_JOB_ID": "reference"},
        capture_output=True,
        text=True,
        check=True,
    )
    expected = uninterrupted.stdout.splitlines()[-1]
    assert expected == f"result {sum(i * i % 7919 for i in range(STEPS))}"

    # The job runs, and the deploy's drain terminates it: Batch sends SIGTERM.
    first = subprocess.Popen(
        [sys.executable, str(EXAMPLE), str(STEPS), "0.05"], env={**base, "AWS_BATCH_JOB_ID": original}, stdout=subprocess.PIPE, text=True
    )
    assert first.stdout is not None
    while "step 10" not in first.stdout.readline():
        pass
    assert run("drain", "--store", f"file://{workdir}/m", "--queue", "work", "--deploy-id", "d1").code == 0
    first.send_signal(signal.SIGTERM)
    out, _ = first.communicate(timeout=30)
    assert first.returncode == 143 and "stopping: saved at step" in out
    saved_at = int(out.split("saved at step")[1].split()[0])

    # restore resubmits it; its replacement starts with the environment Batch would give it.
    assert run("restore", "--store", f"file://{workdir}/m", "--deploy-id", "d1").code == 0
    (replacement,) = replacements_of(aws)[original]
    environment = {
        k: v
        for k, v in _env(seed.batch.describe_jobs(jobs=[replacement])["jobs"][0]).items()
        if k.startswith(("JOBGUARD_", "AWS_BATCH_JOB_ID"))
    }
    second = subprocess.run(
        [sys.executable, str(EXAMPLE), str(STEPS), "0"], env={**base, **environment}, capture_output=True, text=True, check=True
    )
    lines = second.stdout.splitlines()
    assert lines[0] == f"lineage {original}, resume 1: starting at step {saved_at}" and saved_at > 10
    assert lines[-1] == expected  # the same result as a run that was never interrupted
    assert seed.client("s3").list_objects_v2(Bucket="checkpoints").get("KeyCount", 0) == 0  # cleared when done


def test_notifications_to_sns_and_webhook(seed: Seeder, run, aws: SimulatedAWS, workdir: Path, webhook: str) -> None:
    seed.queue("work")
    seed.definition("proc")
    seed.job(
        jobName="nightly", jobQueue="work", jobDefinition="proc", containerOverrides={"environment": [{"name": "TOKEN", "value": "s3cr3t"}]}
    )
    topic = seed.client("sns").create_topic(Name="deploys")["TopicArn"]
    sqs = seed.client("sqs")
    inbox = sqs.create_queue(QueueName="inbox")["QueueUrl"]
    inbox_arn = sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    seed.client("sns").subscribe(TopicArn=topic, Protocol="sqs", Endpoint=inbox_arn)
    store = f"file://{workdir}/m"
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1", "--notify", f"sns:{topic}", "--notify", webhook).code == 0
    assert run("restore", "--store", store, "--deploy-id", "d1", "--notify", webhook).code == 0
    messages = [json.loads(m["Body"])["Message"] for m in sqs.receive_message(QueueUrl=inbox, MaxNumberOfMessages=10)["Messages"]]
    assert messages == ["jobguard drain, deploy d1: 1 jobs: 1 terminated"]
    assert [h["text"] for h in Hook.received] == [
        "jobguard drain, deploy d1: 1 jobs: 1 terminated",
        "jobguard restore, deploy d1: 1 jobs: 1 resubmitted",
    ]
    assert "s3cr3t" not in json.dumps(Hook.received) + json.dumps(messages)


def test_failed_notification_is_only_a_warning(seed: Seeder, run, aws: SimulatedAWS, workdir: Path) -> None:
    seed.queue("work")
    seed.definition("proc")
    seed.job(jobName="j", jobQueue="work", jobDefinition="proc")
    result = run(
        "drain",
        "--store",
        f"file://{workdir}/m",
        "--queue",
        "work",
        "--notify",
        "http://127.0.0.1:9/hooks/secret-token",
        "--notify",
        "sns:arn:aws:sns:us-east-1:123456789012:missing",
    )
    assert result.code == 0
    assert "warning: notification to http://127.0.0.1:9/… failed" in result.err and "secret-token" not in result.err
    assert "warning: notification to sns:arn:aws:sns:us-east-1:123456789012:missing failed" in result.err


def test_bad_notification_target(aws: SimulatedAWS, run) -> None:
    result = run("drain", "--queue", "q", "--notify", "slack://hunter2")
    assert result.code == 2 and "--notify[0]: a notification target is sns:TOPIC_ARN or an https:// webhook URL" in result.err
    assert "hunter2" not in result.err and len(result.err.splitlines()) == 1


@pytest.mark.slow
@pytest.mark.parametrize("fail", [False, True])
def test_status_watch_follows_replacements(seed: Seeder, run, aws: SimulatedAWS, workdir: Path, fail: bool) -> None:
    seed.queue("work")
    seed.definition("proc")
    jobs = [seed.job(jobName=f"j{i}", jobQueue="work", jobDefinition="proc") for i in range(3)]
    store = f"file://{workdir}/m"
    _cycle(seed, run, store, "d1")
    replacements = [replacements_of(aws)[j][0] for j in jobs]
    stop = threading.Event()

    def scheduler() -> None:
        while not stop.wait(0.1):
            aws.batch.advance()
            if fail:
                aws.batch.set_status(replacements[0], "FAILED")

    thread = threading.Thread(target=scheduler)
    thread.start()
    try:
        result = run("status", "--store", store, "--deploy-id", "d1", "--watch", "--interval", "0.1", "--timeout", "30")
    finally:
        stop.set()
        thread.join()
    assert result.code == (1 if fail else 0)
    assert f"3/3 replacements finished: {2 if fail else 3} succeeded, {1 if fail else 0} failed" in result.out
    assert "still" in result.out  # progress lines while they ran
    assert (f"j0: replacement {replacements[0]} FAILED" in result.err) is fail


def test_status_watch_times_out(seed: Seeder, run, aws: SimulatedAWS, workdir: Path) -> None:
    seed.queue("work")
    seed.definition("proc")
    seed.job(jobName="j", jobQueue="work", jobDefinition="proc")
    store = f"file://{workdir}/m"
    _cycle(seed, run, store, "d1")
    started = time.monotonic()
    result = run("status", "--store", store, "--deploy-id", "d1", "--watch", "--interval", "0.1", "--timeout", "0.5")
    assert result.code == 1 and "gave up watching after 0.5 s: 1 replacements still active" in result.err
    assert time.monotonic() - started < 10
