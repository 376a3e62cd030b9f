"""A restore leaves word of when it last submitted to a queue as it lets the queue go (adapters/lease.py,
`submitted/`): ListJobs may show its replacements only seconds later, and the next deploy's drain, starting at
once (perhaps after waiting for that very lease), looks again once they can be listed, stops or not. Without it
the replacements run unrecorded into the next apply. ListJobs lags 1 s here (lookup-window 1.5 s)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from jobguard.adapters.lease import Leases, lease_scope
from jobguard.sim import Seeder, SimulatedAWS
from jobguard.sim.server import ACCOUNT, REGION

from .conftest import drained_then_restored, exactly_once, job_of, one_job, records, replacements_of, store_at


@pytest.mark.usefixtures("lagging")
@pytest.mark.parametrize("beside", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["alone", "beside-a-job-that-stops-at-once"])
def test_a_replacement_a_restore_just_made_is_drained_by_the_next_deploy(
    seed: Seeder, store: str, run: Any, aws: SimulatedAWS, beside: bool
) -> None:
    """The next deploy's drain starts as the restore ends. `alone`: nothing else on the queues, nothing is stopped;
    `beside-...`: a queued job on a second queue is stopped (cancelled at once), so the wait for stops ends at once."""
    job = one_job(seed)
    seed.queue("later")
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    queued = [job_of(seed, "queued", "RUNNABLE", queue="later")] if beside else []
    assert run("restore", "--store", store, "--deploy-id", "d1").code == 0
    (replacement,) = replacements_of(aws)[job]
    started = time.monotonic()
    drained = run("drain", "--store", store, "--queue", "work", "--queue", "later", "--deploy-id", "d2")
    took = time.monotonic() - started
    assert drained.code == 0, drained.err
    assert replacement in records(store, seed, "d2"), drained.out
    assert "looking again in" in drained.out, drained.out
    assert took < 1.5 + 1.0 + 3.0, took  # lookup-window and the store clock's slack, not the stop-timeout
    restored = run("restore", "--store", store, "--deploy-id", "d2")
    assert restored.code == 0, restored.err
    exactly_once(aws, [job, replacement, *queued])


@pytest.mark.usefixtures("lagging")
@pytest.mark.slow
def test_a_drain_long_after_the_last_restore_does_not_wait(seed: Seeder, store: str, run: Any, aws: SimulatedAWS) -> None:
    """The word is old (the store's clock moved on past lookup-window): no look, no wait."""
    drained_then_restored(seed, store, run)
    time.sleep(1.5 + 1.0 + 1.5)  # lookup-window, the slack, and the two runs' estimates of the store's clock (whole seconds)
    started = time.monotonic()
    drained = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d2")
    assert drained.code == 0, drained.err
    assert "looking again in" not in drained.out, drained.out
    assert time.monotonic() - started < 2.0, drained.out


@pytest.mark.usefixtures("lagging")
def test_a_restore_that_submitted_nothing_leaves_no_word(seed: Seeder, store: str, run: Any) -> None:
    drained_then_restored(seed, store, run, resubmit=False)
    drained = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d2")
    assert drained.code == 0, drained.err
    assert "looking again in" not in drained.out, drained.out


def test_word_that_cannot_be_written_is_told_and_the_restore_still_succeeds(
    seed: Seeder, store: str, run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobguard.errors import StoreError

    one_job(seed)
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    write = Leases._note_submissions

    def failing(self: Leases) -> None:
        store_write = self.store.write

        def refuse(key: str, body: bytes, version: str | None) -> str:
            if key.startswith("submitted/"):
                raise StoreError("the store refused the write")
            return store_write(key, body, version)

        self.store.write = refuse  # type: ignore[method-assign]
        try:
            write(self)
        finally:
            self.store.write = store_write  # type: ignore[method-assign]

    monkeypatch.setattr(Leases, "_note_submissions", failing)
    restored = run("restore", "--store", store, "--deploy-id", "d1")
    assert restored.code == 0, restored.err
    assert "could not note this run's submissions" in restored.err + restored.out


# -- a dependent submitted just before the stop, on a queue only the drain's looks cover ------------------------
PLANS = Path(__file__).parent / "plans"


@pytest.mark.usefixtures("lagging")
@pytest.mark.parametrize("where", ["science-queue", "legacy-queue"])
def test_a_dependent_submitted_between_the_waiting_listing_and_the_stop_is_not_lost(
    seed: Seeder, store: str, run: Any, aws: SimulatedAWS, workdir: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """The first pass lists the waiting jobs beside its listing (7b08c08), so a job submitted after that listing
    and before the stop is not among them: it waits on `upstream`, which is then stopped. The last look must
    still catch it (waiting: taken; failed with it: recorded as a late job), or, on a queue the deploy drains,
    restore's sweep. `legacy-queue` is configured but the plan leaves it alone: only the drain's looks cover it.
    ListJobs lags 1 s (Timing.realistic)."""
    seed.definition("proc")
    for queue in ("science-queue", "legacy-queue"):
        seed.queue(queue)
    upstream = job_of(seed, "upstream", queue="science-queue")
    made: list[str] = []
    terminate_jobs = aws.batch.terminate_jobs

    def submitting_first(body: dict[str, Any], *rest: Any) -> dict[str, Any]:
        if not made:  # the app submits a job depending on upstream just before the stop arrives
            answer = aws.batch.submit_job(
                {"jobName": "dependent", "jobQueue": where, "jobDefinition": "proc", "dependsOn": [{"jobId": upstream}]}
            )
            made.append(str(answer["jobId"]))
        return terminate_jobs(body, *rest)

    monkeypatch.setattr(aws.batch, "terminate_jobs", submitting_first)
    queues = [arg for q in ("science-queue", "legacy-queue") for arg in ("--queue", q)]
    drained = run("drain", "--plan", str(PLANS / "queue-replace.json"), *queues, "--no-freeze", "--store", store, "--deploy-id", "d1")
    assert drained.code == 0, drained.err
    (dependent,) = made
    assert aws.batch.jobs[dependent].status in ("FAILED", "PENDING")
    aws.batch.advance_clock(60)  # the apply
    restored = run("restore", "--store", store, "--deploy-id", "d1")
    assert restored.code == 0, restored.err
    stored = records(store, seed, "d1")
    assert dependent in stored, f"dependent ({aws.batch.jobs[dependent].status}) on {where}: no record\n{drained.out}{restored.out}"
    exactly_once(aws, [upstream, dependent])


@pytest.mark.slow
@pytest.mark.parametrize("at", ["1e12", "-5", '"soon"', "null"])
def test_a_word_from_the_future_or_damaged_costs_a_window_at_most(seed: Seeder, store: str, run: Any, aws: SimulatedAWS, at: str) -> None:
    """A `submitted/` document with a time far ahead (a skewed clock, a hand edit) or no time at all: the drain
    waits lookup-window and a second at most, or not at all."""
    drained_then_restored(seed, store, run)
    target = store_at(store)
    key = f"submitted/{lease_scope(ACCOUNT, REGION)}work"
    current = target.read(key)
    assert current is not None  # the restore's word, replaced
    target.write(key, f'{{"queue": "work", "deploy_id": "d1", "at": {at}}}'.encode(), current.version)
    started = time.monotonic()
    drained = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d2")
    assert drained.code == 0, drained.err
    assert time.monotonic() - started < 1.5 + 1.0 + 2.0, drained.out
