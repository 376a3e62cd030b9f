"""Attacks on the word a restore leaves of its last submissions (`submitted/ACCOUNT.REGION.QUEUE`, adapters/lease.py
`note_submitted` / `last_submitted`, commands/drain.py `_wait_for_stops`): ListJobs shows a replacement only a
moment after SubmitJob, so the next deploy's drain, right after a restore let its queues go, looks again once it
can be listed. Each test here is what a user, a flaky store or a killed runner can do to that word."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from jobguard.adapters.lease import lease_scope
from jobguard.sim import Seeder, SimulatedAWS
from jobguard.sim.server import ACCOUNT, REGION

from .conftest import (
    apply_rename,
    configure,
    drained_then_restored,
    exactly_once,
    job_of,
    one_job,
    records,
    rename_plan,
    replacements_of,
    run_process,
    store_at,
)

SCOPE = lease_scope(ACCOUNT, REGION)


def _word(uri: str, queue: str) -> bytes | None:
    current = store_at(uri).read(f"submitted/{SCOPE}{queue}")
    return current.value if current else None


def _write_word(uri: str, queue: str, body: bytes) -> None:
    store = store_at(uri)
    key = f"submitted/{SCOPE}{queue}"
    current = store.read(key)
    store.write(key, body, current.version if current else None)


def _on_word_reads(monkeypatch: pytest.MonkeyPatch, seen: Callable[[str], None]) -> None:
    """`seen(key)` runs (and may raise) before each read of a `submitted/` document the drain's
    `Leases.last_submitted` makes."""
    from jobguard.adapters.lease import Leases

    last_submitted = Leases.last_submitted

    def watched(self: Leases, queues: Any) -> float | None:
        read = self.store.read

        def reading(key: str) -> Any:
            if key.startswith("submitted/"):  # the store is shared: the drain's other threads read through it meanwhile
                seen(key)
            return read(key)

        self.store.read = reading  # type: ignore[method-assign]
        try:
            return last_submitted(self, queues)
        finally:
            self.store.read = read  # type: ignore[method-assign]

    monkeypatch.setattr(Leases, "last_submitted", watched)


def _future_at(uri: str, ahead: float) -> float:
    store = store_at(uri)
    store.read(f"submitted/{SCOPE}nothing")  # an answer, for the S3 and DynamoDB stores' Date
    return store.clock() + ahead


# -- a word nobody should trust blindly ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        pytest.param(lambda uri: json.dumps({"queue": "work", "deploy_id": "x", "at": 10**400}).encode(), id="huge-int"),
        pytest.param(
            lambda uri: json.dumps({"queue": "work", "deploy_id": "x", "at": 1e300}).encode(), id="huge-float", marks=pytest.mark.slow
        ),
        pytest.param(lambda uri: b'{"at": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", id="deeply-nested", marks=pytest.mark.slow),
        pytest.param(lambda uri: json.dumps({"at": "soon"}).encode(), id="string"),
        pytest.param(lambda uri: b'{"at": NaN}', id="nan"),
        pytest.param(lambda uri: json.dumps({"at": -1e12}).encode(), id="negative"),
        pytest.param(lambda uri: b"not json {", id="not-json"),
        pytest.param(lambda uri: json.dumps([1, 2]).encode(), id="a-list"),
    ],
)
def test_a_damaged_word_neither_crashes_nor_stalls_the_drain(
    seed: Seeder, store: str, run: Any, body: Any, request: pytest.FixtureRequest
) -> None:
    """Hand-written or damaged `submitted/` documents: the drain succeeds, at most one lookup-window late."""
    job = one_job(seed)
    _write_word(store, "work", body(store))
    started = time.monotonic()
    drained = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1")
    assert drained.code == 0, drained.err
    assert job in records(store, seed, "d1")
    assert time.monotonic() - started < 1.5 + 1.0 + 5.0, drained.out


def test_a_word_from_the_future_holds_the_drain_no_longer_than_lookup_window(seed: Seeder, store: str) -> None:
    """A word an hour ahead of the store's clock (hand-written, or written by a runner whose clock was stepped between
    the store's answer and the write): the drain must not wait an hour for it, only lookup-window and the clock's
    slack from now. Run as a separate process; what it says it waits for is read as it says it, then it is killed."""
    one_job(seed)
    _write_word(store, "work", json.dumps({"queue": "work", "deploy_id": "x", "at": _future_at(store, 3600)}).encode())
    process = run_process("drain", "--store", store, "--queue", "work", "--deploy-id", "d1", env={"PYTHONUNBUFFERED": "1"})
    said: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            said.append(line)
            if "looking again in" in line:
                break
    finally:
        process.kill()
        process.communicate()
    waits = [float(line.split("looking again in ", 1)[1].split(" s", 1)[0]) for line in said if "looking again in" in line]
    assert all(wait <= 1.5 + 1.0 + 1.0 for wait in waits), "".join(said)


# -- who leaves the word ----------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.usefixtures("lagging")
def test_jobguard_run_leaves_word_and_the_next_drain_finds_its_replacement(seed: Seeder, store: str, run: Any, aws: SimulatedAWS) -> None:
    """`jobguard run` drains, runs the command and restores with one Leases object: its restore leaves the word
    too, and the next `jobguard run` drains the replacement its restore just made."""
    job = one_job(seed)
    first = run("run", "--store", store, "--queue", "work", "--deploy-id", "d1", "--", "true")
    assert first.code == 0, first.err
    assert _word(store, "work") is not None
    (replacement,) = replacements_of(aws)[job]
    second = run("run", "--store", store, "--queue", "work", "--deploy-id", "d2", "--", "true")
    assert second.code == 0, second.err
    assert "looking again in" in second.out, second.out
    assert replacement in records(store, seed, "d2"), second.out
    exactly_once(aws, [job, replacement])


def test_a_dry_run_restore_leaves_no_word(seed: Seeder, store: str, run: Any) -> None:
    one_job(seed)
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    dry = run("restore", "--store", store, "--deploy-id", "d1", "--dry-run")
    assert dry.code == 0, dry.err
    assert _word(store, "work") is None


def test_status_check_leaves_no_word_and_the_next_drain_does_not_wait(seed: Seeder, store: str, run: Any) -> None:
    """`status --check` submits nothing: no word; the drain after it waits only for the restore's own word."""
    drained_then_restored(seed, store, run, resubmit=False)
    assert run("status", "--store", store, "--check", "--deploy-id", "d1").code == 0
    assert _word(store, "work") is None
    drained = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d2")
    assert drained.code == 0, drained.err
    assert "looking again in" not in drained.out, drained.out


