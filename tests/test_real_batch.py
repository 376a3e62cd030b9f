"""jobguard against Batch as it really behaves (issue 11), through the CLI, on every store:
asynchronous TerminateJob, dependents failed in every queue, forgotten jobs, lagging lists,
jobs moving between statuses while drain lists them, and the bound on waiting for a stop.

Every test checks the promise itself: each drained job comes back exactly once, and never while
its original can still run (`overlapping`)."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from jobguard.adapters.stores.file import FileStore
from jobguard.commands.dependents import list_waiting
from jobguard.errors import StoreError
from jobguard.sim import STOP_ACTIONS, Seeder, SimulatedAWS, Timing

from .conftest import apply_rename, configure, overlapping, race_listings, records, rename_plan, replacements_of, run_process, work_queue
from .conftest import exactly_once as _exactly_once
from .conftest import job_of as _job

PLANS = Path(__file__).parent / "plans"


def _drain(run: Any, store: str, *extra: str, deploy: str = "d1") -> Any:
    return run("drain", "--store", store, "--queue", "work", "--deploy-id", deploy, *extra)


def _restore(run: Any, store: str, *extra: str, deploy: str = "d1") -> Any:
    return run("restore", "--store", store, "--deploy-id", deploy, *extra)


def _depends_on(aws: SimulatedAWS, job_id: str) -> list[str]:
    return [d["jobId"] for d in aws.batch.jobs[job_id].request.get("dependsOn") or []]


# -- restore soon after drain ----------------------------------------------------------------


@pytest.mark.slow
def test_restore_one_second_after_drain_never_runs_beside_an_original(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    work_queue(seed)
    running = _job(seed, "running")
    aws.batch.jobs[running].stop_seconds = 3.0  # its container takes a while to exit after SIGTERM
    jobs = [
        running,
        _job(seed, "starting", "STARTING"),
        _job(seed, "runnable", "RUNNABLE"),
        _job(seed, "pending", "PENDING", after=running),
    ]
    drained = _drain(run, store)
    assert drained.code == 0, drained.err
    assert "waiting up to 20 s for 4 stopped jobs to end" in drained.out
    assert {r["outcome"] for r in records(store, seed, "d1").values()} == {"terminated"}
    assert aws.batch.jobs[running].terminated and aws.batch.jobs[running].status == "FAILED"
    aws.batch.advance_clock(1)  # apply failed fast: restore runs a second later
    restored = _restore(run, store)
    assert restored.code == 0, restored.err
    replaced = _exactly_once(aws, jobs)
    assert _depends_on(aws, replaced[jobs[3]]) == [replaced[running]]


def _drain_killed_at_second_terminate(aws: SimulatedAWS, store: str, *queues: str) -> int:
    """Run drain of `queues` (default: work) as deploy d1 in a process, kill it (kill -9) when its
    second TerminateJob arrives (that one is never carried out); the process's exit status. The
    endpoint knows no TerminateJobs (as moto): one call per job, so the kill falls between two jobs
    of one page."""
    pid: list[int] = []
    aws.bulk_stop = False

    def fault(action: str, count: int) -> str | None:
        if action == "batch:TerminateJob" and count == 2 and pid:
            os.kill(pid[0], signal.SIGKILL)
            return "drop"
        return None

    aws.fault = fault
    flags = [flag for queue in queues or ("work",) for flag in ("--queue", queue)]
    process = run_process("drain", "--store", store, *flags, "--deploy-id", "d1")
    pid.append(process.pid)
    process.communicate(timeout=120)
    aws.fault, aws.bulk_stop = None, True
    return process.returncode


@pytest.mark.slow
def test_restore_right_after_a_drain_killed_after_terminate(seed: Seeder, store: str, run, aws: SimulatedAWS, workdir: Path) -> None:
    configure(workdir, "workers: 1")  # one TerminateJob at a time: the kill falls between two of them
    work_queue(seed)
    first, second, third = (_job(seed, f"j{i}") for i in range(3))
    dependent = _job(seed, "dependent", "PENDING", after=second)
    for job in (first, second, third):
        aws.batch.jobs[job].stop_seconds = 2.0
    assert _drain_killed_at_second_terminate(aws, store) == -signal.SIGKILL
    stored = records(store, seed, "d1")
    assert {r["outcome"] for r in stored.values()} == {"terminating"}  # every one marked before the first TerminateJob
    assert sum(aws.batch.stopping(j) for j in (first, second, third, dependent)) == 1  # one was sent; three marked, never sent
    # The workflow skips apply and runs restore at once, while the first original is still stopping.
    restored = _restore(run, store)
    assert restored.code == 0, restored.err
    replaced = _exactly_once(aws, [first, second, third, dependent])
    assert _depends_on(aws, replaced[dependent]) == [replaced[second]]
    assert all(aws.batch.jobs[j].status == "FAILED" for j in (first, second, third, dependent))
    assert _restore(run, store).code == 0  # nothing left to do, nothing sent twice
    _exactly_once(aws, [first, second, third, dependent])


@pytest.mark.slow
@pytest.mark.parametrize("next_run", ["rerun", "next push"])
def test_jobs_marked_but_never_sent_terminate_are_stopped_by_the_next_drain(
    seed: Seeder, store: str, run, aws: SimulatedAWS, workdir: Path, next_run: str
) -> None:
    configure(workdir, "workers: 1\nlease-ttl: 2")  # the killed deploy's lease is waited out in 2 s
    work_queue(seed)
    jobs = [_job(seed, f"j{i}") for i in range(3)]
    assert _drain_killed_at_second_terminate(aws, store) == -signal.SIGKILL
    assert sum(aws.batch.stopping(j) for j in jobs) == 1  # two are marked `terminating` but still run, never asked to stop
    deploy = "d1" if next_run == "rerun" else "d2"
    drained = _drain(run, store, deploy=deploy)  # sends TerminateJob (again), waits for every one, records how it ended
    assert drained.code == 0, drained.err
    assert all(aws.batch.jobs[j].terminated for j in jobs)
    assert {r["outcome"] for r in records(store, seed, "d1").values()} == {"terminated"}  # d1's records, adopted by d2
    restored = _restore(run, store, deploy=deploy)
    assert restored.code == 0, restored.err
    _exactly_once(aws, jobs)


def _fail_store_after_terminate(store: str, aws: SimulatedAWS, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every manifest write fails once a TerminateJob has been sent (an outage mid-drain)."""
    if store.startswith("file://"):
        save = FileStore.save

        def failing(self: FileStore, *args: Any) -> str:
            if aws.stop_calls:
                raise StoreError(f"cannot write {self.uri(args[0])}: injected outage")
            return save(self, *args)

        monkeypatch.setattr(FileStore, "save", failing)
        return
    writes = ("s3:PutObject",) if store.startswith("s3://") else ("dynamodb:TransactWriteItems", "dynamodb:PutItem")
    aws.fault = lambda action, n: (500, "InternalError") if action in writes and aws.stop_calls else None


