"""`jobguard run -- COMMAND` as a user runs it: drain, the command (a stand-in for `terraform apply`
written in Python against the simulated AWS), the watcher, restore; exit codes, signals, kills."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobguard.sim import Seeder, SimulatedAWS

from .conftest import configure, overlapping, records, rename_plan, replacements_of, run_process

DEFINITION = {
    "image": "busybox",
    "command": ["echo", "hello"],
    "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "512"}],
}
# A stand-in for the apply, run as COMMAND: `apply.py STORE [STEP ...]`. Each step is one thing the
# apply (or the application, while it runs) does; `late` and `wait-recorded` together are "the
# application submits a job, and the apply takes longer than one look of the watcher".
APPLY = """\
import json, os, signal, subprocess, sys, time
import boto3

store, steps = sys.argv[1], sys.argv[2:]
batch = boto3.client("batch")
here = os.environ.get("NOTES", os.getcwd())
queue_name, deploy = os.environ.get("QUEUE", "work"), os.environ.get("DEPLOY", "d1")


def recorded(job_id):
    status = subprocess.run(
        [sys.executable, "-m", "jobguard", "status", "--store", store, "--deploy-id", deploy, "--json"], capture_output=True, text=True
    )
    return job_id in status.stdout


def note(name, text=""):
    with open(os.path.join(here, name), "a") as stream:
        stream.write(text + "\\n")


late = None
for step in steps:
    if step == "late":  # the application submits a job while the apply runs
        late = batch.submit_job(
            jobName="late", jobQueue=queue_name, jobDefinition="proc",
            containerOverrides={"environment": [{"name": "MODE", "value": "late"}]},
        )["jobId"]
        note("late", late)
    elif step == "wait-recorded":  # the apply takes a while: bounded, it fails the test if the watcher never records it
        deadline = time.monotonic() + 60
        while not recorded(late):
            assert time.monotonic() < deadline, "the watcher never recorded the late job"
            time.sleep(0.2)
    elif step == "replace-queue":  # the queue is replaced under its name, as Terraform does it
        (queue,) = batch.describe_job_queues(jobQueues=[queue_name])["jobQueues"]
        batch.update_job_queue(jobQueue=queue_name, state="DISABLED")
        batch.delete_job_queue(jobQueue=queue_name)
        time.sleep(float(os.environ.get("DELETION_SECONDS", "0")))  # AWS takes seconds to delete a queue; Terraform waits
        batch.create_job_queue(
            jobQueueName=queue_name, state="ENABLED", priority=1, computeEnvironmentOrder=queue["computeEnvironmentOrder"]
        )
    elif step == "rename-queue":  # the plan renames the queue: Terraform creates the new one, deletes the old
        (queue,) = batch.describe_job_queues(jobQueues=[queue_name])["jobQueues"]
        batch.create_job_queue(
            jobQueueName=queue_name + "-v2", state="ENABLED", priority=1, computeEnvironmentOrder=queue["computeEnvironmentOrder"]
        )
        batch.update_job_queue(jobQueue=queue_name, state="DISABLED")
        batch.delete_job_queue(jobQueue=queue_name)
        time.sleep(float(os.environ.get("DELETION_SECONDS", "0")))
    elif step == "new-revision":
        batch.register_job_definition(jobDefinitionName="proc", type="container", containerProperties=DEFINITION)
    elif step == "ready":  # tell the test, then wait for it (bounded)
        note("ready", str(os.getpid()))
        deadline = time.monotonic() + 60
        while not os.path.exists(os.path.join(here, "go")) and time.monotonic() < deadline:
            time.sleep(0.05)
    elif step == "on-sigterm-save":  # as Terraform: a first signal finishes the calls in flight and saves the state
        def saving(signum, frame):
            note("signals", signal.Signals(signum).name)
            time.sleep(0.5)
            note("saved")
            sys.exit(1)
        signal.signal(signal.SIGTERM, saving)
    elif step == "ignore-sigterm":
        signal.signal(signal.SIGTERM, lambda signum, frame: note("signals", signal.Signals(signum).name))
    elif step.startswith(("touch:", "rm:", "sleep:")):  # touch:NAME, rm:NAME, sleep:SECONDS
        verb, _, value = step.partition(":")
        if verb == "sleep":
            time.sleep(float(value))
        elif verb == "touch":
            note(value)
        else:
            os.remove(os.path.join(here, value))
    elif step.startswith("exit-"):
        note("done")
        sys.exit(int(step[len("exit-"):]))
