"""The deploy window: jobs the application submits while the deploy runs (issue 23).

A late job is in no drain pass. When the apply kills it (its compute environment replaced, its
queue deleted), restore's sweep finds it and resubmits it exactly once; a late job that failed on
its own, succeeded or still runs is never touched.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import threading
import time
from contextlib import suppress
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from jobguard.cli import build_context
from jobguard.commands.window import watch
from jobguard.domain.manifest import LATE, WATCHED, JobRecord
from jobguard.domain.policies import ABANDON, APP_RETRIES, WAIT, Policy
from jobguard.domain.window import ACTIVE, KILLED, OWN, SUCCEEDED, decide, judge
from jobguard.options import resolve
from jobguard.output.report import Reporter
from jobguard.sim import Seeder, SimulatedAWS

from .conftest import TABLE, configure, create_table, load_manifest, overlapping, record_faults, records, replacements_of, run_process
from .test_faults import CHANGING


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


def test_a_late_job_the_apply_kills_is_resubmitted_once(aws: SimulatedAWS, seed: Seeder, store: str, run, workdir: Path) -> None:
    configure(workdir, "events-file: events.jsonl")
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

    (replacement,) = replacements_of(aws)[running]
    status = run("status", "--store", store, "--deploy-id", "d1")
    assert f"late job late-running: {running} -> {replacement}: killed by the deploy: its host was taken away" in status.out
    assert "late FAILED" in status.out and "(1 of them late: submitted during the deploy)" in status.out
    document = json.loads(run("status", "--store", store, "--deploy-id", "d1", "--json").out)
    kinds = {j["job_id"]: j["kind"] for j in document["deploys"][0]["jobs"]}
    assert kinds == {drained: "drained", running: "late"}
    assert document["deploys"][0]["window"]["found"]["killed"] == 1
    events = [json.loads(line) for line in (workdir / "events.jsonl").read_text().splitlines()]
    late_events = [e for e in events if e["kind"] == "late"]
    assert [(e["outcome"], e["replacement"] and e["replacement"]["job_id"]) for e in late_events] == [
        ("terminated", None),
        ("resubmitted", replacement),
    ]

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


# -- an application submitting all through the deploy --------------------------------------------


class App:
    """An application that submits a job every 100 ms to `queue` and remembers what Batch said."""

    def __init__(self, seed: Seeder, queue: str = "work") -> None:
        self.client, self.queue = seed.client("batch"), queue
        self.submitted: list[str] = []
        self.refused: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> App:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)

    def _loop(self) -> None:
        n = 0
        while not self.stop.wait(0.1):
            n += 1
            try:
                self.submitted.append(self.client.submit_job(jobName=f"app-{n}", jobQueue=self.queue, jobDefinition="proc")["jobId"])
            except ClientError as exc:  # what the app sees: a refusal it must retry itself
                self.refused.append(str(exc))


class Scheduler:
    """Batch's scheduler: every moment, each job moves one status on (RUNNABLE -> ... -> SUCCEEDED)."""

    def __init__(self, aws: SimulatedAWS) -> None:
        self.aws = aws
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Scheduler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)

    def _loop(self) -> None:
        while not self.stop.wait(0.15):
            self.aws.batch.advance()


def _accounted(aws: SimulatedAWS, app: App) -> None:
    """Every job the app submitted succeeded, or has exactly one replacement that succeeded; none ran beside its original."""

    def ended() -> bool:
        aws.batch.advance()
        return not list(aws.batch.active_jobs())

    _until(ended, bound=30)  # everything runs to its end
    found = replacements_of(aws)
    lost, doubled = [], []
    for job_id in app.submitted:
        replacements = found.get(job_id, [])
        succeeded = aws.batch.jobs[job_id].status == "SUCCEEDED"
        if len(replacements) > 1 or (succeeded and replacements):
            doubled.append(job_id)
        elif not succeeded and (not replacements or aws.batch.jobs[replacements[0]].status != "SUCCEEDED"):
            lost.append(job_id)
    replaced = sum(1 for j in app.submitted if found.get(j))
    record_faults(runs=2, faults=0, jobs=len(app.submitted), lost=len(lost), doubled=len(doubled) + len(overlapping(aws)))
    counts = f"{len(app.submitted)} jobs submitted, {replaced} replaced once, {len(app.refused)} refused"
    print(f"\napp: {counts}; {len(lost)} lost, {len(doubled)} doubled", file=sys.__stderr__)
    assert (lost, doubled, overlapping(aws)) == ([], [], [])


