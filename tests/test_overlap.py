"""Deploys that overlap, fail half-way or are abandoned (issue 12): after a kill or a failure the
pipeline goes on as the example workflow does (apply skipped and restore at once, or the next
push starts a new deploy), pipelines share a store, matrix legs share a run id, a holder pauses
past its ttl, runner clocks differ, the store holds a copy or another region's manifest, a queue
is misspelt, a job is at its resubmit cap. Every scenario runs on every store and counts the jobs
lost (no copy left running or replaced) and doubled (two copies) for docs/reliability.md.

"apply" here is what a deploy does to running work: every job still active on the queues it
touches is killed (a replacement submitted during another pipeline's apply dies with them).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from jobguard.adapters.aws import Aws, AwsSettings
from jobguard.adapters.lease import Leases, LeaseSettings, lease_scope
from jobguard.adapters.stores import open_store
from jobguard.commands.manifests import Manifests
from jobguard.domain.tags import mark_of
from jobguard.sim import STOP_ACTIONS, Seeder, SimulatedAWS
from jobguard.sim.server import ACCOUNT

from .conftest import (
    asked_to_stop,
    configure,
    load_manifest,
    merged_config,
    overlapping,
    record_faults,
    records,
    replacements_of,
    run_process,
)

pytestmark = pytest.mark.slow  # every case runs two or more pipelines against each other, with real waits

ACTIVE = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING")

# Test-only: put on PYTHONPATH of a jobguard subprocess to give it another machine's clock or
# name, or to kill it right after it recorded jobs (marked `terminating`) and before it stops any. Never in the product.
SITECUSTOMIZE = """\
import os
import time

_shift = float(os.environ.get("JOBGUARD_TEST_CLOCK_SHIFT") or 0)
if _shift:
    _time, _time_ns = time.time, time.time_ns
    time.time = lambda: _time() + _shift
    time.time_ns = lambda: _time_ns() + int(_shift * 1e9)

if os.environ.get("JOBGUARD_TEST_HOSTNAME"):
    import socket

    socket.gethostname = lambda: os.environ["JOBGUARD_TEST_HOSTNAME"]

if os.environ.get("JOBGUARD_TEST_KILL_BEFORE_STOP"):
    import signal

    from jobguard.commands import drain

    _send_stops = drain._Drain._send_stops

    def _killed(self, manifest, marked, ahead=None):
        if marked:  # the records are in the store, marked `terminating`; no stop call was sent
            os.kill(os.getpid(), signal.SIGKILL)
        return _send_stops(self, manifest, marked, ahead)

    drain._Drain._send_stops = _killed
"""


# -- the world and the pipelines ------------------------------------------------------------
def _queue(seed: Seeder, name: str, jobs: int, chain: bool = True) -> list[str]:
    """A queue with `jobs` jobs: one running, the others PENDING on it when `chain` (Batch fails them if it fails)."""
    seed.queue(name)
    if not seed.batch.describe_job_definitions(jobDefinitionName="proc", status="ACTIVE")["jobDefinitions"]:
        seed.definition("proc")
    first = seed.job(jobName=f"{name}-0", jobQueue=name, jobDefinition="proc")
    waits: dict[str, Any] = {"dependsOn": [{"jobId": first}]} if chain else {}
    rest = [
        seed.job(status="PENDING" if chain else "RUNNING", jobName=f"{name}-{i}", jobQueue=name, jobDefinition="proc", **waits)
        for i in range(1, jobs)
    ]
    return [first, *rest]


def _actions_env(run_id: str | None, repository: str = "org/stack") -> dict[str, str]:
    return {"GITHUB_ACTIONS": "true", "GITHUB_RUN_ID": run_id, "GITHUB_REPOSITORY": repository} if run_id else {}


@contextmanager
def _as(run_id: str | None, repository: str = "org/stack") -> Iterator[None]:
    """Run in-process as the action does in run `run_id` (None: a person at a terminal)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("GITHUB_ACTIONS", "GITHUB_RUN_ID", "GITHUB_REPOSITORY"):
            patch.delenv(name, raising=False)
        for name, value in _actions_env(run_id, repository).items():
            patch.setenv(name, value)
        yield


@dataclasses.dataclass
class Pipeline:
    """One deploy workflow as examples/workflows/deploy.yml runs it: drain, apply, restore (always)."""

    run: Any
    store: str
    run_id: str
    queues: tuple[str, ...]
    runs: int = 0

    def _flags(self) -> list[str]:
        return ["--store", self.store, *[f for q in self.queues for f in ("--queue", q)]]

    def drain(self, *extra: str) -> Any:
        self.runs += 1
        with _as(self.run_id):
            return self.run("drain", *self._flags(), *extra)

    def restore(self, *extra: str) -> Any:
        self.runs += 1
        with _as(self.run_id):
            return self.run("restore", *self._flags(), *extra)