note("done")
""".replace("DEFINITION)", f"{DEFINITION!r})")


@pytest.fixture
def apply_py(workdir: Path) -> Path:
    path = workdir / "apply.py"
    path.write_text(APPLY)
    return path


def _world(seed: Seeder) -> str:
    """Queue `work`, definition `proc`, and one job running on it: drained before the apply."""
    seed.queue("work")
    seed.definition("proc", containerProperties=DEFINITION)
    return seed.job(jobName="nightly", jobQueue="work", jobDefinition="proc")


def _wait_for(path: Path, seconds: float = 60, process: subprocess.Popen[str] | None = None) -> str:
    """The file's text once it exists (bounded); fails at once if `process` ends first."""
    deadline = time.monotonic() + seconds
    while not path.exists():
        if process is not None and process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"jobguard ended ({process.returncode}) before {path.name}:\n{out}\n{err}")
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.05)
    return path.read_text()


def _exactly_once(aws: SimulatedAWS, originals: list[str]) -> tuple[list[str], list[str]]:
    """(lost, doubled) among `originals`."""
    made = replacements_of(aws)
    return [o for o in originals if not made.get(o)], [o for o in originals if len(made.get(o, [])) > 1]


@pytest.mark.slow
def test_a_job_submitted_during_the_apply_to_a_queue_it_replaces_comes_back_once_on_the_new_queue(
    seed: Seeder, store: str, run: Any, aws: SimulatedAWS, apply_py: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drained = _world(seed)
    monkeypatch.setenv("DELETION_SECONDS", "1.5")  # three looks of the watcher
    steps = ["late", "wait-recorded", "replace-queue", "new-revision"]
    result = run(
        "run", "--store", store, "--queue", "work", "--deploy-id", "d1", "--watch-interval", "0.5",
        "--", sys.executable, str(apply_py), store, *steps,
    )  # fmt: skip
    assert result.code == 0, result.err
    late = (workdir / "late").read_text().strip()
    assert _exactly_once(aws, [drained, late]) == ([], [])
    (replacement,) = replacements_of(aws)[late]
    job = aws.batch.jobs[replacement]
    assert job.queue_arn.endswith(":job-queue/work") and not job.queue_deleted  # on the queue made again
    detail = seed.batch.describe_jobs(jobs=[replacement])["jobs"][0]
    assert detail["jobDefinition"].endswith("proc:2")  # the deploy's revision
    assert {"name": "MODE", "value": "late"} in detail["container"]["environment"]  # as it was submitted
    stored = records(store, seed, "d1")
    assert stored[late]["outcome"] == "resubmitted" and stored[drained]["outcome"] == "resubmitted"
    assert overlapping(aws) == []
    assert "queue work: deleted during the command" in result.out


@pytest.mark.slow
def test_the_watcher_rides_out_failing_listings(
    seed: Seeder, run: Any, aws: SimulatedAWS, apply_py: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drained = _world(seed)
    failing = workdir / "fail-listings"  # while it exists, every ListJobs fails (HTTP 500), retries and all
    aws.fault = lambda action, n: (500, "InternalError") if action == "batch:ListJobs" and failing.exists() else None
    monkeypatch.setenv("DELETION_SECONDS", "1.5")
    store = f"file://{workdir}/manifests"
    steps = ["touch:fail-listings", "late", "sleep:2", "rm:fail-listings", "wait-recorded", "replace-queue"]  # seen only after
    result = run(
        "run", "--store", store, "--queue", "work", "--deploy-id", "d1", "--watch-interval", "0.5",
        "--", sys.executable, str(apply_py), store, *steps,
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "queue work: cannot be looked at now" in result.err  # said once, not once a look
    assert result.err.count("cannot be looked at now") == 1
    late = (workdir / "late").read_text().strip()
    assert _exactly_once(aws, [drained, late]) == ([], [])


BURST = """\
import boto3, os, sys, time
batch = boto3.client("batch")
count, seconds = int(sys.argv[1]), float(sys.argv[2])
ids = []
for i in range(count):  # the application, submitting all through the apply
    ids.append(batch.submit_job(jobName=f"late-{i}", jobQueue="work", jobDefinition="proc")["jobId"])
    time.sleep(seconds / count)
open("late-ids", "w").write("\\n".join(ids))
(queue,) = batch.describe_job_queues(jobQueues=["work"])["jobQueues"]
batch.update_job_queue(jobQueue="work", state="DISABLED")  # SubmitJob refused from here on
time.sleep(3)  # Terraform waits for the queue to be disabled (30 s before its first look) before it deletes it
batch.delete_job_queue(jobQueue="work")
time.sleep(count / 16 + 1)  # Batch ends a deleted queue's jobs at about 16 a second; Terraform waits for the deletion
batch.create_job_queue(jobQueueName="work", state="ENABLED", priority=1, computeEnvironmentOrder=queue["computeEnvironmentOrder"])
"""


@pytest.mark.slow
def test_a_hundred_jobs_submitted_through_the_apply_come_back_once_each(
    seed: Seeder, run: Any, aws: SimulatedAWS, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    drained = _world(seed)
    (workdir / "burst.py").write_text(BURST)
    store = f"file://{workdir}/manifests"
    result = run("run", "--store", store, "--queue", "work", "--deploy-id", "d1", "--", sys.executable, "burst.py", "100", "5")
    assert result.code == 0, result.err
    late = (workdir / "late-ids").read_text().split()
    assert len(late) == 100 and _exactly_once(aws, [drained, *late]) == ([], [])
    assert overlapping(aws) == []
    stored = records(store, seed, "d1")
    seen = sorted(
        datetime.fromisoformat(stored[i]["times"]["watched"].replace("Z", "+00:00")).timestamp() - stored[i]["created_at"] / 1000
        for i in late
    )
    with capsys.disabled():  # the figures docs and notes quote (watch-interval 2 s, ListJobs lag 0.3 s)
        print(f"\nsubmitted -> recorded: median {seen[50]:.2f} s, max {seen[-1]:.2f} s over {len(seen)} jobs")
    assert seen[-1] < 2.0 + 5  # one interval, plus a slow look under load


@pytest.mark.slow
def test_a_renamed_queue_left_open_brings_its_late_job_back_once_on_the_new_name(
    seed: Seeder, run: Any, aws: SimulatedAWS, apply_py: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drained = _world(seed)
    monkeypatch.setenv("DELETION_SECONDS", "1.5")
    plan = rename_plan(workdir)
    store = f"file://{workdir}/manifests"
    result = run(
        "run", "--store", store, "--queue", "work", "--plan", str(plan), "--no-freeze", "--deploy-id", "d1",
        "--watch-interval", "0.5", "--", sys.executable, str(apply_py), store, "late", "wait-recorded", "rename-queue",
    )  # fmt: skip
    assert result.code == 0, result.err
    late = (workdir / "late").read_text().strip()
    assert _exactly_once(aws, [drained, late]) == ([], [])
    assert {aws.batch.jobs[r].queue_arn.rsplit("/", 1)[-1] for ids in replacements_of(aws).values() for r in ids} == {"work-v2"}
    assert "queue work: deleted during the command" in result.out
    assert "queue work-v2: deleted" not in result.out  # not there yet at first: created by the apply, not deleted


def test_a_failed_command_is_still_restored_and_its_exit_code_kept(
    seed: Seeder, run: Any, aws: SimulatedAWS, apply_py: Path, workdir: Path
) -> None:
    drained = _world(seed)
    store = f"file://{workdir}/manifests"
    result = run("run", "--store", store, "--queue", "work", "--deploy-id", "d1", "--", sys.executable, str(apply_py), store, "exit-3")
    assert result.code == 3, result.err
    assert _exactly_once(aws, [drained]) == ([], [])
    assert records(store, seed, "d1")[drained]["outcome"] == "resubmitted"
    assert "the command ended with exit code 3; restoring deploy d1" in result.out


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["no-such-command-jobguard"], "run: command 'no-such-command-jobguard': not found on PATH; nothing was drained"),
        (["./not-executable.sh"], "run: command './not-executable.sh': not executable; nothing was drained"),
        (["./a-directory"], "run: command './a-directory': is a directory; nothing was drained"),
        ([], "run: name the command to run after `--`"),
    ],
)
def test_a_command_that_cannot_run_drains_nothing(
    seed: Seeder, run: Any, aws: SimulatedAWS, workdir: Path, command: list[str], message: str
) -> None:
    job = _world(seed)
    (workdir / "not-executable.sh").write_text("#!/bin/sh\nexit 0\n")
    (workdir / "a-directory").mkdir()
    result = run("run", "--store", f"file://{workdir}/manifests", "--queue", "work", "--deploy-id", "d1", "--", *command)
    assert result.code == 2
    assert result.err.splitlines()[0].startswith(f"error: {message}")
    assert aws.stop_calls == 0 and not aws.batch.jobs[job].stop_requested and aws.batch.jobs[job].stop_at is None
    assert not (workdir / "manifests").exists()  # no manifest, no lease


def test_dry_run_in_the_config_file_runs_no_command(seed: Seeder, run: Any, aws: SimulatedAWS, workdir: Path) -> None:
    job = _world(seed)
    configure(workdir, "dry-run: true\n")
    marker = workdir / "ran"
    result = run("run", "--store", f"file://{workdir}/m", "--queue", "work", "--", sys.executable, "-c", f"open({str(marker)!r}, 'w')")
    assert result.code == 2 and "run: dry-run is set" in result.err
    assert not marker.exists() and aws.calls["batch:TerminateJobs"] + aws.calls["batch:TerminateJob"] == 0
    assert aws.batch.jobs[job].status == "RUNNING"


def test_arguments_after_the_separator_reach_the_command_as_they_are(seed: Seeder, run: Any, aws: SimulatedAWS, workdir: Path) -> None:
    _world(seed)
    script = "import json, sys; open('argv.json', 'w').write(json.dumps(sys.argv[1:]))"
    words = ["--queue", "other", "--", "a b", "$HOME", "*"]
    command = [sys.executable, "-c", script, *words]
    result = run("run", "--store", f"file://{workdir}/m", "--queue", "work", "--deploy-id", "d1", "--", *command)
    assert result.code == 0, result.err
    assert (workdir / "argv.json").read_text() == '["--queue", "other", "--", "a b", "$HOME", "*"]'


def test_a_drain_that_did_not_finish_cleanly_starts_no_command(
    seed: Seeder, run: Any, aws: SimulatedAWS, apply_py: Path, workdir: Path
) -> None:
    job = _world(seed)
    aws.batch.jobs[job].stop_seconds = 30.0  # its container takes longer to stop than the drain waits
    store = f"file://{workdir}/manifests"
    result = run(
        "run", "--store", store, "--queue", "work", "--deploy-id", "d1", "--stop-timeout", "0.5",
        "--", sys.executable, str(apply_py), store, "exit-0",
    )  # fmt: skip
    assert result.code == 1
    assert not (workdir / "done").exists()
    assert "the command was not started: the drain did not finish cleanly (exit 1); restoring" in result.err
    assert replacements_of(aws) == {}  # still stopping: never resubmitted beside itself
    assert records(store, seed, "d1")[job]["outcome"] == "terminating"


def _started(seed: Seeder, workdir: Path, apply_py: Path, store: str, *steps: str) -> subprocess.Popen[str]:
    """`jobguard run` as a separate process, as a CI job runs it, stopped at the command's `ready` step."""
    process = run_process(
        "run", "--store", store, "--queue", "work", "--deploy-id", "d1", "--watch-interval", "0.5",
        "--", sys.executable, str(apply_py), store, *steps,
    )  # fmt: skip
    _wait_for(workdir / "ready", process=process)
    return process


@pytest.mark.slow
def test_kill_9_during_the_command_then_restore_by_hand(
    seed: Seeder, store: str, run: Any, aws: SimulatedAWS, apply_py: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drained = _world(seed)
    monkeypatch.setenv("DELETION_SECONDS", "1.5")
    # Killed once the watcher has recorded the late job and seen its queue deleted: a deletion after jobguard
    # died is seen by nobody (README, "Why the watcher matters").
    process = _started(seed, workdir, apply_py, store, "late", "wait-recorded", "replace-queue", "ready", "new-revision")
    process.kill()
    process.wait(timeout=60)
    (workdir / "go").write_text("")
    out, _ = process.communicate(timeout=120)  # the command kept jobguard's stdout: it ends when the command does
    _wait_for(workdir / "done")  # the apply goes on without jobguard (a session of its own), and ends
    assert "if jobguard is stopped before it restores, restore by hand: jobguard restore --deploy-id d1" in out
    late = (workdir / "late").read_text().strip()
    assert replacements_of(aws) == {}
    result = run("restore", "--store", store, "--deploy-id", "d1")
    assert result.code == 0, result.err
    assert _exactly_once(aws, [drained, late]) == ([], [])
    assert overlapping(aws) == []
    again = run("restore", "--store", store, "--deploy-id", "d1")
    assert again.code == 0 and _exactly_once(aws, [drained, late]) == ([], [])


@pytest.mark.slow
def test_sigterm_is_passed_to_the_command_and_waited_for_then_restored(
    seed: Seeder, aws: SimulatedAWS, apply_py: Path, workdir: Path
) -> None:
    drained = _world(seed)
    store = f"file://{workdir}/manifests"
    process = _started(seed, workdir, apply_py, store, "on-sigterm-save", "ready")
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert (workdir / "signals").read_text().split() == ["SIGTERM"]  # once: not also through its process group
    assert (workdir / "saved").exists()  # it finished saving before jobguard went on
    assert process.returncode == 1, err  # the command's
    assert "SIGTERM: passed to the command; waiting for it to end (Terraform saves its state), then restoring" in out
    assert _exactly_once(aws, [drained]) == ([], [])
    assert records(store, seed, "d1")[drained]["outcome"] == "resubmitted"


@pytest.mark.slow
def test_a_signal_during_the_drain_stops_it_restores_and_starts_no_command(
    seed: Seeder, run: Any, aws: SimulatedAWS, apply_py: Path, workdir: Path
) -> None:
    running = _world(seed)
    queued = seed.job(status="RUNNABLE", jobName="queued", jobQueue="work", jobDefinition="proc")
    store = f"file://{workdir}/manifests"
    log = workdir / "jobguard.out"
    with log.open("w") as out:  # queued jobs drained at once, then a long grace period for the running one
        process = subprocess.Popen(
            [sys.executable, "-m", "jobguard", "run", "--store", store, "--queue", "work", "--deploy-id", "d1", "--grace", "10m",
             "--", sys.executable, str(apply_py), store, "exit-0"],
            stdout=out, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while "running jobs to finish" not in log.read_text():
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 128 + signal.SIGTERM, log.read_text()  # at once, not after the grace period
    assert not (workdir / "done").exists()  # never started
    assert "SIGTERM: the drain stops here and the command will not be started" in log.read_text()
    assert _exactly_once(aws, [queued]) == ([], [])  # what the drain stopped is back
    assert running not in replacements_of(aws) and aws.batch.jobs[running].status == "RUNNING"  # never stopped
    again = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d2", "--lock-timeout", "0")  # the queue is free again
    assert again.code == 0, again.err


@pytest.mark.slow
def test_a_second_pipeline_on_the_same_queues_waits_and_starts_nothing_while_the_apply_renews_the_lease(
    seed: Seeder, run: Any, aws: SimulatedAWS, apply_py: Path, workdir: Path
) -> None:
    drained = _world(seed)
    store = f"file://{workdir}/manifests"
    # Deploy d1 is in its apply, longer than lock-ttl (2 s here): only the renewed lease keeps d2 out.
    first = _started(seed, workdir, apply_py, store, "sleep:3", "ready")
    other = workdir / "other"
    other.mkdir()
    second = run(
        "run", "--store", store, "--queue", "work", "--deploy-id", "d2", "--lock-timeout", "1",
        "--", sys.executable, "-c", f"open({str(other / 'started')!r}, 'w')",
    )  # fmt: skip
    assert second.code == 3, second.err
    assert "deploy d1" in second.err and not (other / "started").exists()
    (workdir / "go").write_text("")
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert _exactly_once(aws, [drained]) == ([], [])


@pytest.mark.slow
def test_a_second_signal_leaves_the_deploy_open_with_a_hint(
    seed: Seeder, run: Any, aws: SimulatedAWS, apply_py: Path, workdir: Path
) -> None:
    drained = _world(seed)
    store = f"file://{workdir}/manifests"
    process = _started(seed, workdir, apply_py, store, "ignore-sigterm", "ready")
    process.send_signal(signal.SIGTERM)
    _wait_for(workdir / "signals")
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    (workdir / "go").write_text("")
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM
    assert "interrupted twice (SIGTERM): deploy d1 left open; the command may still be running" in err
    assert f"hint: once it has ended: jobguard restore --deploy-id d1 --store {store}" in err
    assert replacements_of(aws) == {}
    _wait_for(workdir / "done")
    result = run("restore", "--store", store, "--deploy-id", "d1")
    assert result.code == 0, result.err
    assert _exactly_once(aws, [drained]) == ([], [])


@pytest.mark.slow
def test_the_watcher_looks_within_the_rate_budget(seed: Seeder, aws: SimulatedAWS, apply_py: Path, workdir: Path) -> None:
    _world(seed)
    seed.queue("other")
    configure(workdir, "rate: 4\nburst: 2\n")  # jobguard's budget per Batch action...
    aws.rate, aws.burst = 5.0, 5.0  # ...just under what the (simulated) account allows: AWS throttles above it
    store = f"file://{workdir}/manifests"
    process = run_process(
        "run", "--store", store, "--queue", "work", "--queue", "other", "--deploy-id", "d1", "--watch-interval", "0.1",
        "--", sys.executable, str(apply_py), store, "ready",
    )  # fmt: skip
    _wait_for(workdir / "ready", process=process)
    before, started = dict(aws.calls), time.monotonic()
    time.sleep(3)  # the apply runs: the watcher looks as often as its budget lets it
    listed = aws.calls["batch:ListJobs"] - before.get("batch:ListJobs", 0)
    described = aws.calls["batch:DescribeJobQueues"] - before.get("batch:DescribeJobQueues", 0)
    elapsed = time.monotonic() - started
    (workdir / "go").write_text("")
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert 4 <= listed <= 4 * elapsed + 2 + 1 and described <= 4 * elapsed + 2 + 1  # paced: at most rate x time + burst
    assert sum(aws.throttled.values()) == 0


def test_the_simulated_delete_job_queue_ends_its_jobs_and_a_new_queue_of_the_name_does_not_list_them(
    seed: Seeder, aws: SimulatedAWS
) -> None:
    job = _world(seed)
    with pytest.raises(seed.batch.exceptions.ClientException, match="must be DISABLED"):
        seed.batch.delete_job_queue(jobQueue="work")
    (queue,) = seed.batch.describe_job_queues(jobQueues=["work"])["jobQueues"]
    seed.batch.update_job_queue(jobQueue="work", state="DISABLED")
    seed.batch.delete_job_queue(jobQueue="work")
    seed.queue("work", compute_environment=queue["computeEnvironmentOrder"][0]["computeEnvironment"])
    (detail,) = seed.batch.describe_jobs(jobs=[job])["jobs"]
    assert detail["status"] == "FAILED" and "exitCode" not in detail.get("container", {})
    listed = seed.batch.list_jobs(jobQueue="work", filters=[{"name": "AFTER_CREATED_AT", "values": ["0"]}])["jobSummaryList"]
    assert listed == []


# -- the ready-to-copy examples, run as their CI would run them -------------------------------------

ROOT = Path(__file__).resolve().parent.parent
PLAN = ROOT / "tests" / "plans" / "queue-replace.json"  # replaces science-queue; etl-queue unchanged
# `terraform` for the examples: plan writes the plan file, show prints a plan that replaces
# science-queue, apply runs apply.py (queue replaced, new revision) and exits with APPLY_EXIT.
TERRAFORM = """\
#!/bin/sh
case "$1" in
  init) ;;
  plan) for arg; do case "$arg" in -out=*) : > "${arg#-out=}" ;; esac; done ;;
  show) cat "$PLAN_JSON" ;;
  apply) "$PYTHON" "$APPLY_PY" "$STORE" replace-queue new-revision "exit-${APPLY_EXIT:-0}" ;;
  *) echo "terraform stand-in: $*" >&2; exit 64 ;;
esac
"""


@pytest.fixture
def examples_world(seed: Seeder, workdir: Path, apply_py: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """science-queue (at risk) and etl-queue (not), a job on each; a `terraform` stand-in first on PATH."""
    seed.definition("proc", containerProperties=DEFINITION)
    jobs = {}
    for queue in ("science-queue", "etl-queue"):
        seed.queue(queue)
        jobs[queue] = seed.job(jobName=f"{queue}-job", jobQueue=queue, jobDefinition="proc")
    bin_dir = workdir / "bin"
    bin_dir.mkdir()
    (bin_dir / "terraform").write_text(TERRAFORM)
    (bin_dir / "terraform").chmod(0o755)
    store = f"file://{workdir}/manifests"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    for key, value in {
        "PLAN_JSON": str(PLAN), "PYTHON": sys.executable, "APPLY_PY": str(apply_py), "STORE": store,
        "QUEUE": "science-queue", "NOTES": str(workdir),
    }.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    return {**jobs, "store": store}


def _examples_check(aws: SimulatedAWS, seed: Seeder, world: dict[str, str], deploy_id: str) -> None:
    at_risk, safe = world["science-queue"], world["etl-queue"]
    assert _exactly_once(aws, [at_risk]) == ([], [])
    assert safe not in replacements_of(aws) and not aws.batch.jobs[safe].terminated  # not at risk: left running
    assert records(world["store"], seed, deploy_id)[at_risk]["outcome"] == "resubmitted"


@pytest.mark.slow
def test_the_shell_example(seed: Seeder, aws: SimulatedAWS, workdir: Path, examples_world: dict[str, str]) -> None:
    env = {
        **os.environ, "JOBGUARD_STORE": examples_world["store"], "JOBGUARD_QUEUES": "science-queue etl-queue",
        "DEPLOY_ID": "jenkins-17", "APPLY_EXIT": "0",
    }  # fmt: skip
    process = subprocess.run([str(ROOT / "examples" / "shell" / "deploy.sh")], env=env, cwd=workdir, capture_output=True, text=True)
    assert process.returncode == 0, process.stderr
    _examples_check(aws, seed, examples_world, "jenkins-17")
    failed = subprocess.run(
        [str(ROOT / "examples" / "shell" / "deploy.sh")], env={**env, "DEPLOY_ID": "jenkins-18", "APPLY_EXIT": "7"}, cwd=workdir
    )
    assert failed.returncode == 7  # the apply's


@pytest.mark.slow
def test_the_gitlab_ci_example(seed: Seeder, aws: SimulatedAWS, workdir: Path, examples_world: dict[str, str]) -> None:
    path = ROOT / "examples" / "gitlab-ci" / ".gitlab-ci.yml"
    check = subprocess.run(
        [str(Path(sys.executable).parent / "check-jsonschema"), "--builtin-schema", "vendor.gitlab-ci", str(path)],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    config = yaml.safe_load(path.read_text())
    variables = {**config["variables"], "JOBGUARD_STORE": examples_world["store"], "JOBGUARD_SIGNING_KEY": f"file:{workdir}/key"}
    env = {**os.environ, **variables, "CI_PIPELINE_ID": "77"}
    for job in ("plan", "deploy"):  # each line as the runner runs it; jobguard is installed already
        for line in config[job]["script"]:
            if "pip install" in line:
                continue
            process = subprocess.run(["bash", "-e", "-c", line], env=env, cwd=workdir, capture_output=True, text=True)
            assert process.returncode == 0, f"{line}\n{process.stdout}\n{process.stderr}"
    _examples_check(aws, seed, examples_world, "gitlab-77")


@pytest.mark.slow
def test_the_atlantis_example(seed: Seeder, aws: SimulatedAWS, workdir: Path, examples_world: dict[str, str]) -> None:
    project = workdir / "infra"
    project.mkdir()
    settings = yaml.safe_load((ROOT / "examples" / "atlantis" / ".jobguard.yml").read_text())
    settings.update(store=examples_world["store"], **{"signing-key": f"file:{workdir}/key"})
    (project / ".jobguard.yml").write_text(yaml.safe_dump(settings) + (workdir / ".jobguard.yml").read_text())
    (project / "tfplan").write_text("")
    config = yaml.safe_load((ROOT / "examples" / "atlantis" / "atlantis.yaml").read_text())
    (workflow,) = {p["workflow"] for p in config["projects"]}
    env = {
        **os.environ, "PLANFILE": str(project / "tfplan"), "DIR": str(project), "BASE_REPO_NAME": "infra-live",
        "PULL_NUM": "42", "PROJECT_NAME": "batch", "HEAD_COMMIT": "0123456789abcdef0123", "WORKSPACE": "default",
    }  # fmt: skip
    for step in config["workflows"][workflow]["apply"]["steps"]:  # `run` steps, as Atlantis runs them: sh -c, in the project's dir
        process = subprocess.run(["sh", "-c", step["run"]], env=env, cwd=project, capture_output=True, text=True)
        assert process.returncode == 0, f"{step['run']}\n{process.stdout}\n{process.stderr}"
    _examples_check(aws, seed, examples_world, "atlantis-infra-live-42-batch-0123456789ab")