def _restore_done(aws: SimulatedAWS, run: Any, store: str, deploy: str = "d1") -> Any:
    time.sleep(aws.batch.timing.list_lag_seconds)
    restored = run("restore", "--store", store, "--deploy-id", deploy)
    assert restored.code == 0, restored.err
    return restored


@pytest.mark.slow
def test_an_app_submitting_through_a_compute_environment_replacement_loses_nothing(
    aws: SimulatedAWS, seed: Seeder, store: str, run
) -> None:
    seed.queue("work")
    seed.definition("proc")
    with Scheduler(aws), App(seed) as app:
        _until(lambda: len(app.submitted) >= 5)
        assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
        _until(lambda: any(aws.batch.jobs[j].status == "RUNNING" for j in app.submitted[-5:]))
        _replace_compute_environment(seed, "work")
        _until(lambda: not any(j.stop_kind == "host" and j.status in ("STARTING", "RUNNING") for j in aws.batch.active_jobs()))
        restored = _restore_done(aws, run, store)
        submitted = len(app.submitted)
        _until(lambda: len(app.submitted) >= submitted + 3)
    assert "killed by the deploy" in restored.out  # the apply did kill some of the app's jobs
    assert app.refused == []  # nothing froze the queue: the app never saw a refusal
    _accounted(aws, app)
    before = aws.calls["batch:SubmitJob"]
    assert run("restore", "--store", store, "--deploy-id", "d1").code == 0
    assert aws.calls["batch:SubmitJob"] == before  # a second restore submits nothing


@pytest.mark.slow
def test_an_app_submitting_through_a_queue_deletion_sees_refusals_and_loses_nothing(
    aws: SimulatedAWS, seed: Seeder, store: str, run, workdir: Path
) -> None:
    seed.queue("work")
    seed.definition("proc")
    change = {"actions": ["delete", "create"], "before": {"name": "work"}, "after": {"name": "work"}}
    queue = {"address": "aws_batch_job_queue.q", "type": "aws_batch_job_queue", "change": change}
    (workdir / "plan.json").write_text(json.dumps({"format_version": "1.2", "resource_changes": [queue]}))
    with Scheduler(aws), App(seed) as app:
        _until(lambda: len(app.submitted) >= 5)
        drained = run("drain", "--store", store, "--queue", "work", "--plan", "plan.json", "--deploy-id", "d1")
        assert drained.code == 0, drained.err
        assert "the plan deletes it: frozen for the deploy" in drained.out
        _until(lambda: len(app.refused) >= 3)  # the app sees SubmitJob refused while the queue is frozen
        (described,) = seed.batch.describe_job_queues(jobQueues=["work"])["jobQueues"]
        seed.batch.delete_job_queue(jobQueue="work")  # the apply replaces the queue
        seed.queue("work", compute_environment=described["computeEnvironmentOrder"][0]["computeEnvironment"])
        restored = _restore_done(aws, run, store)
        submitted = len(app.submitted)
        _until(lambda: len(app.submitted) >= submitted + 3)  # and its submissions are accepted again
    assert all("not in ENABLED state" in r or "does not exist" in r for r in app.refused)
    assert "frozen" in restored.out or "ENABLED again" in restored.out
    _accounted(aws, app)


# -- the rule: what Batch says of a job the deploy killed (pure) -------------------------------

HOST = "Host EC2 (instance i-0e234208f6fc9291f) terminated."


