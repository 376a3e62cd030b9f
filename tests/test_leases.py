"""Deploy leases: a second run waits, then fails naming the holder; restore takes the lease of
its queues; a killed run's hold expires (at once when it died on this machine, after lock-ttl
when it ran elsewhere); the heartbeat keeps a long run's lease; two drains started together
never both take a job."""

from __future__ import annotations

import dataclasses
import fcntl
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

from jobguard.adapters.lease import Leases, LeaseSettings, lease_scope, read_lease
from jobguard.adapters.stores.file import FileStore
from jobguard.errors import LeaseError
from jobguard.sim import STOP_ACTIONS, Seeder, SimulatedAWS
from jobguard.sim.server import ACCOUNT, REGION

from .conftest import configure, load_manifest, replacements_of, run_process, store_at

HOLDER_TTL = 2.0  # lock-ttl of the test config (conftest.FAST)
SCOPE = lease_scope(ACCOUNT, REGION)
KEY = f"leases/{SCOPE}work"


def _world(seed: Seeder, jobs: int = 4) -> list[str]:
    seed.queue("work")
    seed.definition("proc")
    return [seed.job(jobName=f"j{i}", jobQueue="work", jobDefinition="proc") for i in range(jobs)]


def _hold(uri: str, deploy_id: str, ttl: float = 60.0) -> Leases:
    """This test process holds `work` for `deploy_id`, renewing it, as a running jobguard would."""
    leases = Leases(store_at(uri), deploy_id, LeaseSettings(wait=1, holder_ttl=ttl, lease_ttl=max(ttl, 30)), lambda text: None, SCOPE)
    leases.acquire(["work"])
    return leases


def _in_actions(monkeypatch: pytest.MonkeyPatch, run_id: str, repository: str = "org/pipeline") -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_RUN_ID", run_id)
    monkeypatch.setenv("GITHUB_REPOSITORY", repository)


