"""Whatever fails, no job is lost, none runs twice, and no replacement runs beside its original:
throttling, server errors, lost replies, a failing store, and a process killed (kill -9) at every
instant between two AWS calls, followed by what a workflow does next. All on the real-world
simulation (TerminateJob is asynchronous: a stopped job runs on for `Timing().stop_seconds`)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest

from jobguard.adapters.aws import Aws, AwsSettings
from jobguard.adapters.lease import Leases, lease_scope, read_lease
from jobguard.adapters.stores import open_store
from jobguard.adapters.stores.dynamodb import DynamoDBStore
from jobguard.adapters.stores.file import FileStore
from jobguard.adapters.stores.s3 import S3Store
from jobguard.errors import StoreError
from jobguard.sim import STOP_ACTIONS, Seeder, SimulatedAWS
from jobguard.sim.server import ACCOUNT, REGION

from .conftest import TABLE, asked_to_stop, configure, create_table, overlapping, record_faults, records, replacements_of, run_process

pytestmark = pytest.mark.slow  # fault and kill sweeps: every case waits for real stops and retries


def _world(seed: Seeder, jobs: int = 3) -> list[str]:
    """One running job, the others PENDING on it (Batch fails them when it is stopped)."""
    seed.queue("work")
    seed.definition("proc")
    first = seed.job(jobName="j0", jobQueue="work", jobDefinition="proc")
    rest = [
        seed.job(status="PENDING", jobName=f"j{i}", jobQueue="work", jobDefinition="proc", dependsOn=[{"jobId": first}])
        for i in range(1, jobs)
    ]
    return [first, *rest]


def _independent(seed: Seeder, jobs: int) -> list[str]:
    seed.queue("work")
    seed.definition("proc")
    return [seed.job(jobName=f"j{i}", jobQueue="work", jobDefinition="proc") for i in range(jobs)]


def _assert_exactly_once(aws: SimulatedAWS, jobs: list[str], runs: int = 1, kills: int = 0) -> None:
    """Every job replaced exactly once, never beside its original; the figures go to the fault report."""
    replacements = replacements_of(aws)
    counts = {j: len(replacements.get(j, [])) for j in jobs}
    record_faults(
        runs=runs,
        faults=sum(aws.faults.values()) + kills,
        jobs=len(jobs),
        lost=sum(c == 0 for c in counts.values()),
        doubled=sum(c > 1 for c in counts.values()) + len(overlapping(aws)),
    )
    assert counts == dict.fromkeys(jobs, 1)
    assert overlapping(aws) == []


def _drain(run: Any, store: str, deploy: str = "d1") -> Any:
    return run("drain", "--store", store, "--queue", "work", "--deploy-id", deploy)


@pytest.mark.parametrize("share", [2, 3])
def test_throttling_is_absorbed(seed: Seeder, store: str, run, aws: SimulatedAWS, share: int) -> None:
    jobs = _world(seed, jobs=9)

    # Every share-th call of each Batch action, and the first stop call: a throttled TerminateJobs is
    # retried, not taken for an endpoint that does not know it.
    def throttle(action: str, n: int) -> tuple[int, str] | None:
        throttled = action.startswith("batch:") and (n % share == 0 or (action in STOP_ACTIONS and n == 1))
        return (429, "TooManyRequestsException") if throttled else None

    aws.fault = throttle
    drained = _drain(run, store)
    assert drained.code == 0, drained.err
    restored = run("restore", "--store", store, "--deploy-id", "d1")
    assert restored.code == 0, restored.err
    assert aws.faults["batch:SubmitJob"] >= 9 // share and aws.faults["batch:TerminateJobs"] >= 1 and aws.calls["batch:TerminateJob"] == 0
    _assert_exactly_once(aws, jobs, runs=2)


@pytest.mark.parametrize("fault", [(500, "ServerException"), (503, "ServiceUnavailable"), "drop", "lost-reply"])
def test_server_errors_and_broken_connections_on_every_batch_action(seed: Seeder, store: str, run, aws: SimulatedAWS, fault) -> None:
    jobs = _world(seed)
    aws.fault = lambda action, n: fault if action.startswith("batch:") and n % 2 == 1 else None
    drain = _drain(run, store)
    assert drain.code == 0, drain.err
    restore = run("restore", "--store", store, "--deploy-id", "d1")
    assert restore.code == 0, restore.err
    assert {action for action in aws.faults} >= {"batch:SubmitJob", "batch:TerminateJobs", "batch:DescribeJobs", "batch:ListJobs"}
    _assert_exactly_once(aws, jobs, runs=2)


def test_retries_are_bounded_and_failure_is_per_job(seed: Seeder, store: str, run, aws: SimulatedAWS, workdir: Path) -> None:
    configure(workdir, "lookup-window: 1\nretry:\n  initial-wait: 0.001\n  max-wait: 0.01\n  attempts: 3\n")
    jobs = _independent(seed, 3)
    assert _drain(run, store).code == 0
    seeded = aws.calls["batch:SubmitJob"]
    aws.fault = lambda action, n: (500, "ServerException") if action == "batch:SubmitJob" else None
    result = run("restore", "--store", store, "--deploy-id", "d1")
    assert result.code == 1
    stored = records(store, seed, "d1")
    for job in jobs:  # each job fails on its own, with its reason; the run goes on to the next
        assert stored[job]["outcome"] == "failed" and stored[job]["stage"] == "restore"
        assert "SubmitJob got no answer on every attempt" in stored[job]["error"]
    assert aws.calls["batch:SubmitJob"] - seeded == 3 * 3  # bounded: 3 attempts per job, each after a lookup found nothing
    assert replacements_of(aws) == {}
    aws.fault = None
    assert run("restore", "--store", store, "--deploy-id", "d1").code == 0
    _assert_exactly_once(aws, jobs, runs=3)


def test_invalid_request_is_not_retried(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    jobs = _independent(seed, 2)
    assert _drain(run, store).code == 0
    seeded = aws.calls["batch:SubmitJob"]
    listed = aws.calls["batch:ListJobs"]
    aws.fault = lambda action, n: (400, "ClientException") if action == "batch:SubmitJob" and n == seeded + 1 else None
    result = run("restore", "--store", store, "--deploy-id", "d1")
    assert result.code == 1 and "ClientException" in result.err
    assert aws.calls["batch:SubmitJob"] - seeded == 2  # the refused one was sent once: a 400 proves nothing was made ...
    # ... so nothing is looked up for it: the only listings are the deploy window sweep's two of the queue
    # (jobs created since the drain began, and its FAILED jobs)
    assert aws.calls["batch:ListJobs"] - listed == 2
    (failed,) = [r for r in records(store, seed, "d1").values() if r["outcome"] == "failed"]
    assert "ClientException" in failed["error"]
    aws.fault = None
    seed.batch.update_job_queue(jobQueue="work", state="DISABLED")  # a refusal jobguard can see coming: nothing is sent
    before = aws.calls["batch:SubmitJob"]
    held = run("restore", "--store", store, "--deploy-id", "d1")
    assert held.code == 1 and "queue work is DISABLED" in held.err and aws.calls["batch:SubmitJob"] == before
    seed.batch.update_job_queue(jobQueue="work", state="ENABLED")
    assert run("restore", "--store", store, "--deploy-id", "d1").code == 0
    _assert_exactly_once(aws, jobs, runs=4)


@pytest.mark.parametrize("service", ["sts", "batch"])
def test_a_request_whose_body_is_cut_short_is_no_call(aws: SimulatedAWS, service: str) -> None:
    """A client killed mid-body (tests kill and pause jobguard at every call) never gets a whole request to
    AWS: nothing is carried out, counted or authorised (a half STS body once showed up as `sts:POST`)."""
    body = b"Action=GetCallerIdentity&Version=2011-06-15" if service == "sts" else b'{"jobName": "x", "jobQueue": "work", '
    head = (
        f"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: jobguard/1 botocore/1\r\nContent-Length: {len(body) + 40}\r\n"
        f"Authorization: AWS4-HMAC-SHA256 Credential=AKID/20261208/{REGION}/{service}/aws4_request, SignedHeaders=host, Signature=0\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", int(aws.endpoint.rsplit(":", 1)[1])), timeout=10) as client:
        client.sendall(head.encode() + body[:12])
        client.shutdown(socket.SHUT_WR)  # the rest never comes
        assert client.recv(1024) == b""  # the server read what came and hung up without an answer
    assert not aws.calls and not aws.recorded


def _check_stopped_only_when_marked(aws: SimulatedAWS, jobs: list[str], stored: dict[str, dict[str, Any]]) -> set[str]:
    """No job stopped without a record, and every stopped job marked `terminating` in the store first; the stopped ones."""
    stopped = {j for j in jobs if asked_to_stop(aws, j)}
    assert stopped <= set(stored)
    assert all("terminating" in stored[j]["times"] for j in stopped)
    return stopped


@pytest.mark.parametrize(
    ("failing", "stopped"),
    [
        ("save 2", 0),  # the first page's records, marked `terminating`: nothing is stopped
        ("save 3", 90),  # the second page's records: only the first page was stopped
        # Every write from the first TerminateJobs on: the first page's stops are on their way while the second
        # page is recorded, so that page's write comes before or after them; no page's end is ever written.
        ("after terminate", None),
    ],
)
def test_store_failing_mid_drain_stops_terminating(
    seed: Seeder, store: str, run, aws: SimulatedAWS, monkeypatch: pytest.MonkeyPatch, failing: str, stopped: int | None
) -> None:
    monkeypatch.setattr("jobguard.commands.drain.RECORD_PAGE", 90)  # a page is one write on every store (DynamoDB: 99 records)
    jobs = _independent(seed, 150)
    saves = [0]
    with monkeypatch.context() as patched:
        if failing == "after terminate" and not store.startswith("file://"):  # the service itself answers 500 to every write
            writes = ("s3:PutObject",) if store.startswith("s3://") else ("dynamodb:TransactWriteItems", "dynamodb:PutItem")
            aws.fault = lambda action, n: (500, "InternalError") if action in writes and aws.stop_calls else None
        else:
            for kind in (FileStore, S3Store, DynamoDBStore):
                patched.setattr(kind, "save", _failing_save(kind.save, saves, failing, aws))
        result = _drain(run, store)
        aws.fault = None
    assert result.code == 4 and "error: cannot write" in result.err, result.err
    taken = len(_check_stopped_only_when_marked(aws, jobs, records(store, seed, "d1")))
    assert taken == stopped if stopped is not None else taken in (90, 150)
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0  # the rerun finishes the drain
    _check_stopped_only_when_marked(aws, jobs, records(store, seed, "d1"))
    assert run("restore", "--store", store, "--deploy-id", "d1").code == 0
    _assert_exactly_once(aws, jobs, runs=3)


def _failing_save(save: Any, saves: list[int], failing: str, aws: SimulatedAWS) -> Any:
    """A store's manifest save that fails (the store is down) at the chosen moment of the drain."""

    def failing_save(self: Any, *args: Any) -> str:
        saves[0] += 1
        down = aws.stop_calls > 0 if failing == "after terminate" else saves[0] >= int(failing.split()[1])
        if down:
            raise StoreError(f"cannot write {self.uri(args[0])}: injected outage")
        return str(save(self, *args))

    return failing_save