def apply(aws: SimulatedAWS, *queues: str) -> list[str]:
    """The deploy replaces what the queues run on: every job still active there is killed."""
    killed = []
    with aws.batch.lock:
        aws.batch.tick()
        for job in list(aws.batch.jobs.values()):
            if job.index is None and job.status in ACTIVE and job.queue_arn.rsplit("/", 1)[-1] in queues:
                killed.append(job.job_id)
    for job_id in killed:
        aws.batch.set_status(job_id, "FAILED")
    return killed


def tally(aws: SimulatedAWS, originals: list[str], runs: int, faults: int) -> tuple[int, int]:
    """(lost, doubled) over `originals`, noted for the fault report.

    A job's copies are the jobs of its line (itself, its replacement, the replacement's
    replacement after a later deploy, ...) still running or finished on their own: none is a lost
    job, two are a doubled one, and so is a replacement created while its original could still run.
    """
    beside = set(overlapping(aws))
    with aws.batch.lock:
        aws.batch.tick()
        jobs = [j for j in aws.batch.jobs.values() if j.index is None]
        marks = {j.job_id: mark_of(aws.batch.detail(j)) for j in jobs}
    line = {job_id: (mark.lineage_id if mark else job_id) for job_id, mark in marks.items()}
    live: dict[str, int] = {}
    for job in jobs:
        if job.status in (*ACTIVE, "SUCCEEDED"):
            live[line[job.job_id]] = live.get(line[job.job_id], 0) + 1
    doubled_lines = {line[m.original_id] for m in marks.values() if m and m.original_id in beside and m.original_id in line}
    lost = sum(live.get(line[j], 0) == 0 for j in originals)
    doubled = sum(live.get(line[j], 0) > 1 or line[j] in doubled_lines for j in originals)
    record_faults(runs=runs, faults=faults, jobs=len(originals), lost=lost, doubled=doubled)
    return lost, doubled


def _owed_twice(store: str, seed: Seeder, deploys: list[str]) -> set[str]:
    """Original job ids recorded by more than one of `deploys`' manifests."""
    seen: dict[str, int] = {}
    for deploy in deploys:
        for job_id in records(store, seed, deploy):
            seen[job_id] = seen.get(job_id, 0) + 1
    return {j for j, n in seen.items() if n > 1}


