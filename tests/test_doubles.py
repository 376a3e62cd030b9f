"""Exactly once when a restore is paused mid-call (issue 27): a restore (A) is paused (SIGSTOP, a
frozen runner VM) at a point of its submit loop, past lock-ttl; the same deploy's restore (a
re-run) or a restore by hand (B) takes over, looks for what A may have made, and submits the rest;
A resumes and goes on, or dies right after its paused call lands. After both end and
`status --check` has run: no job lost, no original with two live replacements. Every double
jobguard stopped is measured: how long it lived, and whether it ever started.

The points of A's submit loop:
- before: A passed its lease check for a SubmitJob and is paused before the request leaves;
- carried-out: Batch made the job, A is paused before it reads the answer;
- after: A read the answer (the job id) and is paused before anything else.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from jobguard.adapters.aws import Aws, AwsSettings
from jobguard.adapters.lease import lease_is_live, lease_scope, read_lease
from jobguard.adapters.stores import open_store
from jobguard.commands.doubles import DOUBLE_REASON
from jobguard.domain.schema import validate
from jobguard.domain.tags import mark_of
from jobguard.sim import Seeder, SimulatedAWS
from jobguard.sim.server import ACCOUNT, REGION

from .conftest import configure, record_faults, records, replacements_of, run_process

pytestmark = pytest.mark.slow  # each case waits out lock-ttl and lookup windows

# Test-only: pause this jobguard process (SIGSTOP itself) at a point of its first SubmitJob. Never in the product.
SITECUSTOMIZE = """\
import os
import signal
import threading

_point = os.environ.get("JOBGUARD_TEST_PAUSE")
if _point:
    from jobguard.adapters import aws, batch

    _once = threading.Lock()

    def _pause():
        if _once.acquire(blocking=False):
            os.kill(os.getpid(), signal.SIGSTOP)

    if _point == "before":  # right after the lease check of a SubmitJob, before the request leaves
        _guard = aws.Aws._guard

        def _paused_guard(self, **kwargs):
            _guard(self, **kwargs)
            if "SubmitJob" in str(kwargs.get("event_name", "")):
                _pause()

        aws.Aws._guard = _paused_guard
    elif _point == "after":  # the answer is read
        _submit = batch.Batch.submit

        def _paused_submit(self, request):
            job_id = _submit(self, request)
            _pause()
            return job_id

        batch.Batch.submit = _paused_submit
"""

POINTS = ("before", "carried-out", "after")
JOBS = 5


@pytest.fixture
def pause_shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pause-shim")
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return folder


def _stopped_state(process: subprocess.Popen[str], timeout: float = 60) -> bool:
    """Wait until the process is stopped (state T)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[-1].split()
        if fields[0] in ("T", "t"):
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize(
    ("point", "fate"),
    [(p, "resumes") for p in POINTS] + [("before", "dies"), ("carried-out", "dies")],
)
@pytest.mark.parametrize("taker", ["re-run", "by-hand"])
def test_a_restore_paused_mid_call_leaves_no_double(
    seed: Seeder,
    store: str,
    run,
    aws: SimulatedAWS,
    workdir: Path,
    monkeypatch: pytest.MonkeyPatch,
    pause_shim: Path,
    point: str,
    fate: str,
    taker: str,
) -> None:
    configure(workdir, f"lock-ttl: 2\nlookup-window: 1.5\nevents-file: {workdir / 'events.jsonl'}\n")
    seed.queue("work")
    seed.definition("proc")
    jobs = [seed.job(jobName=f"j{i}", jobQueue="work", jobDefinition="proc") for i in range(JOBS)]
    actions = {"GITHUB_ACTIONS": "true", "GITHUB_RUN_ID": "7007", "GITHUB_REPOSITORY": "org/stack"}
    for name, value in actions.items():
        monkeypatch.setenv(name, value)
    assert run("drain", "--store", store, "--queue", "work").code == 0
    first_submit = aws.calls["batch:SubmitJob"] + 1
    pid: list[int] = []
    if point == "carried-out":

        def pause(action: str, count: int) -> None:
            if action == "batch:SubmitJob" and count == first_submit and pid:
                os.kill(pid[0], signal.SIGSTOP)

        aws.after = pause
    env = {**actions, "PYTHONPATH": str(pause_shim)}
    if point != "carried-out":
        env["JOBGUARD_TEST_PAUSE"] = point
    a = run_process("restore", "--store", store, env=env)
    pid.append(a.pid)
    try:
        assert _stopped_state(a), a.communicate()[1] if a.poll() is not None else "A never paused"
        aws.after = None
        _wait_until_free(store)  # a person restores once the paused run's hold has lapsed (before that it leaves the queue alone)
        with monkeypatch.context() as person:
            if taker == "by-hand":
                for name in actions:
                    person.delenv(name)
            taken = run("restore", "--store", store)  # waits lock-ttl for A's hold, then takes over
        assert taken.code == 0, taken.err
        if fate == "dies":  # A's paused call lands, and A dies before it can undo it (its VM is lost)
            _kill_after_next_submit(aws, a)
    finally:
        os.kill(a.pid, signal.SIGCONT)
    a_out, a_err = a.communicate(timeout=120)
    aws.after = None
    if fate == "resumes":  # A itself stopped what it made after it lost its lease; the new holder, what landed before its end
        assert not [j for j, live in _settled(aws, jobs).items() if len(live) > 1], f"A said: {a_out}{a_err}"
    if fate == "dies":
        assert a.returncode in (-signal.SIGKILL, 3), a_err
    else:
        assert a.returncode == 3, f"{a_err}\nB: {taken.out}{taken.err}"
        assert "lost the deploy lease" in a_err or "cannot show this run still holds" in a_err
    checked = run("status", "--store", store, "--check", "--deploy-id", "7007")  # a person who suspects doubles
    live = _settled(aws, jobs)
    figures = _doubles(aws)
    recorded = {j: r["replacement_id"] for j, r in records(store, seed, "7007").items()}
    lost = [j for j in jobs if not live[j] and not _succeeded(aws, recorded[j])]
    doubled = [j for j in jobs if len(live[j]) > 1]
    record_faults(runs=3, faults=1, jobs=JOBS, lost=len(lost), doubled=len(doubled))
    assert lost == [] and doubled == [], f"lost {lost}, doubled {doubled}; A said: {a_err}; check said: {checked.out} {checked.err}"
    assert all(live[j] == [recorded[j]] for j in jobs)  # the one left is the one the manifest records
    said = a_out + taken.out + checked.out
    assert said.count("double cancelled") == len(figures), said  # each stopped double reported, by whoever stopped it
    events = [json.loads(line) for line in (workdir / "events.jsonl").read_text().splitlines()]
    doubles = [e for e in events if e["outcome"] == "double cancelled"]
    for each in doubles:
        validate(each, "event", "events.jsonl")
    assert len(doubles) == len(figures) and all(e["double"]["job_id"] not in {*recorded.values()} for e in doubles)
    _report(point, fate, taker, store, figures)