# -- kill -9 after every call, then what a workflow does next ---------------------------------

# After a killed drain the workflow skips apply and runs restore; a person reruns the job; or the
# next push comes with a new run id and drains the same queue. After a killed restore: a rerun,
# or the next push. Each kill point gets one follow-up, rotated; the rotation starts elsewhere on
# each store, so over the three stores each kind of kill point meets every follow-up.
#
# Kill points: on the file store, after every AWS call (its own writes are not AWS calls, so the
# calls between them are what tells one instant from another). On S3 and DynamoDB every write is
# an AWS call, and a kill between two reads leaves the same state as a kill after the second: the
# sweep kills after the first call and after every call that changes something, which reaches
# every state a kill can leave at a fraction of the cost.
FOLLOW_UPS = {"drain": ("restore", "rerun", "next-push"), "restore": ("rerun", "next-push")}
STORE_OFFSET = {"file": 0, "s3": 1, "dynamodb": 2}
CHANGING = frozenset(
    {
        "batch:SubmitJob",
        "batch:TerminateJob",
        "batch:TerminateJobs",
        "batch:CancelJob",
        "batch:CancelJobs",
        "batch:UpdateJobQueue",
        "s3:PutObject",
        "s3:DeleteObject",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "dynamodb:TransactWriteItems",
    }
)
SWEEP = "lock-ttl: 1\nlease-ttl: 1\nstop-timeout: 10\n"  # a killed deploy's lease is waited out in about a second
MIN_KILLS = {"drain": 10, "restore": 5}


