"""`jobguard status --check` (and restore's reconciliation) on doubles put in place by hand: a second
marked replacement beside the recorded one is stopped; a recorded replacement that was itself stopped
as a double is replaced in the record by the live one, or, with none left, its job is owed again and
the next restore brings it back once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from jobguard.adapters.stores.dynamodb import DynamoDBStore
from jobguard.adapters.stores.file import FileStore
from jobguard.adapters.stores.s3 import S3Store
from jobguard.commands.doubles import DOUBLE_REASON
from jobguard.domain.tags import MARK_TAG, Mark
from jobguard.errors import StoreError
from jobguard.sim import Seeder, SimulatedAWS

from .conftest import records, replacements_of

pytestmark = pytest.mark.slow  # each case waits out lookup windows (reconciliation looks twice) or lock-ttl


def _restored(seed: Seeder, run, store: str) -> tuple[str, dict[str, str]]:
    """One job drained and restored by deploy d1: (original, its record)."""
    seed.queue("work")
    seed.definition("proc")
    original = seed.job(jobName="j0", jobQueue="work", jobDefinition="proc")
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    assert run("restore", "--store", store, "--deploy-id", "d1").code == 0
    return original, records(store, seed, "d1")[original]


def _double(seed: Seeder, original: str, record: dict[str, str]) -> str:
    """A second replacement of `original`, marked as a run of d1 would have marked it."""
    mark = Mark("d1", original, record.get("lineage_id") or original, 1)
    return str(seed.batch.submit_job(jobName="j0", jobQueue="work", jobDefinition="proc", tags={MARK_TAG: mark.tag_value()})["jobId"])


def _live(aws: SimulatedAWS, original: str) -> list[str]:
    with aws.batch.lock:
        aws.batch.tick()
        return sorted(r for r in replacements_of(aws).get(original, []) if aws.batch.jobs[r].status not in ("SUCCEEDED", "FAILED"))


def test_check_stops_a_second_replacement_and_keeps_the_recorded_one(
    seed: Seeder, run, aws: SimulatedAWS, workdir: Path, store: str
) -> None:
    (workdir / ".jobguard.yml").write_text((workdir / ".jobguard.yml").read_text() + f"events-file: {workdir / 'events.jsonl'}\n")
    original, record = _restored(seed, run, store)
    double = _double(seed, original, record)
    checked = run("status", "--store", store, "--check", "--deploy-id", "d1")
    assert checked.code == 0, checked.err
    assert "double cancelled" in checked.out and "1 doubles stopped" in checked.out
    aws.batch.advance_clock(1)
    assert _live(aws, original) == [record["replacement_id"]]
    assert (aws.batch.jobs[double].reason or "").startswith(DOUBLE_REASON)
    note = records(store, seed, "d1")[original]["note"]
    assert f"double {double} (RUNNABLE, the deploy's manifest records {record['replacement_id']}) stopped" in note
    shown = json.loads(run("status", "--store", store, "--deploy-id", "d1", "--json").out)
    assert double in shown["deploys"][0]["jobs"][0]["note"]
    (event,) = [json.loads(line) for line in (workdir / "events.jsonl").read_text().splitlines() if "double cancelled" in line]
    assert event["double"] == {"job_id": double, "status": "RUNNABLE"} and event["replacement"]["job_id"] == record["replacement_id"]
    again = run("status", "--store", store, "--check", "--deploy-id", "d1")  # nothing left to do
    assert again.code == 0 and "0 doubles stopped" in again.out


def test_a_recorded_replacement_stopped_as_a_double_gives_way_to_the_live_one(seed: Seeder, run, aws: SimulatedAWS, store: str) -> None:
    original, record = _restored(seed, run, store)
    double = _double(seed, original, record)
    seed.batch.terminate_job(jobId=record["replacement_id"], reason=f"{DOUBLE_REASON} of original {original}: by the paused run")
    aws.batch.advance_clock(1)
    checked = run("status", "--store", store, "--check", "--deploy-id", "d1")
    assert checked.code == 0, checked.err
    assert records(store, seed, "d1")[original]["replacement_id"] == double
    assert _live(aws, original) == [double]


def test_with_no_live_replacement_left_the_job_is_owed_again_and_restored_once(seed: Seeder, run, aws: SimulatedAWS, store: str) -> None:
    original, record = _restored(seed, run, store)
    seed.batch.terminate_job(jobId=record["replacement_id"], reason=f"{DOUBLE_REASON} of original {original}: by the paused run")
    aws.batch.advance_clock(1)
    checked = run("status", "--store", store, "--check", "--deploy-id", "d1")
    assert checked.code == 1 and "1 jobs are owed again" in checked.err
    assert "jobguard restore --store" in checked.err
    assert records(store, seed, "d1")[original]["outcome"] == "terminated"
    assert run("restore", "--store", store, "--deploy-id", "d1").code == 0
    live = _live(aws, original)
    assert len(live) == 1 and live == [records(store, seed, "d1")[original]["replacement_id"]]


def test_a_restore_that_cannot_show_it_holds_its_lease_stops_what_it_made(
    seed: Seeder, run, aws: SimulatedAWS, store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store stops answering lease renewals after the restore submitted its page: it cannot prove
    no other run took over meanwhile, so it stops the jobs it made and exits 3; the next restore of
    the deploy brings each job back once."""
    seed.queue("work")
    seed.definition("proc")
    jobs = [seed.job(jobName=f"j{i}", jobQueue="work", jobDefinition="proc") for i in range(2)]
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    taken: list[str] = []
    with monkeypatch.context() as down:
        for kind in (FileStore, S3Store, DynamoDBStore):

            def failing_write(self: Any, key: str, body: bytes, version: str | None, _write: Any = kind.write) -> str:
                if key.startswith("leases/") and taken:  # the restore took its lease; every renewal after fails
                    raise StoreError(f"cannot write {key}: injected outage")
                if key.startswith("leases/"):
                    taken.append(key)
                return str(_write(self, key, body, version))

            down.setattr(kind, "write", failing_write)
        failed = run("restore", "--store", store, "--deploy-id", "d1")
    assert failed.code == 3, failed.err
    assert "cannot show this run still holds the deploy lease" in failed.err
    assert failed.out.count("double cancelled") == len(jobs)
    made = [r for rs in replacements_of(aws).values() for r in rs]
    assert len(made) == len(jobs) and all((aws.batch.jobs[r].reason or "").startswith(DOUBLE_REASON) for r in made)
    again = run("restore", "--store", store, "--deploy-id", "d1")
    assert again.code == 0, again.err
    for job in jobs:
        assert _live(aws, job) == [records(store, seed, "d1")[job]["replacement_id"]]