@pytest.mark.parametrize(
    ("job", "kind"),
    [
        ({"status": "FAILED", "statusReason": HOST}, KILLED),
        ({"status": "FAILED", "statusReason": HOST, "attempts": [{"container": {"exitCode": 143}}]}, KILLED),  # SIGTERM'd on the way down
        ({"status": "FAILED", "statusReason": "Job queue deleted"}, KILLED),
        ({"status": "FAILED", "statusReason": "Essential container in task exited", "container": {"exitCode": 1}}, OWN),
        ({"status": "FAILED", "statusReason": "Essential container in task exited", "attempts": [{"container": {"exitCode": 2}}]}, OWN),
        ({"status": "FAILED", "statusReason": "Job attempt duration exceeded timeout"}, OWN),
        ({"status": "FAILED", "statusReason": "Terminated by user"}, OWN),  # a person or the app called TerminateJob
        ({"status": "FAILED", "statusReason": "jobguard: drained for deploy d0"}, OWN),
        ({"status": "FAILED"}, OWN),
        ({"status": "FAILED", "statusReason": "Dependent Job failed", "dependsOn": [{"jobId": "a"}]}, OWN),
        ({"status": "SUCCEEDED", "statusReason": HOST}, SUCCEEDED),
        ({"status": "RUNNING"}, ACTIVE),
        ({"status": "RUNNABLE"}, ACTIVE),
    ],
)
def test_the_rule(job: dict[str, Any], kind: str) -> None:
    assert judge(job).kind == kind


def test_the_rule_in_context() -> None:
    ended = {"status": "FAILED", "statusReason": "", "dependsOn": []}
    assert judge(ended, queue_gone=True).kind == KILLED  # its queue is gone: no exit code, no timeout: the deletion
    assert judge({**ended, "container": {"exitCode": 1}}, queue_gone=True).kind == OWN
    dependent = {"status": "FAILED", "statusReason": "Dependent Job failed", "dependsOn": [{"jobId": "a:3"}]}
    assert judge(dependent, killed={"a"}).kind == KILLED  # its dependency (an array) was killed by the deploy
    assert "depended on a" in judge(dependent, killed={"a"}).why


def _late_record(**changes: Any) -> JobRecord:
    record = JobRecord(
        "j1", "arn:aws:batch:us-east-1:123456789012:job/j1", "late-1", "work", "proc:1", "FAILED", {}, WATCHED, "restore", {}
    )
    return replace(record, reason=LATE, **changes)


@pytest.mark.parametrize(
    ("policies", "engine", "replaced", "words"),
    [
        ((), None, True, "its host was taken away"),
        ((Policy(APP_RETRIES, queue="work"),), None, False, "policy app-retries"),
        ((Policy(ABANDON),), None, False, "policy abandon"),
        ((Policy(WAIT),), None, False, "policy wait"),
        ((), ("nextflow", "task"), False, "left to nextflow"),
        ((Policy("resubmit", engine="nextflow"),), ("nextflow", "task"), True, "its host was taken away"),  # a policy wins
    ],
)
def test_the_one_decision(policies: tuple[Policy, ...], engine: tuple[str, str] | None, replaced: bool, words: str) -> None:
    record = _late_record(engine=engine[0], engine_role=engine[1]) if engine else _late_record()
    decision = decide(record, judge({"status": "FAILED", "statusReason": HOST}), policies, ())
    assert decision.replace is replaced and words in decision.why
    assert not decide(record, judge({"status": "FAILED", "container": {"exitCode": 1}}), policies, ()).replace  # never on its own


# -- the simulation models what an apply does to running work ------------------------------------


def _environment(seed: Seeder, queue: str = "work") -> str:
    (described,) = seed.batch.describe_job_queues(jobQueues=[queue])["jobQueues"]
    return str(described["computeEnvironmentOrder"][0]["computeEnvironment"])