@pytest.mark.parametrize("killed", ["drain", "restore"])
def test_kill_9_after_every_call_then_what_the_workflow_does_next(
    seed: Seeder, store: str, run, aws: SimulatedAWS, workdir: Path, monkeypatch: pytest.MonkeyPatch, killed: str
) -> None:
    configure(workdir, SWEEP)
    monkeypatch.setattr("jobguard.adapters.lease._WAIT_STEP", 0.1)  # look at a lease about to expire often (the runs after a kill)
    seed.queue("work")
    seed.definition("proc")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")  # as in a workflow: the deploy id is the run id, restore is not named
    kind = store.split(":")[0]
    started, totals = time.monotonic(), {"kills": 0, "runs": 0, "jobs": 0, "lost": 0, "doubled": 0}
    k = 1
    while True:
        where = _round_store(store, k, seed)
        run_id = f"r{k}"
        jobs = _sweep_world(seed, k)
        if killed == "restore":
            monkeypatch.setenv("GITHUB_RUN_ID", run_id)
            assert run("drain", "--store", where, "--queue", "work").code == 0
        process = _killed_after(aws, k, every_call=kind == "file", command=killed, where=where, run_id=run_id)
        if process.returncode != -signal.SIGKILL:  # it made fewer calls than that: the sweep is over
            assert process.returncode == 0, process.stderr.read()
            _finish_round(aws)
            break
        if killed == "drain":  # whatever instant it died at, nothing was stopped unrecorded or unmarked
            _check_stopped_only_when_marked(aws, jobs, _records_or_none(where, seed, run_id) or {})
        follow_up = FOLLOW_UPS[killed][(k + STORE_OFFSET[kind]) % len(FOLLOW_UPS[killed])]
        runs = 1 + (killed == "restore") + _follow_up(killed, follow_up, run, seed, monkeypatch, where, run_id, jobs)
        lost, doubled = _count(aws, jobs)
        record_faults(runs=runs, faults=1, jobs=len(jobs), lost=len(lost), doubled=len(doubled))
        assert (lost, doubled) == ([], []), f"kill at point {k}, then {follow_up}: {_story(aws, where, seed, run_id, jobs)}"
        for key, value in (("kills", 1), ("runs", runs), ("jobs", len(jobs))):
            totals[key] += value
        _finish_round(aws)
        k += 1
    print(f"\nkill sweep of {killed} on {kind}: {totals} in {time.monotonic() - started:.0f} s")
    assert totals["kills"] >= MIN_KILLS[killed], f"the sweep killed the process only {totals['kills']} times"


