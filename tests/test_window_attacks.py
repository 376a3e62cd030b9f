"""Attacks on the deploy window (issue 23) and `jobguard run` (issue 24): what a hostile user and a
flaky AWS do that the first tests did not, each kept as the test that failed before its fix."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from jobguard.domain.window import KILLED, OWN, judge
from jobguard.sim import Seeder, SimulatedAWS

from .conftest import configure, overlapping, records, replacements_of, run_process
from .test_run import APPLY, DEFINITION
from .test_window import _late, _replace_compute_environment, _restore_killed_at, _status, _until, _world

HOST = "Host EC2 (instance i-0e234208f6fc9291f) terminated."


# -- the rule --------------------------------------------------------------------------------------


def test_an_earlier_attempts_exit_code_does_not_make_a_deploy_kill_its_own() -> None:
    """Attempt 1 failed on its own (exit 1) and Batch's retryStrategy queued it again; the deploy then
    deleted its queue. Only how the job ended counts: the last attempt, not an earlier one."""
    earlier = {"container": {"exitCode": 1}, "statusReason": "Essential container in task exited", "startedAt": 1_000, "stoppedAt": 60_000}
    queued_again = {"status": "FAILED", "statusReason": "Job queue deleted", "attempts": [earlier], "stoppedAt": 900_000, "dependsOn": []}
    assert judge(queued_again, queue_gone=True).kind == KILLED
    assert judge({**queued_again, "statusReason": ""}, queue_gone=True).kind == KILLED
    # the last attempt is how it ended: its own exit code still counts
    last = {**earlier, "container": {"exitCode": 2}, "startedAt": 300_000, "stoppedAt": 900_000}
    assert judge({**queued_again, "attempts": [earlier, last]}, queue_gone=True).kind == OWN
    assert judge({**queued_again, "attempts": [], "container": {"exitCode": 3}}, queue_gone=True).kind == OWN
    # its container still shows the earlier attempt's exit code: stale, the job ended later
    assert judge({**queued_again, "container": {"exitCode": 1}}, queue_gone=True).kind == KILLED


@pytest.mark.parametrize("deploy", ["queue-delete-7", "delete-queue-then-queue-delete"])
def test_a_job_jobguard_stopped_is_never_taken_for_a_deploy_kill(deploy: str) -> None:
    """Another deploy's drain stopped it (its manifest owns it): whatever the deploy id says, and even
    on a queue that is gone now, resubmitting it here would double it."""
    stopped = {"status": "FAILED", "statusReason": f"jobguard: drained for deploy {deploy}", "dependsOn": []}
    assert judge(stopped).kind == OWN
    assert judge(stopped, queue_gone=True).kind == OWN
    double = {**stopped, "statusReason": "jobguard: double of job abc (deploy queue-deleted)"}
    assert judge(double, queue_gone=True).kind == OWN


# -- clocks ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("skew", [-150.0, 150.0])
def test_a_runner_whose_clock_is_minutes_off_still_sweeps_the_window(
    aws: SimulatedAWS, seed: Seeder, run: Any, workdir: Path, skew: float
) -> None:
    """The file store's clock is the runner's; createdAt and stoppedAt are Batch's. A runner minutes
    ahead of AWS (skew < 0: Batch behind) opened the window after the late job was created by Batch's
    clock; one minutes behind closed it before. Either way the late job the apply killed is lost unless
    the window is kept on Batch's clock."""
    aws.batch.offset = skew
    drained = _world(seed)
    store = f"file://{workdir}/manifests"
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    late = _late(seed, "late-running", "RUNNING")
    _replace_compute_environment(seed, "work")
    _until(lambda: _status(aws, late) == "FAILED")
    time.sleep(aws.batch.timing.list_lag_seconds)
    restored = run("restore", "--store", store, "--deploy-id", "d1")
    assert restored.code == 0, restored.err
    assert {j: len(v) for j, v in replacements_of(aws).items()} == {drained: 1, late: 1}
    assert records(store, seed, "d1")[late]["outcome"] == "resubmitted"
    assert not overlapping(aws)


# -- jobguard run ----------------------------------------------------------------------------------