# -- processes -------------------------------------------------------------------------------
class Process:
    """A jobguard process whose output is read as it comes (so a test can wait for a line)."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.popen = run_process(*args, env=env)
        self.lines: dict[str, list[str]] = {"out": [], "err": []}
        self.changed = threading.Condition()
        self.readers = [
            threading.Thread(target=self._read, args=(stream, name), daemon=True)
            for stream, name in ((self.popen.stdout, "out"), (self.popen.stderr, "err"))
        ]
        for reader in self.readers:
            reader.start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _read(self, stream: Any, name: str) -> None:
        for line in stream:
            with self.changed:
                self.lines[name].append(line)
                self.changed.notify_all()

    def saw(self, text: str, timeout: float = 60) -> bool:
        """Wait until the process printed `text` (stdout or stderr); False if it did not in time or ended."""
        with self.changed:
            return self.changed.wait_for(
                lambda: any(text in line for lines in self.lines.values() for line in lines) or self.popen.poll() is not None, timeout
            ) and any(text in line for lines in self.lines.values() for line in lines)

    def finish(self, timeout: float = 120) -> tuple[int, str, str]:
        self.popen.wait(timeout)
        for reader in self.readers:
            reader.join(10)
        return self.popen.returncode, "".join(self.lines["out"]), "".join(self.lines["err"])


@pytest.fixture
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("shim")
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return folder


def _shimmed(shim: Path, **settings: str) -> dict[str, str]:
    return {"PYTHONPATH": str(shim), **{f"JOBGUARD_TEST_{k.upper()}": v for k, v in settings.items()}}


# -- the store, edited as a person (or another jobguard) would -------------------------------
def _copy_manifest(store: str, seed: Seeder, source: str, target: str, with_index: bool) -> None:
    """Copy a manifest (and, with_index, its entry in the index of open deploys) under another name."""
    if store.startswith("file://"):
        folder = Path(store[len("file://") :])
        (folder / f"{target}.json").write_bytes((folder / f"{source}.json").read_bytes())
        if with_index:
            (folder / "open" / f"{target}.json").write_bytes((folder / "open" / f"{source}.json").read_bytes())
    elif store.startswith("s3://"):
        bucket, _, prefix = store[len("s3://") :].partition("/")
        s3 = seed.client("s3")
        s3.copy_object(Bucket=bucket, Key=f"{prefix}/{target}.json", CopySource={"Bucket": bucket, "Key": f"{prefix}/{source}.json"})
        if with_index:
            s3.copy_object(
                Bucket=bucket, Key=f"{prefix}/open/{target}.json", CopySource={"Bucket": bucket, "Key": f"{prefix}/open/{source}.json"}
            )
    else:
        table, dynamodb = store[len("dynamodb://") :], seed.client("dynamodb")
        header = dynamodb.get_item(TableName=table, Key={"pk": {"S": "deploys"}, "sk": {"S": source}})["Item"]
        dynamodb.put_item(TableName=table, Item={**header, "sk": {"S": target}})
        items = dynamodb.query(
            TableName=table, KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": {"S": f"deploy#{source}"}}
        )["Items"]
        for item in items:
            dynamodb.put_item(TableName=table, Item={**item, "pk": {"S": f"deploy#{target}"}})
        if with_index:
            entry = dynamodb.get_item(TableName=table, Key={"pk": {"S": "open"}, "sk": {"S": source}})["Item"]
            dynamodb.put_item(TableName=table, Item={**entry, "sk": {"S": target}})


def _edit_header(store: str, seed: Seeder, deploy_id: str, **changes: str) -> None:
    """Change fields of a stored manifest's header in place (as another region's jobguard would have written them)."""
    if store.startswith("file://"):
        path = Path(store[len("file://") :], f"{deploy_id}.json")
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    elif store.startswith("s3://"):
        bucket, _, prefix = store[len("s3://") :].partition("/")
        document = load_manifest(store, seed, deploy_id)
        seed.client("s3").put_object(Bucket=bucket, Key=f"{prefix}/{deploy_id}.json", Body=json.dumps({**document, **changes}).encode())
    else:
        table, dynamodb = store[len("dynamodb://") :], seed.client("dynamodb")
        key = {"pk": {"S": "deploys"}, "sk": {"S": deploy_id}}
        header = dynamodb.get_item(TableName=table, Key=key)["Item"]
        body = {**json.loads(header["body"]["S"]), **changes}
        dynamodb.put_item(TableName=table, Item={**header, "body": {"S": json.dumps(body)}})


# -- the scenarios ---------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["person", "action"])
def test_restore_during_another_pipeline_s_apply(seed: Seeder, store: str, run, aws: SimulatedAWS, how: str) -> None:
    """Two pipelines share a store; one restores (by hand with no deploy id, or as the action does)
    while the other is in its apply. Nothing of the other's is touched until its own restore."""
    a_jobs, b_jobs = _queue(seed, "stack-a", 3), _queue(seed, "stack-b", 3)
    a = Pipeline(run, store, "1001", ("stack-a",))
    b = Pipeline(run, store, "2002", ("stack-b",))
    assert a.drain().code == 0 and b.drain().code == 0
    apply(aws, "stack-b")
    people = 0
    if how == "person":
        people = 1
        with _as(None):
            by_hand = run("restore", "--store", store)  # no deploy id, no queues: "everything left"
        assert by_hand.code == 0, by_hand.err
        assert "queue stack-a: left alone: deploy 1001 holds it" in by_hand.out
        assert "queue stack-b: left alone: deploy 2002 holds it" in by_hand.out
        assert replacements_of(aws) == {}
    restored = b.restore()  # during a's apply
    assert restored.code == 0, restored.err
    assert set(replacements_of(aws)) == set(b_jobs)
    apply(aws, "stack-a")  # a's apply kills what runs on stack-a: a replacement sent now would die
    assert a.restore().code == 0
    assert tally(aws, a_jobs + b_jobs, runs=a.runs + b.runs + people, faults=1) == (0, 0)