@pytest.mark.parametrize("terminate", [True, False])
def test_an_infrastructure_update_ends_running_jobs_only_with_terminate_jobs_on_update(
    aws: SimulatedAWS, seed: Seeder, terminate: bool
) -> None:
    _world(seed)
    running, queued = _late(seed, "r", "RUNNING"), _late(seed, "q", "RUNNABLE")
    seed.batch.update_compute_environment(
        computeEnvironment=_environment(seed),
        computeResources={"instanceTypes": ["m7i.large"]},
        updatePolicy={"terminateJobsOnUpdate": terminate, "jobExecutionTimeoutMinutes": 30},
    )
    if terminate:
        _until(lambda: _status(aws, running) == "FAILED")
        assert aws.batch.detail(aws.batch.jobs[running])["statusReason"].startswith("Host EC2 (instance i-")
    else:
        time.sleep(aws.batch.timing.stop_seconds + 0.1)
        assert _status(aws, running) == "RUNNING"
    assert _status(aws, queued) == "RUNNABLE"


def test_a_retry_strategy_that_retries_host_terminations_runs_the_job_again(aws: SimulatedAWS, seed: Seeder) -> None:
    seed.queue("work")
    seed.definition(
        "proc",
        retryStrategy={
            "attempts": 3,
            "evaluateOnExit": [{"onStatusReason": "Host EC2*", "action": "RETRY"}, {"onReason": "*", "action": "EXIT"}],
        },
    )
    job = _late(seed, "nf-task", "RUNNING")
    _replace_compute_environment(seed, "work")
    _until(lambda: _status(aws, job) == "RUNNABLE")  # Batch runs it again: it never ends FAILED
    (attempt,) = aws.batch.detail(aws.batch.jobs[job])["attempts"]
    assert attempt["statusReason"].startswith("Host EC2 (instance i-")


def test_a_deleted_queue_ends_its_jobs_about_16_a_second_and_refuses_submissions_first(aws: SimulatedAWS, seed: Seeder) -> None:
    _world(seed)
    environment = _environment(seed)
    jobs = [_late(seed, f"q{i}", "RUNNABLE") for i in range(40)]
    with pytest.raises(ClientError, match="DISABLED"):
        seed.batch.delete_job_queue(jobQueue="work")
    seed.batch.update_job_queue(jobQueue="work", state="DISABLED")
    with pytest.raises(ClientError, match="ENABLED"):
        seed.batch.submit_job(jobName="refused", jobQueue="work", jobDefinition="proc")
    started = time.monotonic()
    seed.batch.delete_job_queue(jobQueue="work")
    ended = sum(_status(aws, j) == "FAILED" for j in jobs)
    assert ended <= 16 * (time.monotonic() - started) + 2  # about 16 a second, not all at once
    aws.batch.advance_clock(1.0)  # a second later on Batch's clock (not waited for: the rate is what is checked)
    assert 16 <= sum(_status(aws, j) == "FAILED" for j in jobs) <= 16 * (time.monotonic() - started + 1.0) + 2
    aws.batch.advance_clock(1.5)  # 40 jobs at ~16 a second
    assert all(_status(aws, j) == "FAILED" for j in jobs)
    seed.queue("work", compute_environment=environment)  # made again under its name (the same ARN): it does not list the old queue's jobs
    assert seed.batch.list_jobs(jobQueue="work", jobStatus="FAILED")["jobSummaryList"] == []


# -- bad input: one clear line, an exit code, nothing else changed --------------------------------


def _killed_late_job(aws: SimulatedAWS, seed: Seeder, store: str, run: Any, *drain: str) -> str:
    """Drain `work`, then a late job that the apply's compute-environment replacement kills; its id."""
    _world(seed)
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1", *drain).code == 0
    running = _late(seed, "late-running", "RUNNING")
    _replace_compute_environment(seed, "work")
    _until(lambda: _status(aws, running) == "FAILED")
    time.sleep(aws.batch.timing.list_lag_seconds)
    return running