@pytest.fixture
def apply_py(workdir: Path) -> Path:
    path = workdir / "apply.py"
    path.write_text(APPLY)
    return path


@pytest.mark.slow
def test_a_command_that_leaves_the_apply_running_in_the_background_is_waited_for(
    seed: Seeder, run: Any, aws: SimulatedAWS, apply_py: Path, workdir: Path
) -> None:
    """COMMAND starts the apply in the background and exits at once (`terraform apply &`, a wrapper that
    forks): restoring then would submit the drained job to the queue the apply is about to delete. The
    processes COMMAND left in its process group are waited for."""
    seed.queue("work")
    seed.definition("proc", containerProperties=DEFINITION)
    drained = seed.job(jobName="nightly", jobQueue="work", jobDefinition="proc")
    store = f"file://{workdir}/manifests"
    background = f'"{sys.executable}" "{apply_py}" "{store}" sleep:1.5 replace-queue new-revision touch:applied &'
    result = run("run", "--store", store, "--queue", "work", "--deploy-id", "d1", "--", "sh", "-c", background)
    assert result.code == 0, result.err
    assert (workdir / "applied").exists()  # restore came after the apply, not beside it
    (replacement,) = replacements_of(aws)[drained]
    assert not aws.batch.jobs[replacement].queue_deleted  # on the queue made again, not killed with the old one
    assert "processes of the command still run" in result.out
    assert not overlapping(aws)


def test_a_job_a_spot_reclaim_killed_before_the_drain_began_is_not_the_deploys(
    aws: SimulatedAWS, seed: Seeder, run: Any, workdir: Path
) -> None:
    """Created 20 s before the drain, its instance reclaimed before the drain began: it ended before the
    deploy could touch it, so it is the application's to retry, not jobguard's (it would be doubled)."""
    drained = _world(seed)
    reclaimed = seed.job(status="RUNNING", age=20, jobName="spot", jobQueue="work", jobDefinition="proc")
    with aws.batch.lock:
        aws.batch.jobs[reclaimed].reason = HOST
    aws.batch.set_status(reclaimed, "FAILED")
    aws.batch.advance_clock(2.5)  # the drain begins a moment later (on Batch's clock, which its answers' Date carries)
    store = f"file://{workdir}/manifests"
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    late = _late(seed, "late-running", "RUNNING")
    _replace_compute_environment(seed, "work")
    _until(lambda: _status(aws, late) == "FAILED")
    time.sleep(aws.batch.timing.list_lag_seconds)
    restored = run("restore", "--store", store, "--deploy-id", "d1")
    assert restored.code == 0, restored.err
    assert {j: len(v) for j, v in replacements_of(aws).items()} == {drained: 1, late: 1}
    assert f"spot [{reclaimed}]: ended before the deploy began" in restored.out


