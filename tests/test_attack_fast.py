"""Attacks on commit 85e29d5 (`fast`): side-by-side listings in drain, the last look on a thread, the
simulation's deadline heap and O(changes) manifest saves. Each test checks the promise itself: no job
lost, none doubled."""

from __future__ import annotations

import io
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from jobguard.adapters.aws import Aws, AwsSettings
from jobguard.adapters.stores import open_store
from jobguard.commands.manifests import Manifests
from jobguard.output.report import Reporter
from jobguard.sim import ACCOUNT, REGION, Seeder, SimulatedAWS, Timing

from .conftest import exactly_once as _exactly_once
from .conftest import job_of as _job
from .conftest import race_listings, records

PLANS = Path(__file__).parent / "plans"


@pytest.mark.slow
def test_a_dependent_moving_from_submitted_to_pending_while_the_waiting_jobs_are_listed_is_not_lost(
    seed: Seeder, store: str, run: Any, aws: SimulatedAWS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job waiting on a drained job, on a configured queue the plan leaves alone, moves on from SUBMITTED
    to PENDING while the pass lists the waiting jobs: after PENDING was listed, before SUBMITTED is. Listed
    in lifecycle order (SUBMITTED, then PENDING) it is seen in one of them; listed side by side it is in
    neither. Batch fails it as soon as its dependency is stopped, and it was created before the drain: the
    last look (waiting jobs, and failed ones created since the drain began) never sees it. Lost."""
    aws.batch.timing = Timing.instant()
    seed.definition("proc")
    for queue in ("science-queue", "legacy-queue"):
        seed.queue(queue)
    upstream = _job(seed, "upstream", queue="science-queue")
    dependent = _job(seed, "dependent", "SUBMITTED", queue="legacy-queue", after=upstream)

    def on_legacy(body: dict[str, Any], status: str) -> bool:
        return str(body.get("jobQueue", "")).rsplit("/", 1)[-1] == "legacy-queue" and body.get("jobStatus") == status

    # Batch moves it on just before legacy-queue's SUBMITTED listing is answered, after its PENDING one
    moved = race_listings(
        aws,
        monkeypatch,
        lambda body: on_legacy(body, "SUBMITTED"),
        lambda body: on_legacy(body, "PENDING"),
        lambda: aws.batch.set_status(dependent, "PENDING"),
    )
    queues = [arg for q in ("science-queue", "legacy-queue") for arg in ("--queue", q)]
    drained = run("drain", "--plan", str(PLANS / "queue-replace.json"), *queues, "--no-freeze", "--store", store, "--deploy-id", "d1")
    assert drained.code == 0, drained.err
    assert moved
    stored = records(store, seed, "d1")
    assert dependent in stored, f"dependent {aws.batch.jobs[dependent].status}, recorded: {sorted(stored)}"
    restored = run("restore", "--store", store, "--deploy-id", "d1")
    assert restored.code == 0, restored.err
    _exactly_once(aws, [upstream, dependent])


@pytest.mark.slow
def test_a_job_listing_was_slow_to_show_is_drained_although_it_moves_on_during_the_confirming_pass(
    seed: Seeder, store: str, run: Any, aws: SimulatedAWS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the wait for the stops, a pass looks for jobs ListJobs was slow to show (README: a replacement
    submitted just before the passes). One such job moves on from RUNNABLE to STARTING during that pass:
    listed in lifecycle order it is seen in one of the two listings; listed side by side (STARTING answered
    before it moved, RUNNABLE after) it is in neither, and no later pass looks: it runs on into the apply
    with no record."""
    seed.queue("work")
    seed.definition("proc")
    steady = _job(seed, "steady")
    aws.batch.jobs[steady].stop_seconds = 1.0  # the drain waits a moment for it to end
    slow = _job(seed, "slow", "RUNNABLE")
    list_jobs = aws.batch.list_jobs

    def visible() -> bool:  # ListJobs shows `slow` only after the wait for the stops
        return aws.batch.jobs[steady].status == "FAILED"

    def lagging(body: dict[str, Any]) -> dict[str, Any]:
        answer = list_jobs(body)
        if visible():
            return answer
        return {**answer, "jobSummaryList": [s for s in answer.get("jobSummaryList", []) if s.get("jobId") != slow]}

    monkeypatch.setattr(aws.batch, "list_jobs", lagging)
    moved = race_listings(
        aws,
        monkeypatch,
        lambda body: visible() and body.get("jobStatus") == "RUNNABLE",
        lambda body: visible() and body.get("jobStatus") == "STARTING",
        lambda: aws.batch.set_status(slow, "STARTING"),
    )
    drained = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1")
    assert drained.code == 0, drained.err
    assert moved
    stored = records(store, seed, "d1")
    assert slow in stored, f"slow is {aws.batch.jobs[slow].status}, unrecorded"
    assert aws.batch.jobs[slow].status == "FAILED"
    restored = run("restore", "--store", store, "--deploy-id", "d1")
    assert restored.code == 0, restored.err
    _exactly_once(aws, [steady, slow])


@pytest.mark.slow
def test_the_pass_for_jobs_listing_was_slow_to_show_runs_while_the_stops_are_awaited(
    seed: Seeder, store: str, run: Any, aws: SimulatedAWS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pass that looks for jobs ListJobs was slow to show runs once `lookup-window` (1.5 s here) has passed
    since the passes began, while the drain still waits for a job that takes 6 s to stop: not after that wait,
    which would add its listing to every drain. It still finds the job ListJobs showed late, which is drained
    and replaced once."""
    seed.queue("work")
    seed.definition("proc")
    steady = _job(seed, "steady")
    aws.batch.jobs[steady].stop_seconds = 6.0
    slow = _job(seed, "slow")
    list_jobs = aws.batch.list_jobs
    first: list[float] = []

    def lagging(body: dict[str, Any]) -> dict[str, Any]:  # `slow` is listed only a second after the first listing
        first.append(first[0] if first else time.monotonic())
        answer = list_jobs(body)
        if time.monotonic() - first[0] >= 1.0:
            return answer
        return {**answer, "jobSummaryList": [s for s in answer.get("jobSummaryList", []) if s.get("jobId") != slow]}

    monkeypatch.setattr(aws.batch, "list_jobs", lagging)
    drained = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1")
    assert drained.code == 0, drained.err
    lines = drained.out.splitlines()
    found = max(i for i, line in enumerate(lines) if line.startswith("pass ") and "1 new active jobs" in line)  # the later pass
    ended = next(i for i, line in enumerate(lines) if "terminated" in line and "steady" in line)
    assert found < ended, drained.out
    assert slow in records(store, seed, "d1")
    restored = run("restore", "--store", store, "--deploy-id", "d1")
    assert restored.code == 0, restored.err
    _exactly_once(aws, [steady, slow])


@pytest.mark.parametrize("seed_value", [1, 2, 3])
def test_two_writers_adding_and_changing_records_lose_none(
    seed: Seeder, store: str, run: Any, aws: SimulatedAWS, monkeypatch: pytest.MonkeyPatch, seed_value: int
) -> None:
    """Two runs of one deploy (matrix legs) save the same manifest: records added and changed in turn, every
    save conflicting with the other's, DynamoDB's in steps of 3 records, a writer reloading now and then. Saves
    are O(changes) now (a fast path trusts that every record not yet written is a changed one): none may be
    dropped, none may go back to an older version, and the order of the records stays that of their adding."""
    monkeypatch.setattr("jobguard.commands.manifests.PAGE_RECORDS", 4)
    seed.queue("work")
    seed.definition("proc")
    for i in range(6):
        _job(seed, f"j{i}")
    aws.batch.timing = Timing.instant()
    drained = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1")
    assert drained.code == 0, drained.err
    rng = random.Random(seed_value)

    def manifests() -> Manifests:
        opened = Manifests(open_store(store, Aws(AwsSettings())), None, ACCOUNT, REGION, Reporter(io.StringIO(), io.StringIO()))
        if hasattr(opened.store, "atomic_records"):
            opened.store.atomic_records = 3
        return opened

    writers = [manifests(), manifests()]
    copies = [w.load("d1") for w in writers]
    assert copies[0] is not None and copies[1] is not None
    template = next(iter(copies[0].jobs.values()))
    expected = {i: r.reason for i, r in copies[0].jobs.items()}
    mine: list[list[str]] = [[], []]
    for i, job_id in enumerate(copies[0].jobs):
        mine[i % 2].append(job_id)
    counter = [0]
    for step in range(60):
        w = rng.randrange(2)
        manifest = copies[w]
        assert manifest is not None
        for _ in range(rng.randrange(1, 6)):
            if rng.random() < 0.5 or not mine[w]:
                counter[0] += 1
                job_id = f"00000000-0000-0000-0000-{counter[0]:012d}"
                arn = template.job_arn.rsplit("/", 1)[0] + "/" + job_id
                record = replace(template, job_id=job_id, job_arn=arn, reason=f"new {step}")
                mine[w].append(job_id)
            else:
                job_id = rng.choice(mine[w])
                record = replace(manifest.jobs[job_id], reason=f"w{w} step {step}")
            manifest.put([record])
            expected[job_id] = record.reason
        writers[w].save(manifest)
        if rng.random() < 0.15:
            copies[w] = writers[w].load("d1")
    final = manifests().load("d1")
    assert final is not None
    assert {i: r.reason for i, r in final.jobs.items()} == expected
    order = list(final.jobs)
    for ids in mine:  # each writer's records in the order it added them
        assert [i for i in order if i in set(ids)] == ids