# A page's TerminateJobs go out on a worker thread while the next page is described and recorded:
# a kill at a page's stop falls while the next page's write may be on its way.
PAGED_DRAIN = "import sys, jobguard.commands.drain as d; d.RECORD_PAGE = 2; from jobguard.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.mark.parametrize(("stop_call", "follow_up"), [(1, "restore"), (2, "rerun"), (3, "next-push")])
def test_kill_9_at_a_page_stop_while_the_next_page_is_recorded(
    seed: Seeder, store: str, run, aws: SimulatedAWS, workdir: Path, monkeypatch: pytest.MonkeyPatch, stop_call: int, follow_up: str
) -> None:
    configure(workdir, SWEEP)
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    seed.queue("work")
    seed.definition("proc")
    jobs = [seed.job(status=("RUNNING", "RUNNABLE")[i % 2], jobName=f"j{i}", jobQueue="work", jobDefinition="proc") for i in range(8)]
    # dependents of jobs of later pages, one of them a chain
    jobs += [
        seed.job(status="PENDING", jobName=f"d{i}", jobQueue="work", jobDefinition="proc", dependsOn=[{"jobId": jobs[2 * i + 3]}])
        for i in range(2)
    ]
    jobs.append(seed.job(status="PENDING", jobName="chain", jobQueue="work", jobDefinition="proc", dependsOn=[{"jobId": jobs[-1]}]))
    pid: list[int] = []

    def kill(action: str, count: int) -> None:  # right after Batch carried the call out
        if action in STOP_ACTIONS and count == stop_call and pid:
            with suppress(ProcessLookupError):
                os.kill(pid[0], signal.SIGKILL)

    aws.after = kill
    monkeypatch.setenv("GITHUB_RUN_ID", "r1")
    process = subprocess.Popen(
        [sys.executable, "-c", PAGED_DRAIN, "drain", "--store", store, "--queue", "work"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    pid.append(process.pid)
    _, err = process.communicate(timeout=120)
    aws.after = None
    assert process.returncode == -signal.SIGKILL, err
    assert _check_stopped_only_when_marked(aws, jobs, records(store, seed, "r1"))  # some were stopped, each marked first
    runs = 1 + _follow_up("drain", follow_up, run, seed, monkeypatch, store, "r1", jobs)
    lost, doubled = _count(aws, jobs)
    record_faults(runs=runs, faults=1, jobs=len(jobs), lost=len(lost), doubled=len(doubled))
    assert (lost, doubled) == ([], [])


def _round_store(store: str, k: int, seed: Seeder) -> str:
    """A store of the round's own (rounds do not see each other's deploys or leases)."""
    if store.startswith("dynamodb://"):
        create_table(seed, f"{TABLE}-{k}")
        return f"dynamodb://{TABLE}-{k}"
    return f"{store}-{k}"


def _sweep_world(seed: Seeder, k: int) -> list[str]:
    """A running job, one PENDING on it, one RUNNABLE (earlier rounds' jobs have all finished)."""
    first = seed.job(jobName=f"k{k}-run", jobQueue="work", jobDefinition="proc")
    pending = seed.job(status="PENDING", jobName=f"k{k}-dep", jobQueue="work", jobDefinition="proc", dependsOn=[{"jobId": first}])
    queued = seed.job(status="RUNNABLE", jobName=f"k{k}-queued", jobQueue="work", jobDefinition="proc")
    return [first, pending, queued]


def _killed_after(aws: SimulatedAWS, k: int, every_call: bool, command: str, where: str, run_id: str) -> Any:
    """Run `command` as a workflow step would, and kill -9 it right after its k-th kill point (see above)."""
    pid: list[int] = []
    calls, points = [0], [0]
    lock = threading.Lock()

    def after(action: str, count: int) -> None:
        with lock:
            if not pid:
                return
            calls[0] += 1
            if not (every_call or calls[0] == 1 or action in CHANGING):
                return
            points[0] += 1
            hit = points[0] == k
        if hit:
            with suppress(ProcessLookupError):
                os.kill(pid[0], signal.SIGKILL)

    aws.after = after
    args = ["--queue", "work"] if command == "drain" else []
    process = run_process(command, "--store", where, *args, env={"GITHUB_RUN_ID": run_id})
    with lock:
        pid.append(process.pid)
    process.wait(timeout=120)
    aws.after = None
    return process


def _follow_up(
    killed: str, follow_up: str, run: Any, seed: Seeder, monkeypatch: pytest.MonkeyPatch, where: str, run_id: str, jobs: list[str]
) -> int:
    """What the workflow does after the kill, to the end; how many jobguard runs that took."""
    if follow_up == "next-push":  # a new run id, new work on the same queue
        jobs.append(seed.job(jobName=f"{run_id}-new", jobQueue="work", jobDefinition="proc"))
        run_id = f"{run_id}-next"
        steps = ["drain", "restore"]
    elif follow_up == "rerun":
        steps = ["drain", "restore"] if killed == "drain" else ["restore"]
    else:
        steps = ["restore"]
    monkeypatch.setenv("GITHUB_RUN_ID", run_id)
    for step in steps:
        args = ["--queue", "work"] if step == "drain" else []
        result = run(step, "--store", where, *args)
        assert result.code == 0, f"{follow_up}: {step}: {result.err}"
    return len(steps)


def _records_or_none(where: str, seed: Seeder, run_id: str) -> dict[str, dict[str, Any]] | None:
    try:
        return records(where, seed, run_id)
    except Exception:  # no manifest yet: killed before its first save
        return {}


def _count(aws: SimulatedAWS, jobs: list[str]) -> tuple[list[str], list[str]]:
    """(lost, doubled) among the round's jobs and their replacements.

    Lost: ended by jobguard (stopped, or failed with a stopped dependency) with no replacement.
    Doubled: more than one replacement, a replacement of a job that finished, or one that ran
    beside its original.
    """
    found = replacements_of(aws)
    lineage = list(jobs)
    for job in lineage:  # a replacement drained by the next push is itself owed a replacement
        lineage += [r for r in found.get(job, []) if r not in lineage]
    lost, doubled = [], []
    with aws.batch.lock:
        aws.batch.tick()
        statuses = {j: aws.batch.jobs[j].status for j in lineage}
    for job in lineage:
        count = len(found.get(job, []))
        if statuses[job] == "FAILED" and count == 0:
            lost.append(job)
        if count > 1 or (count and statuses[job] == "SUCCEEDED"):
            doubled.append(job)
    doubled += [j for j in overlapping(aws) if j in lineage]
    return lost, doubled


def _story(aws: SimulatedAWS, where: str, seed: Seeder, run_id: str, jobs: list[str]) -> str:
    """What became of the round's jobs, for a failure message."""
    found = replacements_of(aws)
    lines = []
    for deploy in (run_id, f"{run_id}-next"):
        for job_id, record in (_records_or_none(where, seed, deploy) or {}).items():
            lines.append(f"{deploy}: {record['job_name']} {job_id[:8]} {record['outcome']}/{record['stage']} {record.get('error') or ''}")
    for job in jobs + [r for j in jobs for r in found.get(j, [])]:
        state = aws.batch.jobs[job]
        lines.append(
            f"batch: {state.name} {job[:8]} {state.status} kind={state.stop_kind} replaced by {[r[:8] for r in found.get(job, [])]}"
        )
    return "\n".join(lines)


def _finish_round(aws: SimulatedAWS) -> None:
    """Every job still active finishes: the next round's drain meets only its own jobs."""
    for job in list(aws.batch.active_jobs()):
        aws.batch.finish(job.job_id)


# -- kill -9 of drain at every call, then who gets the queues, and how soon (issue 28) ----------

# The queues of a drain killed mid-way (no restore step, as when its runner died) go to the same
# run's restore at once, to the next deploy's drain on this machine at once (the holder's process
# is gone), and to the next deploy's drain on another machine once lock-ttl has passed since the
# dead holder's last renewal. lease-ttl is two hours here: none of these may wait for it.
HANDOVER = "lock-ttl: 2\nlease-ttl: 2h\nlock-timeout: 60\nstop-timeout: 10\n"
HANDOVER_BOUND = {
    "same-run-restore": 1.0,
    "next-deploy-same-machine": 1.0,
    "next-deploy-other-machine": 2.0 + 1.5,
}  # s waiting for the lease


@pytest.mark.parametrize("then", ["same-run-restore", "next-deploy-same-machine", "next-deploy-other-machine"])
def test_kill_9_of_drain_at_every_call_then_the_queues_are_handed_over(
    seed: Seeder, store: str, run, aws: SimulatedAWS, workdir: Path, monkeypatch: pytest.MonkeyPatch, then: str
) -> None:
    configure(workdir, HANDOVER)
    monkeypatch.setattr("jobguard.adapters.lease._WAIT_STEP", 0.1)
    seed.queue("work")
    seed.definition("proc")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    kind = store.split(":")[0]
    longest, k = 0.0, 1
    while True:
        where = _round_store(store, k, seed)
        run_id = f"h{k}"
        jobs = _sweep_world(seed, k)
        process = _killed_after(aws, k, every_call=kind == "file", command="drain", where=where, run_id=run_id)
        if process.returncode != -signal.SIGKILL:
            assert process.returncode == 0, process.stderr.read()
            _finish_round(aws)
            break
        monkeypatch.setenv("GITHUB_RUN_ID", run_id if then == "same-run-restore" else f"{run_id}-next")
        lease = read_lease(open_store(where, Aws(AwsSettings())), "work", lease_scope(ACCOUNT, REGION))
        if then != "same-run-restore" and lease is not None and lease.holder_id is None:
            _release_as_told(run, where, run_id)  # killed after it handed the lease on: the deploy is in its apply
        with monkeypatch.context() as elsewhere:
            if then == "next-deploy-other-machine":  # the dead holder's process cannot be looked up from here
                elsewhere.setattr("jobguard.adapters.lease.socket.gethostname", lambda: "another-runner")
            blocked = _blocked_for(aws, run, where, then, elsewhere)
        longest = max(longest, blocked)
        assert blocked <= HANDOVER_BOUND[then], f"kill at point {k}: {then} was blocked {blocked:.1f} s"
        if then != "same-run-restore":  # the next deploy's restore brings back its own and the adopted jobs
            restored = run("restore", "--store", where)
            assert restored.code == 0, f"kill at point {k}: restore: {restored.err}"
        lost, doubled = _count(aws, jobs)
        record_faults(runs=2 + (then != "same-run-restore"), faults=1, jobs=len(jobs), lost=len(lost), doubled=len(doubled))
        assert (lost, doubled) == ([], []), f"kill at point {k}, then {then}: {_story(aws, where, seed, run_id, jobs)}"
        _finish_round(aws)
        k += 1
    print(f"\nkilled drain on {kind}, then {then}: {k - 1} kill points, longest blocked {longest:.2f} s")
    assert k - 1 >= MIN_KILLS["drain"]


def _blocked_for(aws: SimulatedAWS, run: Any, where: str, then: str, patch: pytest.MonkeyPatch) -> float:
    """Run the follow-up step; how long it waited for the dead deploy's lease (its `Leases.acquire`)."""
    step = "restore" if then == "same-run-restore" else "drain"
    waited: list[float] = []
    acquire = Leases.acquire

    def timed(self: Leases, queues: Any) -> None:
        started = time.monotonic()
        try:
            acquire(self, queues)
        finally:
            waited.append(time.monotonic() - started)

    patch.setattr(Leases, "acquire", timed)
    result = run(step, "--store", where, *(["--queue", "work"] if step == "drain" else []))
    assert result.code == 0, f"{then}: {step}: {result.err}"
    return sum(waited)


def _release_as_told(run: Any, where: str, dead: str) -> None:
    """A deploy that died after its drain handed its lease on (in its apply) keeps its queues for lease-ttl,
    as README says: the next drain is refused, naming the command that releases them, which is then run."""
    refused = run("drain", "--store", where, "--queue", "work", "--lock-timeout", "0.3")
    told = f"jobguard restore --store {open_store(where, Aws(AwsSettings())).location()} --deploy-id {dead}"
    assert refused.code == 3 and f"`{told}`" in refused.err, refused.err
    released = run(*told.split()[1:])
    assert released.code == 0, released.err