@pytest.mark.parametrize("then", ["restore-at-once", "next-push"])
@pytest.mark.parametrize("killed", ["after-recording", "after-terminate"])
def test_killed_drain_then_the_pipeline_goes_on(
    seed: Seeder, store: str, run, aws: SimulatedAWS, workdir: Path, shim: Path, killed: str, then: str
) -> None:
    """The first push's drain is killed after it recorded its jobs (before, or just after, it
    stopped the first); its pipeline restores at once (apply skipped), or dies and the next push
    (a new run id) drains the same queue once the dead deploy's lease has expired: it adopts the
    unfinished work, no job is owed by two manifests, and nothing is left failed."""
    configure(workdir, "lease-ttl: 2")  # the longest apply expected, for this test
    jobs = _queue(seed, "work", 3)
    first = Pipeline(run, store, "3001", ("work",))
    env = _actions_env(first.run_id)
    pid: list[int] = []
    if killed == "after-recording":
        env.update(_shimmed(shim, kill_before_stop="1"))
    else:

        def kill(action: str, count: int) -> None:
            if action in STOP_ACTIONS and count == 1 and pid:
                os.kill(pid[0], signal.SIGKILL)

        aws.after = kill
    process = run_process("drain", "--store", store, "--queue", "work", env=env)
    pid.append(process.pid)
    process.communicate(timeout=60)
    aws.after = None
    assert process.returncode == -signal.SIGKILL
    stored = records(store, seed, "3001")
    assert set(stored) == set(jobs)
    assert {r["outcome"] for r in stored.values()} == {"terminating"}  # marked before any stop call is sent
    assert sum(asked_to_stop(aws, j) for j in jobs) == (0 if killed == "after-recording" else len(jobs))  # one TerminateJobs call
    runs = 1
    if then == "restore-at-once":  # the drain step failed: apply is skipped, restore runs (always)
        at_once = first.restore()
        assert at_once.code == 0, at_once.err
        runs += 1
    later = [seed.job(jobName=f"later-{i}", jobQueue="work", jobDefinition="proc") for i in range(2)]
    second = Pipeline(run, store, "3002", ("work",))
    drained = second.drain()
    assert drained.code == 0, drained.err
    apply(aws, "work")
    restored = second.restore()
    assert restored.code == 0, restored.err
    assert "failed" not in restored.err
    assert _owed_twice(store, seed, ["3001", "3002"]) == set()
    for deploy in ("3001", "3002"):
        assert all(r["outcome"] in ("resubmitted", "finished") for r in records(store, seed, deploy).values()), deploy
    with _as(None):
        afterwards = run("restore", "--store", store)
    assert afterwards.code == 0 and "nothing to restore" in afterwards.out
    assert tally(aws, jobs + later, runs=runs + second.runs + 1, faults=1) == (0, 0)


def test_restore_of_everything_while_a_drain_starts(seed: Seeder, store: str, run, aws: SimulatedAWS, workdir: Path, shim: Path) -> None:
    """A person restores everything while a pipeline's drain has saved its (still empty) manifest
    and is listing the queue; the drain is then killed after recording. The deploy must stay in
    the index of open deploys, so that the next push adopts its jobs instead of draining them again
    (and a later restore of the dead deploy, as the lease message suggests, finds nothing owed)."""
    configure(workdir, "lease-ttl: 2")
    jobs = _queue(seed, "work", 3, chain=False)
    listing, restored_meanwhile = threading.Event(), threading.Event()
    first_list = aws.calls["batch:ListJobs"] + 1

    def meanwhile(action: str, count: int) -> None:
        if action == "batch:ListJobs" and count == first_list:
            listing.set()
            restored_meanwhile.wait(60)

    aws.after = meanwhile
    drain = Process("drain", "--store", store, "--queue", "work", env={**_actions_env("1301"), **_shimmed(shim, kill_before_stop="1")})
    assert listing.wait(60)
    aws.after = None
    with _as(None):
        by_hand = run("restore", "--store", store)
    restored_meanwhile.set()
    assert by_hand.code == 0, by_hand.err
    code, _, err = drain.finish()
    assert code == -signal.SIGKILL, err
    assert {r["outcome"] for r in records(store, seed, "1301").values()} == {"terminating"}
    assert not any(asked_to_stop(aws, j) for j in jobs)
    second = Pipeline(run, store, "1302", ("work",))
    drained = second.drain()
    assert drained.code == 0, drained.err
    assert "adopting deploy 1301" in drained.out
    apply(aws, "work")
    assert second.restore().code == 0
    with _as(None):
        hinted = run("restore", "--store", store, "--deploy-id", "1301")  # what the lease message suggests after a cancelled deploy
    assert hinted.code == 0, hinted.err
    assert _owed_twice(store, seed, ["1301", "1302"]) == set()
    assert tally(aws, jobs, runs=second.runs + 3, faults=1) == (0, 0)