@pytest.mark.slow
def test_restore_right_after_a_drain_whose_store_failed_after_terminate(
    seed: Seeder, store: str, run, aws: SimulatedAWS, monkeypatch: pytest.MonkeyPatch, workdir: Path
) -> None:
    # drain saves nothing between a page's TerminateJobs and its wait for the stops when Batch took
    # every stop: its first write after them is the wait's, which gives up before the jobs end.
    configure(workdir, "stop-timeout: 1")
    work_queue(seed)
    jobs = [_job(seed, f"j{i}") for i in range(3)]
    jobs.append(_job(seed, "dependent", "PENDING", after=jobs[0]))
    for job in jobs[:3]:
        aws.batch.jobs[job].stop_seconds = 4.0
    with monkeypatch.context() as patched:
        _fail_store_after_terminate(store, aws, patched)
        drained = _drain(run, store)
        aws.fault = None
    assert drained.code == 4 and "error: cannot write" in drained.err, drained.err
    assert {r["outcome"] for r in records(store, seed, "d1").values()} == {"terminating"}
    assert any(aws.batch.stopping(j) for j in jobs[:3])  # the outage outlived the drain; the originals still run
    configure(workdir, "stop-timeout: 180")
    restored = _restore(run, store)
    assert restored.code == 0, restored.err
    replaced = _exactly_once(aws, jobs)
    assert _depends_on(aws, replaced[jobs[3]]) == [replaced[jobs[0]]]


# -- dependents in every queue ---------------------------------------------------------------