@pytest.mark.slow
def test_run_with_stdin_closed(seed: Seeder, aws: SimulatedAWS, workdir: Path) -> None:
    """A runner (or `cron`, `nohup ... <&-`) starts jobguard with no stdin at all: Python's sys.stdin is None.
    The command runs (its stdin closed too), and the drained job comes back once."""
    seed.queue("work")
    seed.definition("proc", containerProperties=DEFINITION)
    drained = seed.job(jobName="nightly", jobQueue="work", jobDefinition="proc")
    store = f"file://{workdir}/manifests"
    jobguard = " ".join(
        f"'{word}'"
        for word in [
            sys.executable,
            "-m",
            "jobguard",
            "run",
            "--store",
            store,
            "--queue",
            "work",
            "--deploy-id",
            "d1",
            "--",
            "touch",
            "ran",
        ]
    )
    done = subprocess.run(["sh", "-c", f"exec {jobguard} 0<&-"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (workdir / "ran").exists()
    assert {j: len(v) for j, v in replacements_of(aws).items()} == {drained: 1}


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the watcher's thread dies of it first
def test_a_bug_while_the_command_runs_still_restores(
    seed: Seeder, run: Any, aws: SimulatedAWS, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever breaks inside jobguard while the apply runs (here: the watcher), the drained jobs are
    restored before it exits: the run's promise is restore whatever happens, and nobody else will."""
    seed.queue("work")
    seed.definition("proc", containerProperties=DEFINITION)
    drained = seed.job(jobName="nightly", jobQueue="work", jobDefinition="proc")

    def broken(self: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr("jobguard.commands.watcher.Watcher.look", broken)
    result = run("run", "--store", f"file://{workdir}/m", "--queue", "work", "--deploy-id", "d1", "--", "touch", "ran")
    assert result.code == 5, result.err
    assert "RuntimeError: a bug" in result.err
    assert (workdir / "ran").exists()
    assert {j: len(v) for j, v in replacements_of(aws).items()} == {drained: 1}


@pytest.mark.slow
def test_two_restores_at_once_sweep_and_replace_each_late_job_once(aws: SimulatedAWS, seed: Seeder, store: str, run: Any) -> None:
    drained = _world(seed)
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    late = [_late(seed, f"late-{i}", "RUNNING") for i in range(5)]
    _replace_compute_environment(seed, "work")
    _until(lambda: all(_status(aws, j) == "FAILED" for j in late))
    time.sleep(aws.batch.timing.list_lag_seconds)
    both = [run_process("restore", "--store", store, "--deploy-id", "d1") for _ in range(2)]
    codes = [p.wait(timeout=120) for p in both]
    assert codes == [0, 0], [p.communicate() for p in both]
    assert {j: len(v) for j, v in replacements_of(aws).items()} == dict.fromkeys([drained, *late], 1)
    assert not overlapping(aws)


@pytest.mark.slow
def test_restore_killed_in_its_sweep_then_a_new_deploy_instead_of_a_rerun(
    aws: SimulatedAWS, seed: Seeder, run: Any, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Restore of d1 is killed (-9) at each call up to its last SubmitJob; nobody reruns it: the next pipeline's
    deploy d2 drains the same queue, then a restore of every open deploy runs. Each job once, none beside its original."""
    configure(workdir, "lock-ttl: 1\nlease-ttl: 1\nstop-timeout: 10\n")
    monkeypatch.setattr("jobguard.adapters.lease._WAIT_STEP", 0.1)
    seed.queue("work")
    seed.definition("proc")
    k = 1
    while True:
        where = f"file://{workdir}/m{k}"
        first = seed.job(jobName=f"k{k}-drained", jobQueue="work", jobDefinition="proc")
        assert run("drain", "--store", where, "--queue", "work", "--deploy-id", f"a{k}").code == 0
        late = _late(seed, f"k{k}-late", "RUNNING")
        _replace_compute_environment(seed, "work")
        _until(lambda: _status(aws, late) == "FAILED")  # noqa: B023
        time.sleep(aws.batch.timing.list_lag_seconds)
        process, submits = _restore_killed_at(aws, k, where, f"a{k}", every_call=True)
        if process.returncode != -signal.SIGKILL:
            assert process.returncode == 0, process.stderr.read()
            break
        time.sleep(1.2)  # lock-ttl: the dead restore's leases are free
        second = seed.job(jobName=f"k{k}-second", jobQueue="work", jobDefinition="proc")
        drained = run("drain", "--store", where, "--queue", "work", "--deploy-id", f"b{k}")
        assert drained.code == 0, f"kill at {k}: {drained.err}"
        time.sleep(1.2)  # lease-ttl: nobody restores b{k} as its own; a restore of every open deploy does
        restored = run("restore", "--store", where)
        assert restored.code == 0, f"kill at {k}: {restored.err}"
        found = replacements_of(aws)
        assert {j: len(found.get(j, [])) for j in (first, late, second)} == {first: 1, late: 1, second: 1}, f"kill at {k}"
        assert overlapping(aws) == [], f"kill at {k}"
        if submits >= 2:
            break
        k += 1
    assert k >= 3


@pytest.mark.slow
def test_a_signal_while_waiting_for_what_the_command_left_reaches_it(
    seed: Seeder, aws: SimulatedAWS, apply_py: Path, workdir: Path
) -> None:
    """CI cancels the job while jobguard waits for the apply COMMAND left in the background: the signal reaches
    that apply (it is not left running unseen), and jobguard restores once it has ended."""
    seed.queue("work")
    seed.definition("proc", containerProperties=DEFINITION)
    drained = seed.job(jobName="nightly", jobQueue="work", jobDefinition="proc")
    store = f"file://{workdir}/manifests"
    background = f'"{sys.executable}" "{apply_py}" "{store}" ready &'
    process = run_process("run", "--store", store, "--queue", "work", "--deploy-id", "d1", "--", "sh", "-c", background)
    deadline = time.monotonic() + 60
    while not (workdir / "ready").exists():
        assert time.monotonic() < deadline and process.poll() is None, process.communicate()
        time.sleep(0.05)
    time.sleep(0.5)  # sh has exited; jobguard waits for the apply
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)  # the apply waits 60 s for `go` unless the signal reached it
    assert "processes of the command still run" in out, err
    assert not (workdir / "done").exists()  # ended by the signal, not by finishing
    assert process.returncode == 128 + signal.SIGTERM  # a cancelled deploy never reads as a success
    assert {j: len(v) for j, v in replacements_of(aws).items()} == {drained: 1}


@pytest.mark.slow
def test_a_late_array_whose_children_the_apply_killed_is_replaced_once(aws: SimulatedAWS, seed: Seeder, store: str, run: Any) -> None:
    """Batch fails an array parent with `Array Child Job failed` (no exit code, no host reason of its own):
    its children say what killed them. A late array the apply's host loss killed is replaced once, whole;
    one whose child failed on its own is left alone."""
    drained = _world(seed)
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    array = seed.job(status="RUNNING", age=0, jobName="late-array", jobQueue="work", jobDefinition="proc", arrayProperties={"size": 3})
    own = seed.job(status="RUNNING", age=0, jobName="late-own-array", jobQueue="work", jobDefinition="proc", arrayProperties={"size": 2})
    for index in (0, 1):
        aws.batch.finish(f"{own}:{index}", "FAILED", exit_code=2)
    _replace_compute_environment(seed, "work")
    _until(lambda: _status(aws, array) == "FAILED" and _status(aws, own) == "FAILED")
    assert seed.batch.describe_jobs(jobs=[array])["jobs"][0]["statusReason"] == "Array Child Job failed"
    time.sleep(aws.batch.timing.list_lag_seconds)
    restored = run("restore", "--store", store, "--deploy-id", "d1")
    assert restored.code == 0, restored.err
    assert {j: len(v) for j, v in replacements_of(aws).items()} == {drained: 1, array: 1}
    assert "killed by the deploy: 3 of its children were killed by the deploy" in records(store, seed, "d1")[array]["reason"]
    assert not overlapping(aws)


@pytest.mark.slow
def test_a_command_longer_than_many_lock_ttls_keeps_its_queues(
    seed: Seeder, run: Any, aws: SimulatedAWS, apply_py: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """lock-ttl 1 s, the apply takes several: the run renews its leases all along, so another pipeline's drain
    meanwhile waits and gives up (exit 3) instead of taking the queue from under the apply."""
    configure(workdir, "lock-ttl: 1\n")
    monkeypatch.setattr("jobguard.adapters.lease._WAIT_STEP", 0.1)
    seed.queue("work")
    seed.definition("proc", containerProperties=DEFINITION)
    drained = seed.job(jobName="nightly", jobQueue="work", jobDefinition="proc")
    store = f"file://{workdir}/manifests"
    process = run_process(
        "run", "--store", store, "--queue", "work", "--deploy-id", "d1", "--", sys.executable, str(apply_py), store, "ready"
    )
    deadline = time.monotonic() + 60
    while not (workdir / "ready").exists():
        assert time.monotonic() < deadline and process.poll() is None, process.communicate()
        time.sleep(0.05)
    time.sleep(3.5)  # several lock-ttls into the apply
    other = seed.job(jobName="other", jobQueue="work", jobDefinition="proc")
    second = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d2", "--lock-timeout", "10")
    assert second.code == 3, second.err
    assert aws.batch.jobs[other].status == "RUNNING" and not aws.batch.jobs[other].stop_requested
    (workdir / "go").write_text("")
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert {j: len(v) for j, v in replacements_of(aws).items()} == {drained: 1}