def test_a_late_job_whose_definition_was_deregistered(aws: SimulatedAWS, seed: Seeder, store: str, run) -> None:
    running = _killed_late_job(aws, seed, store, run)
    seed.batch.deregister_job_definition(jobDefinition="proc:1")
    submitted = aws.calls["batch:SubmitJob"]
    restored = run("restore", "--store", store, "--deploy-id", "d1")
    assert restored.code == 1
    (line,) = [line for line in restored.err.splitlines() if running in line]
    assert line == f"error: late-running [{running}]: job definition proc has no ACTIVE revision"
    assert aws.calls["batch:SubmitJob"] == submitted and running not in replacements_of(aws)
    assert records(store, seed, "d1")[running]["outcome"] == "failed"  # owed: the next restore tries again
    seed.definition("proc")
    assert run("restore", "--store", store, "--deploy-id", "d1").code == 0
    assert len(replacements_of(aws)[running]) == 1


def test_a_queue_that_no_longer_exists(aws: SimulatedAWS, seed: Seeder, store: str, run) -> None:
    _killed_late_job(aws, seed, store, run)
    seed.batch.update_job_queue(jobQueue="work", state="DISABLED")
    seed.batch.delete_job_queue(jobQueue="work")  # the apply deleted it for good
    before = load_manifest(store, seed, "d1")["window"]
    restored = run("restore", "--store", store, "--deploy-id", "d1")
    assert restored.code == 1
    said = [line for line in restored.err.splitlines() if "jobs submitted to it during the deploy cannot be listed" in line]
    assert said == [
        "error: queue work: no longer exists: the jobs submitted to it during the deploy cannot be listed "
        "(run the apply under `jobguard run`, or freeze the queue, so none is lost)"
    ]
    assert load_manifest(store, seed, "d1")["window"] == before  # not swept: nothing else changed
    assert not replacements_of(aws)


def test_a_deploy_whose_drain_never_finished(aws: SimulatedAWS, seed: Seeder, store: str, run) -> None:
    _world(seed)
    process = run_process("drain", "--store", store, "--queue", "work", "--deploy-id", "d1")

    def kill(action: str, count: int) -> None:
        if action in ("batch:TerminateJob", "batch:TerminateJobs"):  # its first stop call
            with suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)

    aws.after = kill
    process.wait(timeout=60)
    aws.after = None
    assert process.returncode == -signal.SIGKILL
    assert "drained" not in load_manifest(store, seed, "d1")["window"]
    restored = run("restore", "--store", store, "--deploy-id", "d1")
    assert restored.code == 0, restored.err
    assert restored.err.count("drain never finished") == 1
    assert "warning: deploy d1: its drain never finished; the deploy window is swept from when it began" in restored.err
    assert "swept" in load_manifest(store, seed, "d1")["window"]


# -- kill -9 of restore at every call of its sweep, then a rerun -----------------------------------


def _restore_killed_at(aws: SimulatedAWS, k: int, where: str, deploy: str, every_call: bool) -> tuple[Any, int]:
    """Run restore as a workflow step would, and kill -9 it right after its k-th kill point (tests/test_faults.py);
    the process, and how many SubmitJob calls it had made by then."""
    pid: list[int] = []
    calls, points, submits = [0], [0], [0]
    lock = threading.Lock()

    def after(action: str, count: int) -> None:
        with lock:
            if not pid:
                return
            calls[0] += 1
            submits[0] += action == "batch:SubmitJob"
            if not (every_call or calls[0] == 1 or action in CHANGING) or points[0] >= k:
                return
            points[0] += 1
            hit = points[0] == k
        if hit:
            with suppress(ProcessLookupError):
                os.kill(pid[0], signal.SIGKILL)

    aws.after = after
    process = run_process("restore", "--store", where, "--deploy-id", deploy)
    with lock:
        pid.append(process.pid)
    process.wait(timeout=120)
    aws.after = None
    return process, submits[0]