# -- the store failing ------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.usefixtures("lagging")
def test_the_word_that_cannot_be_read_makes_the_drain_look_again_after_lookup_window(
    seed: Seeder, store: str, run: Any, aws: SimulatedAWS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every read of `submitted/` fails (the store's retries spent): the drain says so, still looks again once
    lookup-window has passed, and drains the replacement the restore just made."""
    from jobguard.errors import StoreError

    job = drained_then_restored(seed, store, run)
    (replacement,) = replacements_of(aws)[job]

    def refuse(key: str) -> None:
        raise StoreError("the store answered 500 on every attempt")

    _on_word_reads(monkeypatch, refuse)
    drained = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d2")
    assert drained.code == 0, drained.err
    assert "cannot tell when these queues were last submitted to" in drained.out + drained.err
    assert replacement in records(store, seed, "d2"), drained.out
    assert run("restore", "--store", store, "--deploy-id", "d2").code == 0
    exactly_once(aws, [job, replacement])


# -- a restore that died ----------------------------------------------------------------------------------------------
def _kill_after_save_following_submit(aws: SimulatedAWS, process: list[subprocess.Popen[str]], save: str) -> threading.Event:
    """SIGKILL the process right after the first manifest save that follows its first SubmitJob (the replacement is
    recorded RESUBMITTED; the restore never reaches its release, nor its word)."""
    killed, submitted = threading.Event(), threading.Event()

    def kill(action: str, count: int) -> None:
        if action == "batch:SubmitJob":
            submitted.set()
        elif action == save and submitted.is_set() and not killed.is_set() and process:
            killed.set()
            os.kill(process[0].pid, signal.SIGKILL)

    aws.after = kill
    return killed


def _restore_killed_after_recording_its_replacement(seed: Seeder, store: str, run: Any, aws: SimulatedAWS, lag: float) -> tuple[str, str]:
    """ListJobs lags `lag` seconds (lookup-window a second more); deploy d1 drains `job`, and its restore (a separate
    process, on DynamoDB) is killed right after it recorded the replacement. (job, replacement)."""
    aws.batch.timing = replace(aws.batch.timing, list_lag_seconds=lag)
    configure(Path.cwd(), f"lookup-window: {lag + 1:g}\n")
    job = one_job(seed)
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    holder: list[subprocess.Popen[str]] = []
    killed = _kill_after_save_following_submit(aws, holder, "dynamodb:TransactWriteItems")
    holder.append(run_process("restore", "--store", store, "--deploy-id", "d1"))
    holder[0].communicate(timeout=60)
    aws.after = None
    assert killed.is_set() and holder[0].returncode == -signal.SIGKILL
    (replacement,) = replacements_of(aws)[job]
    return job, replacement


@pytest.mark.slow
@pytest.mark.parametrize("store", ["dynamodb"], indirect=True)
def test_a_restore_killed_after_recording_its_replacement_then_restored_again_leaves_word_for_the_next_drain(
    seed: Seeder, store: str, run: Any, aws: SimulatedAWS
) -> None:
    """The restore's step is killed right after it recorded its replacement; the workflow's cleanup runs the
    restore again at once (same machine: the lease is taken at once). That restore finds nothing owed, submits
    nothing and lets the queue go with no word: the next deploy's drain (waiting for the lease) starts at once,
    ListJobs does not yet show the replacement, and the drain records nothing: the apply kills it unrecorded.
    ListJobs lags 8 s here (lookup-window 9 s): the kill, the second restore and the drain fit inside it."""
    job, replacement = _restore_killed_after_recording_its_replacement(seed, store, run, aws, lag=8.0)
    assert records(store, seed, "d1")[job]["outcome"] == "resubmitted"
    again = run("restore", "--store", store, "--deploy-id", "d1")
    assert again.code == 0, again.err
    drained = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d2")
    assert drained.code == 0, drained.err
    assert replacement in records(store, seed, "d2"), f"word: {_word(store, 'work')!r}\n{again.out}\n{drained.out}"


@pytest.mark.slow
@pytest.mark.parametrize("store", ["dynamodb"], indirect=True)
def test_a_restore_killed_after_recording_its_replacement_is_adopted_by_the_next_drain_which_finds_it(
    seed: Seeder, store: str, run: Any, aws: SimulatedAWS
) -> None:
    """The same kill, and the next deploy's drain takes the dead restore's lease at once (same machine): a queue
    taken from a run that died counts as submitted to when taken, so the drain looks again and records it."""
    job, replacement = _restore_killed_after_recording_its_replacement(seed, store, run, aws, lag=4.0)
    drained = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d2")
    assert drained.code == 0, drained.err
    assert replacement in records(store, seed, "d2"), drained.out
    assert run("restore", "--store", store, "--deploy-id", "d2").code == 0
    exactly_once(aws, [job, replacement])


# -- cost -------------------------------------------------------------------------------------------------------------
def test_a_drain_of_queues_nobody_restored_reads_one_word_per_queue_and_does_not_wait_for_it(
    seed: Seeder, store: str, run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No word on any queue: one store read per queue (off the drain's path: beside the passes) and no look for it."""
    from jobguard.commands.drain import _Drain

    queues = [f"q{i}" for i in range(5)]
    for queue in queues:
        seed.queue(queue)
    seed.definition("proc")
    for queue in queues:
        job_of(seed, f"on-{queue}", "RUNNABLE", queue=queue)
    read_keys: list[str] = []
    shown: list[float | None] = []
    shown_by = _Drain._shown_by

    def noted(self: _Drain) -> float | None:
        shown.append(shown_by(self))
        return shown[-1]

    _on_word_reads(monkeypatch, read_keys.append)
    monkeypatch.setattr(_Drain, "_shown_by", noted)
    drained = run("drain", "--store", store, *[a for q in queues for a in ("--queue", q)], "--deploy-id", "d1")
    assert drained.code == 0, drained.err
    assert sorted(read_keys) == [f"submitted/{SCOPE}{q}" for q in queues]
    assert shown == [None]
    assert "looking again in" not in drained.out, drained.out


def test_a_drain_reads_the_words_of_its_queues_side_by_side(seed: Seeder, store: str, run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The words of eight queues are read at once: on S3 or DynamoDB each read is a round trip, and twenty queues read
    one after another would hold the drain's look back twenty round trips. Each read here waits (up to 10 s) until
    four are in flight: read one after another, the first waits in vain and the drain fails."""
    queues = [f"q{i}" for i in range(8)]
    for queue in queues:
        seed.queue(queue)
    seed.definition("proc")
    together = threading.Barrier(4, timeout=10)
    read_keys: list[str] = []

    def meet(key: str) -> None:
        read_keys.append(key)
        together.wait()

    _on_word_reads(monkeypatch, meet)
    drained = run("drain", "--store", store, *[a for q in queues for a in ("--queue", q)], "--deploy-id", "d1")
    assert drained.code == 0, drained.err
    assert not together.broken
    assert sorted(read_keys) == [f"submitted/{SCOPE}{q}" for q in queues]
    assert "cannot tell when these queues were last submitted to" not in drained.out + drained.err


@pytest.mark.slow
@pytest.mark.usefixtures("lagging")
@pytest.mark.parametrize("store", ["s3", "dynamodb"], indirect=True)
def test_the_word_read_while_the_store_throttles_or_fails_now_and_then(seed: Seeder, store: str, run: Any, aws: SimulatedAWS) -> None:
    """Every other read of the store answers 500 (S3) or is throttled (DynamoDB) during the next drain: retried, the
    word still read, the replacement the restore just made still drained."""
    job = drained_then_restored(seed, store, run)
    (replacement,) = replacements_of(aws)[job]
    aws.fault = lambda action, n: (
        (500, "InternalError")
        if action == "s3:GetObject" and n % 2
        else (400, "ProvisionedThroughputExceededException")
        if action == "dynamodb:GetItem" and n % 2
        else None
    )
    drained = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d2")
    aws.fault = None
    assert drained.code == 0, drained.err
    assert replacement in records(store, seed, "d2"), drained.out
    assert run("restore", "--store", store, "--deploy-id", "d2").code == 0
    exactly_once(aws, [job, replacement])


@pytest.mark.slow
@pytest.mark.usefixtures("lagging")
def test_a_restore_to_the_queue_the_plan_renamed_leaves_word_there_and_its_next_drain_finds_the_replacement(
    seed: Seeder, store: str, run: Any, aws: SimulatedAWS, workdir: Path
) -> None:
    """The plan replaces queue `work` under the name `work-v2`: restore submits to `work-v2`, leaves its word there,
    and the next deploy's drain of `work-v2` records the replacement ListJobs does not show yet."""
    job = one_job(seed)
    plan = rename_plan(workdir)
    assert run("drain", "--store", store, "--plan", str(plan), "--queue", "work", "--deploy-id", "d1").code == 0
    apply_rename(seed)  # the apply
    restored = run("restore", "--store", store, "--deploy-id", "d1")
    assert restored.code == 0, restored.err
    (replacement,) = replacements_of(aws)[job]
    assert aws.batch.jobs[replacement].queue_arn.rsplit("/", 1)[-1] == "work-v2"
    assert _word(store, "work-v2") is not None
    drained = run("drain", "--store", store, "--queue", "work-v2", "--deploy-id", "d2")
    assert drained.code == 0, drained.err
    assert replacement in records(store, seed, "d2"), drained.out
    assert run("restore", "--store", store, "--deploy-id", "d2").code == 0
    exactly_once(aws, [job, replacement])


def test_a_restore_leaves_alone_the_renamed_queue_another_deploy_is_applying(
    seed: Seeder, store: str, run: Any, aws: SimulatedAWS, workdir: Path
) -> None:
    """d1's plan renames `work` to `work-v2`; after d1's apply, deploy d2 drains `work-v2` and is in its apply (it
    holds `work-v2` until its restore). d1's restore must not submit onto `work-v2` now: d2's apply may kill the
    replacement, which d2's manifest does not record, and no word of it reaches d2's drain (it is over)."""
    job = one_job(seed)
    plan = rename_plan(workdir)
    assert run("drain", "--store", store, "--plan", str(plan), "--queue", "work", "--deploy-id", "d1").code == 0
    apply_rename(seed)  # d1's apply
    assert run("drain", "--store", store, "--queue", "work-v2", "--deploy-id", "d2").code == 0  # d2 now in its apply
    restored = run("restore", "--store", store, "--deploy-id", "d1")
    made = replacements_of(aws).get(job, [])
    assert made == [], f"d1's restore submitted {made} onto work-v2 during d2's apply:\n{restored.out}"


@pytest.mark.slow
@pytest.mark.usefixtures("lagging")
def test_the_look_after_the_word_takes_the_restores_dependent_with_its_dependency(
    seed: Seeder, store: str, run: Any, aws: SimulatedAWS
) -> None:
    """d1 drained `upstream` (on `work`) and `dependent` (on `other`, waiting on it); its restore resubmits both,
    the new `dependent` waiting on the new `upstream`. d2 drains both queues at once: the look after the word finds
    the new `upstream` and stops it, and must have taken the new `dependent` too (Batch fails a job whose
    dependency was stopped), though ListJobs showed neither when d2's passes began."""
    seed.queue("work")
    seed.queue("other")
    seed.definition("proc")
    upstream = job_of(seed, "upstream")
    dependent = job_of(seed, "dependent", "PENDING", queue="other", after=upstream)
    assert run("drain", "--store", store, "--queue", "work", "--queue", "other", "--deploy-id", "d1").code == 0
    assert set(records(store, seed, "d1")) == {upstream, dependent}
    restored = run("restore", "--store", store, "--deploy-id", "d1")
    assert restored.code == 0, restored.err
    made = exactly_once(aws, [upstream, dependent])
    drained = run("drain", "--store", store, "--queue", "work", "--queue", "other", "--deploy-id", "d2")
    assert drained.code == 0, drained.err
    assert {made[upstream], made[dependent]} <= set(records(store, seed, "d2")), drained.out
    assert run("restore", "--store", store, "--deploy-id", "d2").code == 0
    exactly_once(aws, [upstream, dependent, made[upstream], made[dependent]])