def test_second_run_waits_then_fails_naming_the_holder(
    seed: Seeder, store: str, run, aws: SimulatedAWS, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = _world(seed)
    _in_actions(monkeypatch, "777")
    holder = _hold(store, "777")  # run 777's drain is still running
    monkeypatch.delenv("GITHUB_ACTIONS")
    try:
        started = time.monotonic()
        result = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d2", "--lock-timeout", "0.5")
        waited = time.monotonic() - started
    finally:
        holder.release(keep_for_deploy=False)
    assert result.code == 3 and waited >= 0.5, result.err
    assert "queue work: deploy 777's lease, held by https://github.com/org/pipeline/actions/runs/777" in result.err
    assert "queue work: waiting up to" in result.err
    assert aws.stop_calls == 0 and not any(aws.batch.jobs[j].terminated for j in jobs)
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d2").code == 0  # released: d2 goes ahead
    assert all(aws.batch.jobs[j].terminated for j in jobs)


@pytest.mark.slow
def test_a_deploy_between_drain_and_restore_keeps_its_queues(
    seed: Seeder, store: str, run, aws: SimulatedAWS, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _world(seed, jobs=2)
    _in_actions(monkeypatch, "777")
    assert run("drain", "--store", store, "--queue", "work").code == 0  # run 777, now in its apply
    later = seed.job(jobName="later", jobQueue="work", jobDefinition="proc")
    _in_actions(monkeypatch, "778")  # the next push's pipeline
    blocked = run("drain", "--store", store, "--queue", "work", "--lock-timeout", "0.3")
    assert blocked.code == 3
    assert "deploy 777's lease, between its drain and restore (last run: https://github.com/org/pipeline/actions/runs/777)" in blocked.err
    release = f"run `jobguard restore --store {store} --deploy-id 777`: it resubmits the jobs deploy 777 drained and releases its queues"
    assert release in blocked.err
    assert not aws.batch.jobs[later].terminated
    assert run("restore", "--store", store).code == 0  # run 778's restore: nothing of its own, 777's left alone
    assert replacements_of(aws) == {}
    _in_actions(monkeypatch, "777")
    assert run("restore", "--store", store).code == 0  # run 777's restore releases the queue
    assert set(replacements_of(aws)) == set(first)
    _in_actions(monkeypatch, "778")
    assert run("drain", "--store", store, "--queue", "work", "--lock-timeout", "0.3").code == 0
    assert aws.batch.jobs[later].terminated


def test_restore_takes_the_lease_of_its_queues(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    jobs = _world(seed)
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    holder = _hold(store, "d1")  # a re-run of d1's drain, still running
    try:
        result = run("restore", "--store", store, "--deploy-id", "d1", "--lock-timeout", "0.3")
    finally:
        holder.release(keep_for_deploy=True)
    assert result.code == 3 and "queue work: deploy d1's lease, held by" in result.err
    assert replacements_of(aws) == {} and aws.calls["batch:SubmitJob"] == len(jobs)  # the seeded jobs only
    seen: list[Any] = []
    inspect = store_at(store)

    def look(action: str, count: int) -> None:
        if action == "batch:SubmitJob" and count == len(jobs) + 1:  # restore's first
            seen.append(read_lease(inspect, "work", SCOPE))

    aws.after = look
    assert run("restore", "--store", store, "--deploy-id", "d1").code == 0
    (lease,) = seen
    assert lease is not None and lease.deploy_id == "d1" and lease.holder_id is not None and lease.pid == os.getpid()
    assert read_lease(inspect, "work", SCOPE) is None  # released when it was done
    assert {k: len(v) for k, v in replacements_of(aws).items()} == dict.fromkeys(jobs, 1)


def _kill_at_first_terminate(aws: SimulatedAWS, pid: list[int]) -> None:
    def kill(action: str, count: int) -> None:
        if action in STOP_ACTIONS and count == 1:
            os.kill(pid[0], signal.SIGKILL)

    aws.after = kill


def test_hold_of_a_killed_run_on_this_machine_is_taken_over_at_once(seed: Seeder, store: str, run, aws: SimulatedAWS, workdir) -> None:
    configure(workdir, "lock-ttl: 30")  # a holder that stopped renewing would keep the queue 30 s
    jobs = _world(seed)
    pid: list[int] = []
    _kill_at_first_terminate(aws, pid)
    process = run_process("drain", "--store", store, "--queue", "work", "--deploy-id", "d1")
    pid.append(process.pid)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    aws.after = None
    lease = read_lease(store_at(store), "work", SCOPE)
    assert lease is not None and lease.holder_id is not None and lease.pid == process.pid  # never released
    started = time.monotonic()
    result = run("restore", "--store", store, "--deploy-id", "d1")  # the pipeline goes on: restore at once
    assert result.code == 0, result.err
    assert time.monotonic() - started < 10  # not the 30 s of lock-ttl: the holder is gone from this machine
    replaced = replacements_of(aws)
    assert all(len(replaced.get(j, [])) <= 1 for j in jobs)
    assert all(j in replaced or aws.batch.jobs[j].status == "RUNNING" for j in jobs)  # never stopped: left running


@pytest.mark.slow
def test_hold_of_a_run_on_another_machine_expires_after_lock_ttl(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    jobs = _world(seed)
    pid: list[int] = []
    _kill_at_first_terminate(aws, pid)
    process = run_process("drain", "--store", store, "--queue", "work", "--deploy-id", "d1")
    pid.append(process.pid)
    process.communicate(timeout=60)
    aws.after = None
    # The same hold, as a runner on another machine would have left it: its process cannot be looked up here.
    inspect = store_at(store)
    current = inspect.read(KEY)
    assert current is not None
    record = json.loads(current.value)
    record.update(machine="runner-b 0d6c8f2e pid:[4026531836]", pid=4242, renewed_at=inspect.clock())
    inspect.write(KEY, json.dumps(record, sort_keys=True).encode(), current.version)
    started = time.monotonic()
    result = run("restore", "--store", store, "--deploy-id", "d1")
    waited = time.monotonic() - started
    assert result.code == 0, result.err
    assert HOLDER_TTL - 1 <= waited < HOLDER_TTL + 8  # - 1: S3's and DynamoDB's clock is read from Date headers, whole seconds
    replaced = replacements_of(aws)
    assert all(len(replaced.get(j, [])) <= 1 for j in jobs) and replaced


@pytest.mark.slow
def test_heartbeat_keeps_a_long_run_s_lease(seed: Seeder, store: str, run, aws: SimulatedAWS, workdir: Path) -> None:
    configure(workdir, "lock-ttl: 1")
    aws.batch.timing = dataclasses.replace(aws.batch.timing, stop_seconds=5.0)  # the drain waits 5 s for its jobs to stop
    jobs = _world(seed, jobs=3)
    stopping = threading.Event()
    aws.after = lambda action, count: stopping.set() if action in STOP_ACTIONS else None
    drain = run_process("drain", "--store", store, "--queue", "work", "--deploy-id", "d1")
    assert stopping.wait(60)
    inspect = store_at(store)
    versions = set()
    deadline = time.monotonic() + 3 * 1.0  # three times lock-ttl
    while time.monotonic() < deadline:
        found = inspect.read(KEY)
        assert found is not None
        versions.add(found.version)
        time.sleep(0.1)
    assert len(versions) >= 4  # renewed every lock-ttl / 4
    other = run("restore", "--store", store, "--deploy-id", "d1", "--lock-timeout", "0.5")  # a re-run of the same deploy
    assert other.code == 3 and "held by" in other.err
    _, err = drain.communicate(timeout=60)
    assert drain.returncode == 0, err
    assert "lost the deploy lease" not in err
    assert all(aws.batch.jobs[j].terminated for j in jobs) and replacements_of(aws) == {}


def test_two_drains_started_together_never_both_take_a_job(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    jobs = _world(seed, jobs=30)
    processes = {
        deploy: run_process("drain", "--store", store, "--queue", "work", "--deploy-id", deploy, "--lock-timeout", "1")
        for deploy in ("left", "right")
    }
    codes = {}
    for deploy, process in processes.items():
        _out, err = process.communicate(timeout=120)
        codes[deploy] = (process.returncode, err)
    (winner,) = [d for d, (code, _) in codes.items() if code == 0]
    (loser,) = [d for d, (code, _) in codes.items() if code != 0]
    assert codes[loser][0] == 3 and f"deploy {winner}'s lease" in codes[loser][1]
    assert sorted(r["job_id"] for r in load_manifest(store, seed, winner)["jobs"]) == sorted(jobs)
    assert run("status", "--store", store, "--deploy-id", loser).code == 2  # the loser recorded nothing: no manifest
    assert run("restore", "--store", store, "--deploy-id", winner).code == 0
    assert {j: len(v) for j, v in replacements_of(aws).items()} == dict.fromkeys(jobs, 1)


# A jobguard process inside a file-store write: it holds the folder lock (then the test pauses it).
_HOLD_FOLDER_LOCK = """
import sys, time
from pathlib import Path
from jobguard.adapters.stores.file import FileStore
from jobguard.errors import LeaseError
store = FileStore(Path(sys.argv[1]))
with store._locked(store.folder / "leases" / "x.json"):
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.mark.slow
def test_a_paused_writer_holding_the_folder_lock_stops_others_within_lock_timeout(
    seed: Seeder, run, aws: SimulatedAWS, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`flock` never expires: a process paused (SIGSTOP) while it holds the file store's folder lock
    would make every other writer wait forever. They wait at most lock-timeout (at least 10 s), then
    stop with exit 3, naming the holder, having changed nothing. (The 10 s floor is checked as it is,
    then lowered to 1 s for the wait, so that the test does not sit out ten seconds.)"""
    from jobguard.adapters.stores import file

    assert FileStore(workdir / "any", lock_timeout=0).lock_wait == file.MIN_LOCK_WAIT == 10.0
    monkeypatch.setattr(file, "MIN_LOCK_WAIT", 1.0)
    jobs = _world(seed, jobs=2)
    folder = workdir / "held-store"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_FOLDER_LOCK, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        os.kill(holder.pid, signal.SIGSTOP)
        started = time.monotonic()
        result = run("drain", "--store", folder.as_uri(), "--queue", "work", "--deploy-id", "d9", "--lock-timeout", "0")
        waited = time.monotonic() - started
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert result.code == 3, result.err
    assert 1 <= waited < 30, waited  # lock-timeout 0 raised to the floor
    assert "the store folder's lock has been held for over 1 s by jobguard pid" in result.err
    assert f"pid {holder.pid} on " in result.err
    assert aws.stop_calls == 0 and not any(aws.batch.jobs[j].terminated for j in jobs)
    assert run("drain", "--store", folder.as_uri(), "--queue", "work", "--deploy-id", "d9").code == 0  # the lock is free again


def test_status_shows_who_holds_each_queue_and_since_when(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    _world(seed, jobs=1)
    inspect = store_at(store)
    before = inspect.clock()
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    shown = run("status", "--store", store, "--json")
    assert shown.code == 0, shown.err
    (lease,) = json.loads(shown.out)["leases"]
    since = time.mktime(time.strptime(lease["since"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert before - 2 <= since <= inspect.clock() + 1
    assert lease["queue"] == "work" and lease["deploy_id"] == "d1" and lease["state"] == "between drain and restore"
    assert lease["release"] == f"jobguard restore --store {inspect.location()} --deploy-id d1"
    assert 0 < lease["free_in_seconds"] <= 30  # lease-ttl of the test config
    text = run("status", "--store", store)
    assert f"queue work: deploy d1, between drain and restore since {lease['since']} (" in text.out
    assert run("restore", "--store", store, "--deploy-id", "d1").code == 0
    assert json.loads(run("status", "--store", store, "--json").out)["leases"] == []


@pytest.mark.slow
def test_a_lease_restore_cannot_release_fails_it_and_the_next_restore_releases_it(
    seed: Seeder, store: str, run, aws: SimulatedAWS, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = _world(seed, jobs=2)
    monkeypatch.setattr("jobguard.adapters.lease._RELEASE_WAITS", (0.01,))
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    attempts: list[str] = []
    with monkeypatch.context() as down:
        from jobguard.adapters.stores.dynamodb import DynamoDBStore
        from jobguard.adapters.stores.file import FileStore
        from jobguard.adapters.stores.s3 import S3Store
        from jobguard.errors import StoreError

        def failing_delete(self: Any, key: str, version: str) -> None:
            attempts.append(key)
            raise StoreError(f"cannot delete {key}: injected outage")

        for kind in (FileStore, S3Store, DynamoDBStore):
            down.setattr(kind, "delete", failing_delete)
        failed = run("restore", "--store", store, "--deploy-id", "d1")
    assert failed.code == 4, failed.err
    assert len([a for a in attempts if a.startswith("leases/")]) == 2  # retried
    errors = [line for line in failed.err.splitlines() if line.startswith("error:")]
    assert errors == ["error: queue work: could not release deploy d1's lease; it blocks the next deploy's drain until released"]
    assert f"`jobguard restore --store {store_at(store).location()} --deploy-id d1`" in failed.err
    assert {k: len(v) for k, v in replacements_of(aws).items()} == dict.fromkeys(jobs, 1)  # the jobs themselves are back
    lease = read_lease(store_at(store), "work", SCOPE)
    assert lease is not None and lease.deploy_id == "d1"
    again = run("restore", "--store", store, "--deploy-id", "d1")  # what the message says: it releases the queue
    assert again.code == 0, again.err
    assert read_lease(store_at(store), "work", SCOPE) is None
    assert {k: len(v) for k, v in replacements_of(aws).items()} == dict.fromkeys(jobs, 1)
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d2", "--lock-timeout", "0.3").code == 0


def test_a_holder_that_exited_but_was_not_reaped_yet_is_gone() -> None:
    """A killed step's process is a zombie until the runner reaps it: it holds nothing."""
    from jobguard.adapters import lease as module

    child = subprocess.Popen(["sleep", "0.3"])
    try:
        started = module._start_time(child.pid)
        assert started is not None
        record = module.LeaseRecord("work", "d1", "x", "me", module._machine(), child.pid, started, 0.0, 60.0, 60.0)
        assert not module._process_gone(record)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert module._process_gone(record)  # exited, not yet waited for
    finally:
        child.wait()


def test_a_finished_writer_is_never_named_as_the_holder(workdir: Path) -> None:
    """The folder lock names its holder only while held: a later holder that wrote no name (an older
    jobguard) is "another process", not the finished writer, whose pid may belong to anything by then."""
    store = FileStore(workdir / "named", lock_timeout=0)
    store.write("leases/x.json", b"{}", None)
    assert (store.folder / ".lock").read_bytes() == b""
    fd = os.open(store.folder / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held, by a holder that names nobody
        store.lock_wait = 0.2
        with pytest.raises(LeaseError, match=r"held for over 0\.2 s by another process; nothing was written"):
            store.write("leases/y.json", b"{}", None)
    finally:
        os.close(fd)
    assert store.read("leases/y.json") is None


@pytest.mark.slow
def test_a_drain_that_cannot_hand_its_lease_on_fails_and_its_restore_goes_ahead(
    seed: Seeder, store: str, run, aws: SimulatedAWS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The apply must not run on queues no lease is shown to keep: drain exits 4; the workflow's restore
    (always) then takes the lease its own drain left, and releases it."""
    jobs = _world(seed, jobs=2)
    monkeypatch.setattr("jobguard.adapters.lease._RELEASE_WAITS", (0.01,))
    from jobguard.adapters.stores.dynamodb import DynamoDBStore
    from jobguard.adapters.stores.file import FileStore
    from jobguard.adapters.stores.s3 import S3Store
    from jobguard.errors import StoreError

    with monkeypatch.context() as down:
        for kind in (FileStore, S3Store, DynamoDBStore):

            def failing_write(self: Any, key: str, body: bytes, version: str | None, _write: Any = kind.write) -> str:
                if key.startswith("leases/") and json.loads(body)["holder_id"] is None:
                    raise StoreError(f"cannot write {key}: injected outage")
                return str(_write(self, key, body, version))

            down.setattr(kind, "write", failing_write)
        drained = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1")
    assert drained.code == 4, drained.err
    assert "error: queue work: could not hand deploy d1's lease on to its apply; do not apply" in drained.err
    # The drain ran in this test's process, which lives on: its hold lapses lock-ttl after its last renewal
    # (a drain step's process has exited by the time the restore step runs: then at once).
    restored = run("restore", "--store", store, "--deploy-id", "d1", "--lock-timeout", "10")
    assert restored.code == 0, restored.err
    assert read_lease(store_at(store), "work", SCOPE) is None
    assert {k: len(v) for k, v in replacements_of(aws).items()} == dict.fromkeys(jobs, 1)


def test_a_late_release_leaves_the_lease_a_later_run_took_anew(aws: SimulatedAWS, store: str) -> None:
    """A run pauses right after taking `work`; meanwhile another run takes the lease over and lets it go, and a
    third takes it anew. The first run's late release must leave the third's lease alone (on DynamoDB a
    document made again once started at the version the first run still held, and the delete matched it)."""
    first = _hold(store, "d1")
    behind = store_at(store)
    key = f"leases/{SCOPE}work"
    taken = behind.read(key)
    assert taken is not None
    over = behind.write(key, taken.value.replace(b"d1", b"d2"), taken.version)  # the second run, after the first's hold expired
    behind.delete(key, over)
    third = _hold(store, "d3")
    first.release(keep_for_deploy=False, raise_errors=False)
    lease = read_lease(store_at(store), "work", SCOPE)
    assert lease is not None and lease.deploy_id == "d3"
    third.release(keep_for_deploy=False)