def test_a_restore_of_everything_between_a_drain_indexing_its_deploy_and_saving_it(
    seed: Seeder, store: str, run, aws: SimulatedAWS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A person's restore of everything reads the index just after a drain put its deploy there, and before the
    drain's manifest exists: it finds no manifest behind the entry and drops it as stale. The drain goes on and
    records its jobs; its entry must be back, or no later restore of everything (nor the next deploy's
    adoption) sees those jobs again."""
    jobs = _queue(seed, "work", 3, chain=False)
    write = Manifests._write
    restored: list[subprocess.CompletedProcess[str]] = []

    def restore_first(self: Manifests, manifest: Any, ids: list[str], read_back: set[str]) -> None:
        if not restored:
            popen = run_process("restore", "--store", store)
            out, err = popen.communicate(timeout=120)
            restored.append(subprocess.CompletedProcess(popen.args, popen.returncode, out, err))
        write(self, manifest, ids, read_back)

    monkeypatch.setattr(Manifests, "_write", restore_first)
    drained = run("drain", "--store", store, "--queue", "work", "--deploy-id", "1301")
    monkeypatch.setattr(Manifests, "_write", write)
    assert drained.code == 0, drained.err
    assert restored[0].returncode == 0 and "nothing to restore" in restored[0].stdout, restored[0]
    assert all(asked_to_stop(aws, j) for j in jobs)
    by_hand = run("restore", "--store", store)  # of everything: it sees the deploy (and leaves it to its own restore)
    assert by_hand.code == 0 and "deploy 1301 holds it" in by_hand.out and "3 owed jobs wait for its restore" in by_hand.out, by_hand.out


@pytest.mark.parametrize("legs", [2])
def test_matrix_legs_share_a_run_id(seed: Seeder, store: str, run, aws: SimulatedAWS, legs: int) -> None:
    """Matrix legs share the run id (so the deploy id) and drain their own queues at the same time;
    one leg restores while another is still in its apply."""
    queues = [f"leg-{i}" for i in range(legs)]
    jobs = {q: _queue(seed, q, 40, chain=False) for q in queues}
    env = _actions_env("4004")
    drains = [run_process("drain", "--store", store, "--queue", q, "--deploy-id", "4004", env=env) for q in queues]
    for process in drains:
        _, err = process.communicate(timeout=180)
        assert process.returncode == 0, err
    stored = records(store, seed, "4004")
    every = [j for q in queues for j in jobs[q]]
    assert set(stored) == set(every)  # no leg's records overwritten by another's
    assert {r["outcome"] for r in stored.values()} == {"terminated"}
    apply(aws, queues[0])
    first = Pipeline(run, store, "4004", (queues[0],))
    restored = first.restore()  # leg 0 restores while leg 1 is still in its apply
    assert restored.code == 0, restored.err
    assert set(replacements_of(aws)) == set(jobs[queues[0]])
    apply(aws, *queues[1:])
    for queue in queues[1:]:
        leg = Pipeline(run, store, "4004", (queue,))
        assert leg.restore().code == 0
        first.runs += leg.runs
    assert tally(aws, every, runs=legs + first.runs, faults=legs - 1) == (0, 0)


@pytest.mark.parametrize("command", ["drain", "restore"])
def test_a_holder_paused_past_its_ttl_stops_before_its_next_mutation(
    seed: Seeder, store: str, run, aws: SimulatedAWS, workdir: Path, command: str
) -> None:
    """A runner VM pauses (SIGSTOP) in the middle of a drain or restore, past lock-ttl; a re-run of
    the same deploy takes over and finishes; the paused run, resumed, stops before its next
    mutation (exit 3, naming the new holder) instead of acting on the same jobs.

    The run is paced (2 calls/s), as a big restore is: when it pauses, its other calls wait in
    its own pacer, past the lease check they would have passed when they were queued. A call
    already on the wire when the VM pauses is beyond any client's reach (docs/reliability.md)."""
    configure(workdir, "rate: 2\nburst: 1")
    jobs = _queue(seed, "work", 6, chain=False)
    pipeline = Pipeline(run, store, "5005", ("work",))
    if command == "restore":
        assert pipeline.drain().code == 0
    mutation = "batch:TerminateJobs" if command == "drain" else "batch:SubmitJob"
    first_call = aws.calls[mutation] + 1
    paused = threading.Event()
    pid: list[int] = []

    def pause(action: str, count: int) -> None:
        if action == mutation and count >= first_call and not paused.is_set():
            os.kill(pid[0], signal.SIGSTOP)
            if _holds_a_flock(pid[0]):  # inside a file-store write: the re-run would wait lock-timeout for it
                os.kill(pid[0], signal.SIGCONT)  # pause at its next call instead
                return
            paused.set()

    aws.after = pause
    process = Process(command, "--store", store, "--queue", "work", env=_actions_env(pipeline.run_id))
    pid.append(process.pid)
    try:
        assert paused.wait(60)
        aws.after = None
        takeover = pipeline.drain() if command == "drain" else pipeline.restore()  # the re-run, on another runner
        assert takeover.code == 0, takeover.err
    finally:
        os.kill(process.pid, signal.SIGCONT)
    code, _, err = process.finish()
    assert code == 3, err
    assert "lost the deploy lease; it is now held by" in err or "lost the deploy lease; it is now held by nobody" in err
    if command == "drain":
        assert pipeline.restore().code == 0
    assert tally(aws, jobs, runs=pipeline.runs + 1, faults=1) == (0, 0)


def _holds_a_flock(pid: int) -> bool:
    """Whether the process holds a flock (the file store's folder lock): /proc/locks lists each holder's pid."""
    with open("/proc/locks", encoding="ascii") as stream:
        return any(line.split()[1] == "FLOCK" and line.split()[4] == str(pid) for line in stream if len(line.split()) > 4)


# The first call a run makes right after it wrote a new lease: its answer is held back while the other run starts.
_AFTER_LEASE_WRITE = {"file": "batch:ListJobs", "s3": "s3:PutObject", "dynamodb": "dynamodb:PutItem"}


@pytest.mark.parametrize("shift", [-600, 600])
@pytest.mark.parametrize("command", ["drain", "restore"])
def test_runner_clocks_ten_minutes_apart(
    seed: Seeder, store: str, run, aws: SimulatedAWS, shim: Path, request: pytest.FixtureRequest, command: str, shift: int
) -> None:
    """A pipeline's drain (or restore) runs on a runner whose clock is `shift` s off; meanwhile
    another run starts on a runner off by -`shift` s: another deploy's drain of the same queue, or
    a second restore of the same deploy by hand. It waits (the drain then fails, exit 3: the queue
    is the first deploy's until its restore); the first run keeps its lease throughout."""
    jobs = _queue(seed, "work", 5, chain=False)
    pipeline = Pipeline(run, store, "6006", ("work",))
    if command == "restore":
        assert pipeline.drain().code == 0
        action = "batch:SubmitJob"
        other_args = ["restore", "--store", store, "--deploy-id", "6006"]
    else:
        action = _AFTER_LEASE_WRITE[request.node.callspec.params["store"]]
        other_args = ["drain", "--store", store, "--queue", "work", "--deploy-id", "6007", "--lock-timeout", "3"]
    second: list[Process] = []
    seen_waiting: list[bool] = []
    first_call = aws.calls[action] + 1

    def meanwhile(called: str, count: int) -> None:
        if called == action and count == first_call:
            other = Process(*other_args, env=_shimmed(shim, clock_shift=str(-shift), hostname="runner-b"))
            second.append(other)
            seen_waiting.append(other.saw("waiting up to", timeout=60))  # the answer waits until the other run waits

    aws.after = meanwhile
    first = Process(command, "--store", store, "--queue", "work", env={**_actions_env("6006"), **_shimmed(shim, clock_shift=str(shift))})
    code, _, err = first.finish()
    aws.after = None
    assert code == 0, err
    assert "lost the deploy lease" not in err
    (other,) = second
    other_code, _, other_err = other.finish()
    assert seen_waiting == [True], other_err
    if command == "drain":
        assert other_code == 3 and "deploy 6006's lease" in other_err, other_err
        assert pipeline.restore().code == 0
    else:
        assert other_code == 0, other_err
    assert tally(aws, jobs, runs=pipeline.runs + 2, faults=1) == (0, 0)


@pytest.mark.parametrize("with_index", [False, True], ids=["manifest", "manifest-and-index"])
def test_a_copied_manifest_is_never_restored_as_another_deploy(seed: Seeder, store: str, run, aws: SimulatedAWS, with_index: bool) -> None:
    """Someone copies a manifest in the store (`7007.backup.json`, a copied item): every restore
    either ignores the copy or refuses it; none restores it as another deploy."""
    jobs = _queue(seed, "work", 3)
    pipeline = Pipeline(run, store, "7007", ("work",))
    assert pipeline.drain().code == 0
    _copy_manifest(store, seed, "7007", "7007.backup", with_index)
    assert pipeline.restore().code == 0
    assert set(replacements_of(aws)) == set(jobs)
    submitted = aws.calls["batch:SubmitJob"]
    with _as(None):
        named = run("restore", "--store", store, "--deploy-id", "7007.backup")
        everything = run("restore", "--store", store)
    assert named.code == 2 and "the manifest says deploy '7007', its name says '7007.backup'" in named.err
    if with_index:
        assert everything.code == 2 and "a copy or an edit" in everything.err
    else:
        assert everything.code == 0 and "nothing to restore" in everything.out
    assert aws.calls["batch:SubmitJob"] == submitted
    assert tally(aws, jobs, runs=pipeline.runs + 2, faults=1) == (0, 0)


def test_a_foreign_region_manifest_is_skipped_or_refused(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    """A store shared by two regions: the other region's open manifest is skipped with a note by a
    restore of everything (this region's jobs come back) and refused when named, and its lease on a
    queue of the same name is not this region's queue's."""
    _queue(seed, "eu", 2)
    with _as(None):
        assert run("drain", "--store", store, "--queue", "eu", "--deploy-id", "eu-1").code == 0
    _edit_header(store, seed, "eu-1", region="eu-west-1")  # as a jobguard in eu-west-1 wrote it
    # eu-1 is in its apply in eu-west-1, on a queue also named `work`: that lease is not this region's.
    eu = Leases(open_store(store, Aws(AwsSettings())), "eu-1", LeaseSettings(), lambda text: None, lease_scope(ACCOUNT, "eu-west-1"))
    eu.acquire(["work"])
    eu.release(keep_for_deploy=True)
    jobs = _queue(seed, "work", 3)
    pipeline = Pipeline(run, store, "8008", ("work",))
    drained = pipeline.drain("--lock-timeout", "1")
    assert drained.code == 0, drained.err
    assert "skipped:" in drained.err and "eu-west-1" in drained.err
    apply(aws, "work")
    restored = pipeline.restore()
    assert restored.code == 0, restored.err
    assert "skipped:" in restored.out and "manifest of account 123456789012 in eu-west-1" in restored.out
    with _as(None):
        everything = run("restore", "--store", store)
        named = run("restore", "--store", store, "--deploy-id", "eu-1")
    assert everything.code == 0 and "skipped:" in everything.out, everything.err
    assert named.code == 2 and "eu-west-1" in named.err
    assert tally(aws, jobs, runs=pipeline.runs + 3, faults=1) == (0, 0)


def test_every_named_queue_misspelt_stops_the_pipeline_before_apply(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    """drain fails (exit 2) and stops nothing, so the workflow skips the apply; restore finds nothing."""
    jobs = _queue(seed, "work", 3)
    pipeline = Pipeline(run, store, "9009", ("wrok", "work-queue"))
    drained = pipeline.drain("--freeze")
    assert drained.code == 2 and "queue wrok: does not exist" in drained.err and "nothing was drained" in drained.err
    assert aws.stop_calls == aws.calls["batch:UpdateJobQueue"] == 0
    if drained.code == 0:  # the workflow's apply runs only after a drain that succeeded
        apply(aws, "work")
    restored = pipeline.restore()
    assert restored.code == 0 and "nothing to restore" in restored.out
    assert tally(aws, jobs, runs=pipeline.runs, faults=1) == (0, 0)


def test_a_job_at_its_resubmit_cap_is_left_running(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    """A job whose line was already resubmitted max-resubmits times is not stopped: reported, left running."""
    jobs = _queue(seed, "work", 2, chain=False)
    capped = seed.job(jobName="again", jobQueue="work", jobDefinition="proc", tags={"jobguard": "d=old o=jobX l=jobL n=3"})
    pipeline = Pipeline(run, store, "1111", ("work",))
    drained = pipeline.drain()
    assert f"again [{capped}]: its line was already resubmitted 3 times (max-resubmits 3): left running" in drained.err
    assert records(store, seed, "1111")[capped]["outcome"] == "kept"
    assert aws.batch.jobs[capped].status == "RUNNING" and not aws.batch.jobs[capped].terminated
    restored = pipeline.restore()
    assert restored.code == 0, restored.err
    assert capped not in replacements_of(aws) and aws.batch.jobs[capped].status == "RUNNING"
    assert tally(aws, [*jobs, capped], runs=pipeline.runs, faults=1) == (0, 0)


SETTINGS = (
    "lock-ttl: 0",
    "lock-ttl: 0.000001",
    "lock-ttl: .nan",
    "lock-ttl: NaN",
    "lock-ttl: .inf",
    "lock-ttl: inf",
    "lock-ttl: -1",
    "lease-ttl: 0",
    "lock-timeout: .nan",
)


def test_lease_settings_must_be_positive_and_finite(seed: Seeder, store: str, run, aws: SimulatedAWS, workdir: Path) -> None:
    """lock-ttl 0, NaN or inf (and the like) would mean no mutual exclusion or a busy heartbeat: exit 2, one line."""
    jobs = _queue(seed, "work", 2)
    config = (workdir / ".jobguard.yml").read_text()
    pipeline = Pipeline(run, store, "1212", ("work",))
    for setting in SETTINGS:
        (workdir / ".jobguard.yml").write_text(merged_config(config, setting))
        for result in (pipeline.drain(), pipeline.restore()):
            assert result.code == 2, (setting, result.err)
            assert len(result.err.strip().splitlines()) == 1 and setting.split(":")[0] in result.err, result.err
    assert aws.stop_calls == 0
    assert tally(aws, jobs, runs=pipeline.runs, faults=len(SETTINGS)) == (0, 0)


def test_a_job_kept_by_an_open_deploy_is_decided_again_by_the_next(seed: Seeder, store: str, run, aws: SimulatedAWS, workdir: Path) -> None:
    """d1 keeps a job running (policy wait) and stays open (another job cannot come back yet); the
    next push's deploy on the same queue must not skip the job as d1's: its apply would kill it
    with no record anywhere. The policy applies again: kept again, and the step fails again."""
    configure(workdir, "policies:\n  - job-name: 'publish-*'\n    action: wait\n")
    jobs = _queue(seed, "work", 1)
    seed.definition("gone")
    kept = seed.job(jobName="publish-x", jobQueue="work", jobDefinition="proc")
    held = seed.job(jobName="needs-gone", jobQueue="work", jobDefinition="gone")
    first = Pipeline(run, store, "3001", ("work",))
    assert first.drain("--grace", "1s").code == 1  # publish-x still running after the grace period
    seed.batch.deregister_job_definition(jobDefinition="gone:1")  # the deploy removed it: needs-gone cannot come back
    assert first.restore().code == 1
    second = Pipeline(run, store, "3002", ("work",))
    drained = second.drain("--grace", "1s")
    assert drained.code == 1 and f"publish-x [{kept}]: policy wait" in drained.err
    assert records(store, seed, "3002")[kept]["outcome"] == "kept"
    restored = second.restore()  # takes up 3001 too, whose needs-gone still cannot come back
    assert restored.code == 1 and f"needs-gone [{held}]: job definition gone has no ACTIVE revision" in restored.err
    # Once it has finished, the next deploy has nothing of it to decide.
    aws.batch.finish(kept)
    third = Pipeline(run, store, "3003", ("work",))
    assert third.drain().code == 0
    assert kept not in records(store, seed, "3003")
    assert third.restore().code == 1  # 3001's needs-gone, still
    assert tally(aws, [*jobs, kept], runs=first.runs + second.runs + third.runs, faults=1) == (0, 0)


def test_a_kept_job_a_later_deploy_failed_to_stop_still_counts_as_running(
    seed: Seeder, store: str, run, aws: SimulatedAWS, workdir: Path
) -> None:
    """3001 keeps publish-x (policy wait); 3002 (policy dropped) is refused TerminateJob for it, so
    records it failed while it runs on. 3001's dependent of publish-x depends on the running
    original: 3002's failed record is no reason to hold it."""
    base = (workdir / ".jobguard.yml").read_text()
    configure(workdir, "policies:\n  - job-name: 'publish-*'\n    action: wait\n")
    jobs = _queue(seed, "work", 1)
    seed.definition("gone")
    kept = seed.job(jobName="publish-x", jobQueue="work", jobDefinition="proc")
    dependent = seed.job(status="PENDING", jobName="needs", jobQueue="work", jobDefinition="gone", dependsOn=[{"jobId": kept}])
    first = Pipeline(run, store, "3001", ("work",))
    assert first.drain("--grace", "1s").code == 1
    seed.batch.deregister_job_definition(jobDefinition="gone:1")
    assert first.restore().code == 1  # needs cannot come back yet
    (workdir / ".jobguard.yml").write_text(base)
    aws.fault = lambda action, n: (400, "ClientException") if action in STOP_ACTIONS else None
    second = Pipeline(run, store, "3002", ("work",))
    assert second.drain().code == 1
    aws.fault = None
    assert records(store, seed, "3002")[kept]["outcome"] == "failed"
    seed.definition("gone")  # a revision again
    restored = second.restore()
    assert restored.code == 0, restored.err
    (replacement,) = replacements_of(aws)[dependent]
    assert aws.batch.jobs[replacement].request["dependsOn"] == [{"jobId": kept}] and aws.batch.jobs[kept].status == "RUNNING"
    aws.batch.finish(kept)  # the original `needs`, asked to stop, is cancelled; its replacement runs
    assert aws.batch.jobs[dependent].status == "FAILED" and aws.batch.jobs[replacement].status == "RUNNABLE"
    assert tally(aws, [*jobs, kept, dependent], runs=first.runs + second.runs, faults=1) == (0, 0)