@pytest.mark.slow
def test_kill_9_of_restore_at_every_call_to_its_last_submit_then_a_rerun_replaces_each_late_job_once(
    aws: SimulatedAWS, seed: Seeder, store: str, run, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(workdir, "lock-ttl: 1\nlease-ttl: 1\nstop-timeout: 10\n")
    monkeypatch.setattr("jobguard.adapters.lease._WAIT_STEP", 0.1)
    seed.queue("work")
    seed.definition("proc")
    kind = store.split(":")[0]
    k, kills = 1, 0
    while True:
        where = f"{store}-{k}" if kind != "dynamodb" else f"dynamodb://{TABLE}-{k}"
        if kind == "dynamodb":
            create_table(seed, f"{TABLE}-{k}")
        deploy = f"d{k}"
        drained = seed.job(jobName=f"k{k}-drained", jobQueue="work", jobDefinition="proc")
        assert run("drain", "--store", where, "--queue", "work", "--deploy-id", deploy).code == 0
        late = _late(seed, f"k{k}-late", "RUNNING")
        after = seed.job(status="PENDING", age=0, jobName=f"k{k}-after", jobQueue="work", jobDefinition="proc", dependsOn=[{"jobId": late}])
        _replace_compute_environment(seed, "work")
        _until(lambda: _status(aws, late) == "FAILED" and _status(aws, after) == "FAILED")  # noqa: B023
        time.sleep(aws.batch.timing.list_lag_seconds)
        process, submits = _restore_killed_at(aws, k, where, deploy, every_call=kind == "file")
        if process.returncode != -signal.SIGKILL:  # it made fewer calls than that: the sweep is over
            assert process.returncode == 0, process.stderr.read()
            break
        kills += 1
        rerun = run("restore", "--store", where, "--deploy-id", deploy)
        assert rerun.code == 0, f"kill at point {k}: {rerun.err}"
        found = replacements_of(aws)
        assert {j: len(found.get(j, [])) for j in (drained, late, after)} == {drained: 1, late: 1, after: 1}, f"kill at point {k}"
        assert aws.batch.jobs[found[after][0]].request["dependsOn"] == [{"jobId": found[late][0]}]
        assert overlapping(aws) == []
        submitted = aws.calls["batch:SubmitJob"]
        assert run("restore", "--store", where, "--deploy-id", deploy).code == 0
        assert aws.calls["batch:SubmitJob"] == submitted
        record_faults(runs=3, faults=1, jobs=3, lost=0, doubled=0)  # what the asserts above established
        if submits >= 3:  # killed after its last SubmitJob: what is left (saves, leases) is tests/test_faults.py's
            break
        k += 1
    print(f"\nkill -9 of restore on {kind}: {kills} kill points, each followed by a rerun and a second restore")
    assert kills >= 5, f"restore was killed only {kills} times"


def test_a_restore_of_some_queues_leaves_the_window_open_for_the_others(aws: SimulatedAWS, seed: Seeder, store: str, run) -> None:
    _world(seed)
    seed.queue("other")
    assert run("drain", "--store", store, "--queue", "work", "--queue", "other", "--deploy-id", "d1").code == 0
    late = seed.job(status="RUNNING", age=0, jobName="late-other", jobQueue="other", jobDefinition="proc")
    _replace_compute_environment(seed, "other")
    _until(lambda: _status(aws, late) == "FAILED")
    time.sleep(aws.batch.timing.list_lag_seconds)
    leg = run("restore", "--store", store, "--deploy-id", "d1", "--queue", "work")  # one matrix leg
    assert leg.code == 0, leg.err
    assert "queue other: not swept by this restore" in leg.out
    assert "swept" not in load_manifest(store, seed, "d1")["window"] and late not in replacements_of(aws)
    restored = run("restore", "--store", store, "--deploy-id", "d1", "--queue", "work", "--queue", "other")
    assert restored.code == 0, restored.err
    assert len(replacements_of(aws)[late]) == 1 and "swept" in load_manifest(store, seed, "d1")["window"]


def test_a_plan_that_puts_nothing_at_risk_opens_no_window(aws: SimulatedAWS, seed: Seeder, store: str, run, workdir: Path) -> None:
    _world(seed)
    change = {"actions": ["update"], "before": {"bucket": "b"}, "after": {"bucket": "b"}}
    bucket = {"address": "aws_s3_bucket.b", "type": "aws_s3_bucket", "change": change}
    (workdir / "plan.json").write_text(json.dumps({"format_version": "1.2", "resource_changes": [bucket]}))
    drained = run("drain", "--store", store, "--queue", "work", "--plan", "plan.json", "--deploy-id", "d1")
    assert drained.code == 0, drained.err
    assert "deploy window" not in drained.out
    assert run("status", "--store", store).out.startswith("no deploys")  # nothing left open for a restore that may never come


@pytest.mark.slow
def test_late_jobs_watched_on_a_deleted_queue_are_waited_for_then_replaced(aws: SimulatedAWS, seed: Seeder, store: str, run) -> None:
    """What `jobguard run`'s watcher records (window.watch) while the apply deletes and makes again a queue
    it did not freeze: restore waits for Batch to end them (about 16 a second), then replaces each once."""
    _world(seed)
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1", "--no-freeze").code == 0
    late = [_late(seed, f"late-{i}", "RUNNABLE") for i in range(20)]  # Batch takes over a second to end them all
    ctx = build_context(resolve(None, {"store": store}), Reporter(out=io.StringIO(), err=io.StringIO()), creating=False)
    manifest = ctx.manifests.load("d1")
    assert manifest is not None
    assert len(watch(ctx, manifest, list(ctx.batch.describe(late).values()))) == 20
    assert watch(ctx, manifest, list(ctx.batch.describe(late).values())) == []  # watched twice: recorded once
    environment = _environment(seed)
    seed.batch.update_job_queue(jobQueue="work", state="DISABLED")
    seed.batch.delete_job_queue(jobQueue="work")
    manifest.note_deleted_queues(["work"])  # the watcher saw it go
    ctx.manifests.save(manifest)
    seed.queue("work", compute_environment=environment)
    assert any(_status(aws, j) != "FAILED" for j in late)  # the restore begins while Batch is still ending them
    restored = run("restore", "--store", store, "--deploy-id", "d1")
    assert restored.code == 0, restored.err
    assert "late jobs of deleted queues to end" in restored.out
    found = replacements_of(aws)
    assert {j: len(found.get(j, [])) for j in late} == dict.fromkeys(late, 1)
    assert all("its queue was deleted" in r["reason"] for r in records(store, seed, "d1").values() if r["job_id"] in late)


@pytest.mark.slow  # retries back off
@pytest.mark.parametrize("fault", [(500, "ServerException"), (429, "TooManyRequestsException"), "drop", "lost-reply"])
def test_the_sweep_rides_out_flaky_aws(aws: SimulatedAWS, seed: Seeder, store: str, run, workdir: Path, fault: Any) -> None:
    configure(workdir, "lookup-window: 2\n")
    running = _killed_late_job(aws, seed, store, run)
    after = seed.job(status="RUNNING", age=0, jobName="late-2", jobQueue="work", jobDefinition="proc")
    aws.batch.finish(after, "FAILED", exit_code=1)
    aws.fault = lambda action, n: fault if action.startswith("batch:") and n % 2 == 1 else None
    restored = run("restore", "--store", store, "--deploy-id", "d1")
    aws.fault = None
    assert restored.code == 0, restored.err
    assert sum(aws.faults.values()) >= 3 and aws.faults["batch:ListJobs"] >= 1
    found = replacements_of(aws)
    assert len(found[running]) == 1 and after not in found and not overlapping(aws)


def test_a_dry_run_restore_tells_the_window_and_changes_nothing(aws: SimulatedAWS, seed: Seeder, store: str, run) -> None:
    running = _killed_late_job(aws, seed, store, run)
    status = run("status", "--store", store, "--deploy-id", "d1")
    assert "deploy window open since" in status.out and "restore sweeps it" in status.out
    before = load_manifest(store, seed, "d1")
    dry = run("restore", "--store", store, "--deploy-id", "d1", "--dry-run")
    assert dry.code == 0, dry.err
    assert "1 late jobs: 1 killed by the deploy" in dry.out
    assert load_manifest(store, seed, "d1") == before and not replacements_of(aws)
    assert run("restore", "--store", store, "--deploy-id", "d1").code == 0
    assert len(replacements_of(aws)[running]) == 1