def test_cross_queue_and_transitive_dependents_come_back_remapped(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    seed.definition("proc")
    for queue in ("science-queue", "etl-queue", "legacy-queue"):
        seed.queue(queue)
    upstream = _job(seed, "upstream", queue="science-queue")
    middle = _job(seed, "middle", "PENDING", queue="etl-queue", after=upstream)
    last = _job(seed, "last", "PENDING", queue="legacy-queue", after=middle)
    bystander = _job(seed, "bystander", queue="etl-queue")
    waits_on_bystander = _job(seed, "waits", "PENDING", queue="legacy-queue", after=bystander)
    queues = [arg for q in ("science-queue", "etl-queue", "legacy-queue") for arg in ("--queue", q)]
    drained = run("drain", "--plan", str(PLANS / "queue-replace.json"), *queues, "--store", store, "--deploy-id", "d1")
    assert drained.code == 0, drained.err
    stored = records(store, seed, "d1")
    assert set(stored) == {upstream, middle, last}  # only the science queue is at risk; the others lose only dependents
    assert stored[middle]["reason"] == f"depends on {upstream}" and stored[middle]["queue"] == "etl-queue"
    assert stored[last]["reason"] == f"depends on {middle}" and stored[last]["queue"] == "legacy-queue"
    assert {stored[j]["outcome"] for j in stored} == {"terminated"}
    assert aws.batch.jobs[bystander].status == "RUNNING" and aws.batch.jobs[waits_on_bystander].status == "PENDING"
    restored = _restore(run, store)
    assert restored.code == 0, restored.err
    replaced = _exactly_once(aws, [upstream, middle, last])
    assert _depends_on(aws, replaced[middle]) == [replaced[upstream]]
    assert _depends_on(aws, replaced[last]) == [replaced[middle]]
    assert aws.batch.jobs[replaced[last]].queue_arn.endswith("/legacy-queue")
    assert set(replacements_of(aws)) == {upstream, middle, last}


@pytest.mark.parametrize("status", ["RUNNABLE", "RUNNING"])
@pytest.mark.slow
def test_a_dependent_submitted_after_the_pass_listed_the_waiting_jobs_comes_back_remapped(
    seed: Seeder, store: str, run, aws: SimulatedAWS, monkeypatch: pytest.MonkeyPatch, status: str
) -> None:
    # The pass lists every queue's waiting jobs once, before its first page is stopped; a job submitted
    # just after, on a configured queue the plan leaves alone, depends on a job of the second page. Batch
    # fails it with that job (at once when it had not started), before the drain's last look: no listing
    # of waiting jobs sees it, and restore sweeps only the queues the deploy drained. (Batch here stops at
    # once and lists at once: a job still unlisted when the drain ends stays unseen, README "Finding every job".)
    aws.batch.timing = Timing.instant()
    seed.definition("proc")
    for queue in ("science-queue", "legacy-queue"):
        seed.queue(queue)
    monkeypatch.setattr("jobguard.commands.drain.RECORD_PAGE", 1)
    first, second = (_job(seed, name, status, queue="science-queue") for name in ("first", "second"))
    late: list[str] = []

    def then_submitted(*args: Any) -> Any:
        waiting = list_waiting(*args)
        if not late:
            late.append(
                seed.job(
                    age=0, status="PENDING", jobName="late", jobQueue="legacy-queue", jobDefinition="proc", dependsOn=[{"jobId": second}]
                )
            )
        return waiting

    monkeypatch.setattr("jobguard.commands.drain.list_waiting", then_submitted)
    queues = [arg for q in ("science-queue", "legacy-queue") for arg in ("--queue", q)]
    drained = run("drain", "--plan", str(PLANS / "queue-replace.json"), *queues, "--no-freeze", "--store", store, "--deploy-id", "d1")
    assert drained.code == 0, drained.err
    assert aws.batch.jobs[late[0]].status == "FAILED"
    assert records(store, seed, "d1")[late[0]]["outcome"] == "watched"  # killed with `second`: restore judges it
    restored = _restore(run, store)
    assert restored.code == 0, restored.err
    replaced = _exactly_once(aws, [first, second, late[0]])
    assert _depends_on(aws, replaced[late[0]]) == [replaced[second]]
    assert aws.batch.jobs[replaced[late[0]]].queue_arn.endswith("/legacy-queue")


def test_a_dependent_on_a_queue_jobguard_may_not_touch_stops_the_drain(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    work_queue(seed)
    seed.queue("elsewhere")
    upstream = _job(seed, "upstream")
    outsider = _job(seed, "outsider", "PENDING", queue="elsewhere", after=upstream)
    drained = _drain(run, store)
    assert drained.code == 2, drained.err
    assert f"job {outsider} on queue elsewhere depends on job {upstream}" in drained.err
    assert aws.stop_calls == 0
    assert aws.batch.jobs[upstream].status == "RUNNING" and aws.batch.jobs[outsider].status == "PENDING"


@pytest.mark.slow
def test_a_replacement_drained_by_the_next_deploy_is_followed_by_its_dependents(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    work_queue(seed)
    upstream = _job(seed, "upstream")
    downstream = _job(seed, "downstream", "PENDING", after=upstream)
    assert _drain(run, store).code == 0
    # d1's restore brings `upstream` back; SubmitJob refuses `downstream` (it stays owed by d1).
    aws.fault = lambda action, n: (400, "ClientException") if action == "batch:SubmitJob" and n == 4 else None
    assert _restore(run, store).code == 1
    aws.fault = None
    (first,) = replacements_of(aws)[upstream]
    aws.batch.advance_clock(1)  # past ListJobs' lag: the next push lists the replacement
    drained = _drain(run, store, deploy="d2")  # the next push drains the replacement, and adopts d1's queue
    assert drained.code == 0, drained.err
    assert set(records(store, seed, "d2")) == {first}
    restored = _restore(run, store, deploy="d2")  # restores d1 (adopted) and d2: d1's job needs d2's first
    assert restored.code == 0, restored.err
    replaced = _exactly_once(aws, [upstream, first, downstream])
    assert replaced[upstream] == first
    assert _depends_on(aws, replaced[downstream]) == [replaced[first]]  # never the stopped replacement
    assert aws.batch.jobs[replaced[downstream]].status == "PENDING"


# -- forgotten jobs ----------------------------------------------------------------------------


def test_a_dependency_batch_forgot_counts_as_succeeded_when_it_was_seen_to_succeed(
    seed: Seeder, store: str, run, aws: SimulatedAWS
) -> None:
    work_queue(seed)
    seed.queue("other")
    prepared = _job(seed, "prepared", "SUCCEEDED", queue="other")
    uses_prepared = seed.job(jobName="uses", jobQueue="work", jobDefinition="proc", dependsOn=[{"jobId": prepared}])
    feeder = _job(seed, "feeder", queue="other")  # not drained: its queue is not at risk
    waits_on_feeder = _job(seed, "waits", "PENDING", after=feeder)
    drained = _drain(run, store)
    assert drained.code == 0, drained.err
    stored = records(store, seed, "d1")
    assert stored[uses_prepared]["dependencies"] == {prepared: "SUCCEEDED"}
    assert stored[waits_on_feeder]["dependencies"] == {feeder: "RUNNING"}
    aws.batch.finish(feeder)
    aws.batch.advance_clock(86401)  # the restore comes a day later: Batch has forgotten every finished job
    assert prepared not in aws.batch.jobs and feeder not in aws.batch.jobs and uses_prepared not in aws.batch.jobs
    restored = _restore(run, store)
    assert restored.code == 1
    (replacement,) = replacements_of(aws)[uses_prepared]
    assert _depends_on(aws, replacement) == []  # it had succeeded: satisfied
    assert f"dependency {feeder} is unknown to Batch (it was RUNNING when the job was drained)" in restored.err
    assert records(store, seed, "d1")[waits_on_feeder]["outcome"] == "failed"
    assert set(replacements_of(aws)) == {uses_prepared}


@pytest.mark.parametrize("status", ["RUNNABLE", "RUNNING"])
def test_a_job_past_pending_is_restored_although_batch_forgot_its_dependency(
    seed: Seeder, store: str, run, aws: SimulatedAWS, status: str
) -> None:
    """Batch moves a job past PENDING only once its dependencies succeeded: a long job whose ancestor
    Batch has forgotten by drain time is restored, not held as undecidable (issue 23, "Also")."""
    work_queue(seed)
    seed.queue("other")
    ancestor = _job(seed, "ancestor", "SUCCEEDED", queue="other")
    long = _job(seed, "long", status, after=ancestor)
    aws.batch.advance_clock(86401)  # the long job runs on; a day later Batch forgets the ancestor
    assert ancestor not in aws.batch.jobs
    assert _drain(run, store).code == 0
    assert records(store, seed, "d1")[long]["dependencies"] == {ancestor: "UNKNOWN"}
    restored = _restore(run, store)
    assert restored.code == 0, restored.err
    replaced = _exactly_once(aws, [long])
    assert _depends_on(aws, replaced[long]) == []


# -- lagging lists -------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_lost_submit_reply_is_found_although_listing_lags(seed: Seeder, store: str, run, aws: SimulatedAWS, workdir: Path) -> None:
    configure(workdir, "lookup-window: 6")
    work_queue(seed)
    jobs = [_job(seed, f"j{i}") for i in range(3)]
    assert _drain(run, store).code == 0
    aws.batch.timing = Timing(list_lag_seconds=3)
    aws.fault = lambda action, n: "lost-reply" if action == "batch:SubmitJob" and n == 4 else None  # 3 were the seeder's
    restored = _restore(run, store)
    assert restored.code == 0, restored.err
    assert aws.faults["batch:SubmitJob"] == 1
    assert "ListJobs can lag" in restored.err
    _exactly_once(aws, jobs)
    assert aws.calls["batch:SubmitJob"] == 3 + 3  # the lost one was found, never sent again
    assert {r["outcome"] for r in records(store, seed, "d1").values()} == {"resubmitted"}


def _after_listing(aws: SimulatedAWS, monkeypatch: pytest.MonkeyPatch, status: str, move: Any) -> None:
    """Call `move()` right after drain's first listing of `status` has been answered."""
    listed = threading.local()
    list_jobs = aws.batch.list_jobs

    def noting(body: dict[str, Any]) -> dict[str, Any]:
        listed.status = body.get("jobStatus")
        return list_jobs(body)

    monkeypatch.setattr(aws.batch, "list_jobs", noting)
    done: list[bool] = []

    def after(action: str, count: int) -> None:
        if action == "batch:ListJobs" and getattr(listed, "status", None) == status and not done:
            done.append(True)
            move()

    aws.after = after


@pytest.mark.slow
@pytest.mark.parametrize(
    ("before", "listed", "after"),
    [
        ("RUNNABLE", "RUNNABLE", "STARTING"),  # forward: listed before it moved
        ("RUNNING", "RUNNABLE", "RUNNABLE"),  # back to RUNNABLE (a retry), after RUNNABLE was listed: the next pass finds it
        ("STARTING", "RUNNABLE", "RUNNING"),  # forward, between two listings
    ],
)
def test_a_job_changing_state_while_drain_lists_is_drained(
    seed: Seeder, store: str, run, aws: SimulatedAWS, monkeypatch: pytest.MonkeyPatch, before: str, listed: str, after: str
) -> None:
    work_queue(seed)
    steady = _job(seed, "steady")
    mover = _job(seed, "mover", before)
    _after_listing(aws, monkeypatch, listed, lambda: aws.batch.set_status(mover, after))
    drained = _drain(run, store)
    assert drained.code == 0, drained.err
    stored = records(store, seed, "d1")
    assert set(stored) == {steady, mover}
    assert stored[mover]["outcome"] == "terminated" and aws.batch.jobs[mover].status == "FAILED"
    assert _restore(run, store).code == 0
    _exactly_once(aws, [steady, mover])


def test_a_job_moving_on_between_two_side_by_side_listings_is_found_by_a_pass_in_lifecycle_order(
    seed: Seeder, store: str, run, aws: SimulatedAWS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """drain's first pass lists the statuses at once: RUNNING is answered, the job moves on from RUNNABLE to
    RUNNING, and only then is RUNNABLE answered. That pass finds nothing, and must not be the last."""
    work_queue(seed)
    mover = _job(seed, "mover", "RUNNABLE")
    moved = race_listings(
        aws,
        monkeypatch,
        lambda body: body.get("jobStatus") == "RUNNABLE",
        lambda body: body.get("jobStatus") == "RUNNING",
        lambda: aws.batch.set_status(mover, "RUNNING"),
    )
    drained = _drain(run, store)
    assert drained.code == 0, drained.err
    assert moved and set(records(store, seed, "d1")) == {mover}
    assert aws.batch.jobs[mover].status == "FAILED"
    assert _restore(run, store).code == 0
    _exactly_once(aws, [mover])


# -- policy wait -----------------------------------------------------------------------------------


def test_the_dependent_of_a_job_kept_running_depends_on_the_running_original(
    seed: Seeder, store: str, run, aws: SimulatedAWS, workdir: Path
) -> None:
    configure(workdir, "policies:\n  - job-name: precious\n    action: wait\n")
    work_queue(seed)
    precious = _job(seed, "precious")
    dependent = _job(seed, "dependent", "PENDING", after=precious)
    drained = _drain(run, store)
    assert drained.code == 1 and "policy wait: still RUNNING after the grace period" in drained.err
    stored = records(store, seed, "d1")
    assert stored[precious]["outcome"] == "kept" and stored[dependent]["outcome"] == "terminated"
    assert aws.batch.jobs[precious].status == "RUNNING" and not aws.batch.stopping(precious)
    restored = _restore(run, store)
    assert restored.code == 0, restored.err
    replaced = _exactly_once(aws, [dependent])
    assert _depends_on(aws, replaced[dependent]) == [precious]  # the healthy original, still running
    assert aws.batch.jobs[replaced[dependent]].status == "PENDING"
    aws.batch.finish(precious)
    assert aws.batch.jobs[replaced[dependent]].status == "RUNNABLE"  # the replacement runs once its dependency succeeds ...
    assert aws.batch.jobs[dependent].status == "FAILED" and aws.batch.jobs[dependent].started_at is None  # ... the original never
    assert set(replacements_of(aws)) == {dependent}


# -- the bound on waiting for a stop -------------------------------------------------------------


@pytest.mark.slow
def test_stop_timeout_bounds_the_wait_and_restore_waits_for_the_original(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    work_queue(seed)
    slow, quick = _job(seed, "slow"), _job(seed, "quick")
    aws.batch.jobs[slow].stop_seconds = 60.0  # an EKS pod with a long grace period
    drained = _drain(run, store, "--stop-timeout", "1")
    assert drained.code == 1
    assert f"slow [{slow}] on work: still running 1 s after TerminateJob" in drained.err and quick not in drained.err
    stored = records(store, seed, "d1")
    assert stored[slow]["outcome"] == "terminating" and stored[quick]["outcome"] == "terminated"
    assert aws.batch.stopping(slow)
    refused = _restore(run, store, "--stop-timeout", "1")  # it is still running: no replacement beside it
    assert refused.code == 1 and f"slow [{slow}]: still RUNNING 1 s after it was asked to stop" in refused.err
    assert set(replacements_of(aws)) == {quick} and overlapping(aws) == []
    # The next restore waits: the original ends while it polls, and only then is it resubmitted.
    aws.after = lambda action, n: aws.batch.advance_clock(60) if action == "batch:DescribeJobs" and aws.batch.stopping(slow) else None
    restored = _restore(run, store)
    assert restored.code == 0, restored.err
    assert "waiting up to 20 s for 1 originals to stop" in restored.out
    _exactly_once(aws, [slow, quick])
    assert aws.batch.jobs[slow].terminated


# -- array parents: PENDING while their children run -----------------------------------------------


@pytest.mark.slow
def test_an_array_is_resubmitted_only_once_its_children_have_stopped(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    """A parent is never RUNNING (AWS Batch user guide, "Array jobs"): PENDING is not "will never start" for it."""
    work_queue(seed)
    array = seed.job(jobName="sweep", jobQueue="work", jobDefinition="proc", arrayProperties={"size": 3})
    for child in aws.batch.jobs[array].children:
        aws.batch.jobs[child].stop_seconds = 1.5  # longer than the default, so a wrong reading shows
    assert aws.batch.jobs[array].status == "PENDING"
    drained = _drain(run, store)
    assert drained.code == 0, drained.err
    assert all(aws.batch.jobs[c].status == "FAILED" for c in aws.batch.jobs[array].children)  # drain waited for the children
    assert records(store, seed, "d1")[array]["outcome"] == "terminated"
    restored = _restore(run, store)
    assert restored.code == 0, restored.err
    replacement = _exactly_once(aws, [array])[array]
    assert aws.batch.jobs[replacement].request["arrayProperties"] == {"size": 3}


@pytest.mark.slow
def test_restore_right_after_drain_waits_for_a_stopping_array(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    work_queue(seed)
    array = seed.job(jobName="sweep", jobQueue="work", jobDefinition="proc", arrayProperties={"size": 2})
    for child in aws.batch.jobs[array].children:
        aws.batch.jobs[child].stop_seconds = 60.0
    drained = _drain(run, store, "--stop-timeout", "1")
    assert drained.code == 1 and f"sweep [{array}] on work: still running 1 s after TerminateJob" in drained.err
    refused = _restore(run, store, "--stop-timeout", "1")
    assert refused.code == 1 and replacements_of(aws) == {}  # its children still run: no second array beside them
    aws.after = lambda action, n: aws.batch.advance_clock(60) if action == "batch:DescribeJobs" else None
    restored = _restore(run, store)
    assert restored.code == 0, restored.err
    _exactly_once(aws, [array])


@pytest.mark.slow
def test_a_grace_period_lets_a_running_array_finish(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    """Its parent is PENDING, but it runs: not drained with the queued jobs before the grace period."""
    work_queue(seed)
    array = seed.job(jobName="sweep", jobQueue="work", jobDefinition="proc", arrayProperties={"size": 2})
    queued = _job(seed, "queued", "RUNNABLE")

    def children_finish_once_the_queued_job_is_stopped(action: str, count: int) -> None:
        if action in STOP_ACTIONS:
            for child in aws.batch.jobs[array].children:
                aws.batch.finish(child)

    aws.after = children_finish_once_the_queued_job_is_stopped
    drained = _drain(run, store, "--grace", "30s")
    assert drained.code == 0, drained.err
    assert array not in records(store, seed, "d1") and aws.batch.jobs[array].status == "SUCCEEDED"
    assert records(store, seed, "d1")[queued]["outcome"] == "terminated"


# -- a drain continued after a kill finds dependents as a first drain does ------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("next_run", ["rerun", "next push"])
def test_a_continued_drain_stops_nothing_when_a_dependent_is_on_a_queue_it_may_not_touch(
    seed: Seeder, store: str, run, aws: SimulatedAWS, workdir: Path, next_run: str
) -> None:
    configure(workdir, "workers: 1\nlease-ttl: 2")
    work_queue(seed)
    seed.queue("elsewhere")
    jobs = [_job(seed, f"j{i}") for i in range(3)]
    _drain_killed_at_second_terminate(aws, store)
    waiting = [j for j in jobs if not aws.batch.stopping(j)]
    outsider = _job(seed, "outsider", "PENDING", queue="elsewhere", after=waiting[0])  # submitted meanwhile
    terminated = aws.stop_calls
    drained = _drain(run, store, deploy="d1" if next_run == "rerun" else "d2")
    assert drained.code == 2, drained.err
    assert f"job {outsider} on queue elsewhere depends on job {waiting[0]}" in drained.err
    assert aws.stop_calls == terminated and aws.batch.jobs[outsider].status == "PENDING"


@pytest.mark.slow
def test_a_continued_drain_records_and_stops_the_dependents_of_what_it_stops(
    seed: Seeder, store: str, run, aws: SimulatedAWS, workdir: Path
) -> None:
    configure(workdir, "workers: 1")
    work_queue(seed)
    seed.queue("next")
    jobs = [_job(seed, f"j{i}") for i in range(2)]
    _drain_killed_at_second_terminate(aws, store, "work", "next")
    waiting = next(j for j in jobs if not aws.batch.stopping(j))
    dependent = _job(seed, "dependent", "PENDING", queue="next", after=waiting)
    drained = run("drain", "--store", store, "--queue", "work", "--queue", "next", "--deploy-id", "d1")
    assert drained.code == 0, drained.err
    assert records(store, seed, "d1")[dependent]["outcome"] == "terminated"
    assert _restore(run, store).code == 0
    replaced = _exactly_once(aws, [*jobs, dependent])
    assert _depends_on(aws, replaced[dependent]) == [replaced[waiting]]


# -- a renamed queue and a lost SubmitJob reply ------------------------------------------------------


@pytest.mark.slow
def test_a_lost_reply_on_a_renamed_queue_is_found_there(seed: Seeder, store: str, run, aws: SimulatedAWS, workdir: Path) -> None:
    configure(workdir, "lookup-window: 2")
    work_queue(seed)
    jobs = [_job(seed, f"j{i}") for i in range(2)]
    assert _drain(run, store, "--plan", str(rename_plan(workdir))).code == 0
    apply_rename(seed)  # the apply: the queue replaced under its new name
    submitted = aws.calls["batch:SubmitJob"]
    aws.fault = lambda action, n: "lost-reply" if action == "batch:SubmitJob" and n == submitted + 1 else None
    restored = _restore(run, store)
    aws.fault = None
    assert restored.code == 0, restored.err
    assert _exactly_once(aws, jobs)
    assert {aws.batch.jobs[r].queue_arn.rsplit("/", 1)[-1] for ids in replacements_of(aws).values() for r in ids} == {"work-v2"}
    assert {r["outcome"] for r in records(store, seed, "d1").values()} == {"resubmitted"}


# -- a dependency on one child of an array (ARRAY:INDEX) --------------------------------------------


def test_a_dependent_on_one_child_of_an_array_comes_back_on_that_child_of_the_replacement(
    seed: Seeder, store: str, run, aws: SimulatedAWS
) -> None:
    work_queue(seed)
    array = seed.job(jobName="sweep", jobQueue="work", jobDefinition="proc", arrayProperties={"size": 3})
    dependent = _job(seed, "dependent", "PENDING", after=f"{array}:1")
    drained = _drain(run, store)
    assert drained.code == 0, drained.err
    assert records(store, seed, "d1")[dependent]["dependencies"] == {f"{array}:1": "RUNNING"}  # the child's own status
    for args in (["restore", "--store", store, "--deploy-id", "d1"], ["status", "--store", store, "--all"]):
        assert run(*args).code == 0  # the manifest holding ARRAY:INDEX is one jobguard reads back
    replaced = _exactly_once(aws, [array, dependent])
    assert _depends_on(aws, replaced[dependent]) == [f"{replaced[array]}:1"]


def test_a_dependent_on_one_child_on_a_queue_jobguard_may_not_touch_stops_the_drain(
    seed: Seeder, store: str, run, aws: SimulatedAWS
) -> None:
    work_queue(seed)
    seed.queue("elsewhere")
    array = seed.job(jobName="sweep", jobQueue="work", jobDefinition="proc", arrayProperties={"size": 2})
    outsider = _job(seed, "outsider", "PENDING", queue="elsewhere", after=f"{array}:1")
    drained = _drain(run, store)
    assert drained.code == 2 and f"job {outsider} on queue elsewhere depends on job {array}" in drained.err
    assert aws.stop_calls == 0 and aws.batch.jobs[outsider].status == "PENDING"


# -- dependents that appear after their dependency was taken ------------------------------------------


@pytest.mark.slow
def test_a_dependent_submitted_during_the_grace_period_on_a_job_already_stopped_is_taken(
    seed: Seeder, store: str, run, aws: SimulatedAWS, workdir: Path
) -> None:
    """b (PENDING on a) is stopped in the queued pass; during the grace period c is submitted on
    another configured queue, PENDING on b. No pass lists that queue (the plan puts only `work`
    at risk), and b is recorded already: c must still be found, or Batch fails it with b."""
    work_queue(seed)
    seed.queue("next")
    a = _job(seed, "a")
    b = _job(seed, "b", "PENDING", after=a)
    submitted: list[str] = []

    def submit_c_once_b_is_stopped(action: str, count: int) -> None:
        if action in STOP_ACTIONS and not submitted:
            submitted.append(_job(seed, "c", "PENDING", queue="next", after=b))

    aws.after = submit_c_once_b_is_stopped
    change = {"actions": ["delete", "create"], "before": {"name": "work"}, "after": {"name": "work"}}
    queue = {"address": "aws_batch_job_queue.q", "type": "aws_batch_job_queue", "change": change}
    (workdir / "plan.json").write_text(json.dumps({"format_version": "1.2", "resource_changes": [queue]}))
    queues = ["--queue", "work", "--queue", "next"]
    drained = run("drain", "--store", store, *queues, "--deploy-id", "d1", "--grace", "1s", "--plan", "plan.json")
    assert drained.code == 0, drained.err
    (c,) = submitted
    assert records(store, seed, "d1")[c]["outcome"] == "terminated"
    assert _restore(run, store).code == 0
    replaced = _exactly_once(aws, [a, b, c])
    assert _depends_on(aws, replaced[c]) == [replaced[b]]


@pytest.mark.slow
def test_jobs_a_queued_pass_leaves_for_later_are_not_new_again(seed: Seeder, store: str, run, aws: SimulatedAWS, workdir: Path) -> None:
    configure(workdir, "policies:\n  - job-name: 'publish-*'\n    action: wait\n")
    work_queue(seed)
    _job(seed, "publish-1", "RUNNABLE")  # under policy wait
    seed.job(jobName="sweep", jobQueue="work", jobDefinition="proc", arrayProperties={"size": 2})  # running
    drained = _drain(run, store, "--grace", "1s")
    assert "new jobs kept arriving" not in drained.out + drained.err
    assert "pass 2:" not in drained.out