def _wait_until_free(store: str) -> None:
    """Until the paused run's hold of `work` has lapsed (lock-ttl after its last renewal)."""
    inspect = open_store(store, Aws(AwsSettings()))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        lease = read_lease(inspect, "work", lease_scope(ACCOUNT, REGION))
        if lease is None or not lease_is_live(lease, inspect.clock()):
            time.sleep(1.5)  # S3's and DynamoDB's clock is read from Date headers, whole seconds: another reader may be a second behind
            return
        time.sleep(0.1)
    raise AssertionError("the paused run's hold never lapsed")


def _kill_after_next_submit(aws: SimulatedAWS, process: subprocess.Popen[str]) -> None:
    """SIGKILL the process right after Batch carried out its next SubmitJob."""
    killed = threading.Event()

    def kill(action: str, count: int) -> None:
        if action == "batch:SubmitJob" and not killed.is_set():
            killed.set()
            os.kill(process.pid, signal.SIGKILL)

    aws.after = kill


def _settled(aws: SimulatedAWS, jobs: list[str]) -> dict[str, list[str]]:
    """The live replacements once every stop jobguard asked for has taken effect (Batch stops asynchronously)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with aws.batch.lock:
            aws.batch.tick()  # what is due happens now, as it would at Batch
        if not any(aws.batch.stopping(r) for rs in replacements_of(aws).values() for r in rs):
            break
        time.sleep(0.02)
    return _live_replacements(aws, jobs)


def _live_replacements(aws: SimulatedAWS, jobs: list[str]) -> dict[str, list[str]]:
    with aws.batch.lock:
        aws.batch.tick()
        statuses = {j.job_id: j.status for j in aws.batch.jobs.values()}
    found = replacements_of(aws)
    return {j: sorted(r for r in found.get(j, []) if statuses[r] not in ("SUCCEEDED", "FAILED")) for j in jobs}


def _succeeded(aws: SimulatedAWS, job_id: str | None) -> bool:
    with aws.batch.lock:
        job = aws.batch.jobs.get(job_id or "")
        return job is not None and job.status == "SUCCEEDED"


def _doubles(aws: SimulatedAWS) -> list[dict[str, Any]]:
    """Every replacement jobguard stopped as a double: how long it lived and whether it ever started."""
    with aws.batch.lock:
        aws.batch.tick()
        found = []
        for job in aws.batch.jobs.values():
            if job.index is None and (job.reason or "").startswith(DOUBLE_REASON) and mark_of(aws.batch.detail(job)):
                found.append(
                    {
                        "lived": round((job.stopped_at or aws.batch.now()) - job.created_at, 2),
                        "started": job.started_at is not None,
                        "status": job.status,
                    }
                )
        return found


def _report(point: str, fate: str, taker: str, store: str, doubles: list[dict[str, Any]]) -> None:
    """The figures for README (JOBGUARD_DOUBLES_REPORT=FILE appends one JSON line per case)."""
    line = {"point": point, "fate": fate, "taker": taker, "store": store.split(":")[0], "doubles": doubles}
    print(f"\n{json.dumps(line)}")
    path = os.environ.get("JOBGUARD_DOUBLES_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as stream:
            stream.write(json.dumps(line) + "\n")
