"""Restore holds records without their submissions (domain/elision.py): whole records only for the page of
jobs being sent, read back from the stored page and checked against the digest the signature covers.
A page changed after restore read it is refused before its jobs are sent; one replaced by another run's
save is read again through the new head; every job is still resubmitted exactly once."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from jobguard.adapters.stores.dynamodb import DynamoDBStore
from jobguard.adapters.stores.file import FileStore
from jobguard.adapters.stores.s3 import S3Store
from jobguard.commands.manifests import Manifests
from jobguard.domain.manifest import JobRecord
from jobguard.sim import Seeder, SimulatedAWS

from .conftest import killed_at_call, load_manifest, overlapping, records, replacements_of, run_process, whole_records_at_each_submit
from .hostile import one_error

PAGE = 4  # records per page, and jobs sent per page: 36 jobs make 9 pages
JOBS = 30


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("jobguard.commands.manifests.PAGE_RECORDS", PAGE)
    monkeypatch.setattr("jobguard.commands.restore.SUBMIT_PAGE", PAGE)


DOWN = 6  # jobs of a second queue, each depending on a job of the first


def _drained(seed: Seeder, run, store: str) -> list[str]:
    """JOBS + DOWN drained jobs, each with inputs of its own. Every third of the first queue depends on the one
    before it (drain records it on an earlier page than its dependency); the second queue's depend on the first's
    (recorded after them: on later pages)."""
    seed.queue("work")
    seed.queue("down")
    seed.definition("proc")
    jobs: list[str] = []
    for i in range(JOBS + DOWN):
        extra: dict[str, Any] = {"status": "PENDING", "dependsOn": [{"jobId": _dependency(jobs, i)}]} if _dependent(i) else {}
        overrides = {"environment": [{"name": "INPUT", "value": f"s3://in/{i}"}]}
        queue = "work" if i < JOBS else "down"
        jobs.append(seed.job(jobName=f"j{i}", jobQueue=queue, jobDefinition="proc", containerOverrides=overrides, **extra))
    assert run("drain", "--store", store, "--queue", "work", "--queue", "down", "--deploy-id", "d1").code == 0
    return jobs


def _dependent(i: int) -> bool:
    return i >= JOBS or i % 3 == 2


def _dependency(jobs: list[str], i: int) -> str:
    return jobs[(i - JOBS) * 5] if i >= JOBS else jobs[i - 1]


def _check_restored(aws: SimulatedAWS, jobs: list[str]) -> None:
    """Every job replaced once, with its own inputs, its dependency pointing at its dependency's replacement."""
    replaced = replacements_of(aws)
    assert sorted(replaced) == sorted(jobs) and all(len(r) == 1 for r in replaced.values())
    for i, job in enumerate(jobs):
        request = aws.batch.jobs[replaced[job][0]].request
        assert request["containerOverrides"]["environment"][0] == {"name": "INPUT", "value": f"s3://in/{i}"}
        if _dependent(i):
            assert request["dependsOn"] == [{"jobId": replaced[_dependency(jobs, i)][0]}]
    assert overlapping(aws) == []


@pytest.mark.usefixtures("small_pages")
@pytest.mark.slow
def test_restore_holds_the_submissions_of_a_page_not_of_every_job(
    seed: Seeder, store: str, run, aws: SimulatedAWS, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = _drained(seed, run, store)
    held = whole_records_at_each_submit(monkeypatch)
    assert run("restore", "--store", store, "--deploy-id", "d1").code == 0
    _check_restored(aws, jobs)
    assert len(held) == JOBS + DOWN
    # The page being sent, as read back, marked `submitting` and answered: never the whole manifest's.
    assert max(held) <= 3 * PAGE, held


@pytest.mark.usefixtures("small_pages")
def test_a_page_changed_after_restore_read_it_is_refused_before_its_jobs_are_sent(
    seed: Seeder, store: str, run, aws: SimulatedAWS, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = _drained(seed, run, store)
    page = _StoredPage(store, seed, "d1", 3)
    stored = page.first()
    whole = Manifests.whole

    def edit_page_3(self: Manifests, manifest: Any, wanted: list[JobRecord]) -> list[JobRecord]:
        if page.first() == stored:  # after the manifest was read and verified, before the first job is sent
            page.put_first({**stored, "submission": {**stored["submission"], "containerOverrides": {"command": ["rm", "-rf", "/"]}}})
        return whole(self, manifest, wanted)

    monkeypatch.setattr(Manifests, "whole", edit_page_3)
    one_error(run("restore", "--store", store, "--deploy-id", "d1"), 2, "page 3", "no longer hash")
    assert not set(page.job_ids()) & set(replacements_of(aws))  # none of the page's jobs sent, the edited one least of all
    assert not [j for j in aws.batch.jobs.values() if "command" in j.request.get("containerOverrides", {})]
    monkeypatch.setattr(Manifests, "whole", whole)
    page.put_first(stored)  # the record as jobguard wrote it: the next restore finishes, each job once
    assert run("restore", "--store", store, "--deploy-id", "d1").code == 0
    _check_restored(aws, jobs)


class _StoredPage:
    """Page `index` of a manifest as the store keeps it: a page object (folder, S3) or the job items whose places
    are on it (DynamoDB); its first record read and replaced behind jobguard's back."""

    def __init__(self, store: str, seed: Seeder, deploy_id: str, index: int) -> None:
        self.store, self.seed, self.deploy_id, self.index = store, seed, deploy_id, index
        if not store.startswith("dynamodb://"):
            digest = json.loads(self._get(f"{deploy_id}.json"))["pages"][index]
            self.name = f"pages/{deploy_id}/{index:06d}-{digest}.json"

    def job_ids(self) -> list[str]:
        if self.store.startswith("dynamodb://"):
            return [r["job_id"] for r in load_manifest(self.store, self.seed, self.deploy_id)["jobs"][self.index * PAGE :][:PAGE]]
        return [r["job_id"] for r in json.loads(self._get(self.name))["jobs"]]

    def first(self) -> dict[str, Any]:
        if self.store.startswith("dynamodb://"):
            return dict(self._item()[1])
        return dict(json.loads(self._get(self.name))["jobs"][0])

    def put_first(self, record: dict[str, Any]) -> None:
        if self.store.startswith("dynamodb://"):
            item = {**self._item()[0], "body": {"S": json.dumps(record, sort_keys=True)}}
            self.seed.client("dynamodb").put_item(TableName=self.store.removeprefix("dynamodb://"), Item=item)
            return
        body = json.loads(self._get(self.name))
        body["jobs"][0] = record
        self._put(self.name, json.dumps(body).encode())

    def _item(self) -> tuple[dict[str, Any], Any]:
        table, job_id = self.store.removeprefix("dynamodb://"), self.job_ids()[0]
        key = {"pk": {"S": f"deploy#{self.deploy_id}"}, "sk": {"S": f"job#{job_id}"}}
        item = self.seed.client("dynamodb").get_item(TableName=table, Key=key)["Item"]
        return item, json.loads(item["body"]["S"])

    def _get(self, name: str) -> bytes:
        if self.store.startswith("file://"):
            return Path(self.store[len("file://") :], name).read_bytes()
        bucket, _, prefix = self.store[len("s3://") :].partition("/")
        return bytes(self.seed.client("s3").get_object(Bucket=bucket, Key=f"{prefix}/{name}")["Body"].read())

    def _put(self, name: str, body: bytes) -> None:
        if self.store.startswith("file://"):
            Path(self.store[len("file://") :], name).write_bytes(body)
            return
        bucket, _, prefix = self.store[len("s3://") :].partition("/")
        self.seed.client("s3").put_object(Bucket=bucket, Key=f"{prefix}/{name}", Body=body)


@pytest.mark.usefixtures("small_pages")
def test_a_page_replaced_by_another_save_is_read_through_the_new_head(
    seed: Seeder, store: str, run, aws: SimulatedAWS, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = _drained(seed, run, store)
    kinds: dict[str, type[FileStore | S3Store | DynamoDBStore]] = {"file": FileStore, "s3": S3Store, "dynamodb": DynamoDBStore}
    kind = kinds[store.partition(":")[0]]
    page = kind.page
    missed: list[int] = []

    def gone_once(self: Any, deploy_id: str, index: int, digest: str, ids: Sequence[str]) -> list[Any] | None:
        if index == 2 and not missed:  # as when another run's save replaced the page (and its name) since it was read
            missed.append(index)
            return None
        return page(self, deploy_id, index, digest, ids)

    monkeypatch.setattr(kind, "page", gone_once)
    assert run("restore", "--store", store, "--deploy-id", "d1").code == 0
    assert missed == [2]
    _check_restored(aws, jobs)


@pytest.mark.slow
def test_matrix_legs_restoring_at_once_rewrite_shared_pages_and_each_job_is_sent_once(
    seed: Seeder, store: str, run, aws: SimulatedAWS
) -> None:
    """Two legs of one deploy restore at the same time; the page their records share is rewritten by both, so
    each finds pages it read replaced by the other's saves (read again through the new head, merged)."""
    legs, per_leg = ("leg-0", "leg-1"), 600  # pages of 500: the second page holds both legs' records
    seed.definition("proc")
    jobs: dict[str, list[str]] = {}
    for leg in legs:
        seed.queue(leg)
        overrides = [{"environment": [{"name": "INPUT", "value": f"s3://in/{leg}/{i}"}]} for i in range(per_leg)]
        jobs[leg] = [
            seed.job(jobName=f"{leg}-{i}", jobQueue=leg, jobDefinition="proc", containerOverrides=o) for i, o in enumerate(overrides)
        ]
        assert run("drain", "--store", store, "--queue", leg, "--deploy-id", "4005").code == 0
    env = {"GITHUB_ACTIONS": "true", "GITHUB_RUN_ID": "4005", "GITHUB_REPOSITORY": "org/stack"}
    restores = [run_process("restore", "--store", store, "--queue", leg, "--deploy-id", "4005", env=env) for leg in legs]
    for process in restores:
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, err
    replaced = replacements_of(aws)
    for leg in legs:
        for i, job in enumerate(jobs[leg]):
            assert len(replaced.get(job, [])) == 1, job
            request = aws.batch.jobs[replaced[job][0]].request
            assert request["containerOverrides"]["environment"][0] == {"name": "INPUT", "value": f"s3://in/{leg}/{i}"}
    stored = records(store, seed, "4005")
    assert {r["outcome"] for r in stored.values()} == {"resubmitted"} and len(stored) == 2 * per_leg
    assert all(stored[j]["replacement_id"] == replaced[j][0] for j in stored)
    assert overlapping(aws) == []


@pytest.mark.slow
@pytest.mark.parametrize("at", [700])  # a SubmitJob of the second of three pages of 500 (test_faults: every call, small manifests)
def test_a_restore_killed_while_it_sends_is_finished_by_the_next_each_job_once(
    seed: Seeder, store: str, run, aws: SimulatedAWS, at: int
) -> None:
    seed.queue("work")
    seed.definition("proc")
    overrides = [{"environment": [{"name": "INPUT", "value": f"s3://in/{i}"}]} for i in range(1200)]
    jobs = [seed.job(jobName=f"j{i}", jobQueue="work", jobDefinition="proc", containerOverrides=o) for i, o in enumerate(overrides)]
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    first = aws.calls["batch:SubmitJob"] + at
    process = run_process("restore", "--store", store, "--deploy-id", "d1")
    killed_at_call(aws, process, "batch:SubmitJob", first, timeout=600)
    assert run("restore", "--store", store, "--deploy-id", "d1").code == 0
    replaced = replacements_of(aws)
    assert sorted(replaced) == sorted(jobs) and all(len(r) == 1 for r in replaced.values())
    for i, job in enumerate(jobs):
        assert aws.batch.jobs[replaced[job][0]].request["containerOverrides"]["environment"][0]["value"] == f"s3://in/{i}"
    assert {r["outcome"] for r in records(store, seed, "d1").values()} == {"resubmitted"}


@pytest.mark.usefixtures("small_pages")
@pytest.mark.parametrize("store", ["dynamodb"], indirect=True)
def test_a_save_in_steps_reads_each_page_back_once(
    seed: Seeder, store: str, run, aws: SimulatedAWS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DynamoDB takes a save in steps (one transaction each): a page whose changes span steps is read back once a
    save, not once a step, and its records' submissions are let go once the steps writing it are over."""
    monkeypatch.setattr(DynamoDBStore, "atomic_records", 1)  # every record a step of its own: PAGE steps a page
    seed.queue("work")
    seed.definition("proc")
    overrides = [{"environment": [{"name": "INPUT", "value": f"s3://in/{i}"}]} for i in range(JOBS)]
    jobs = [seed.job(jobName=f"j{i}", jobQueue="work", jobDefinition="proc", containerOverrides=o) for i, o in enumerate(overrides)]
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    reads: Counter[int] = Counter()
    page = DynamoDBStore.page

    def counted(self: DynamoDBStore, deploy_id: str, index: int, digest: str, ids: Sequence[str]) -> list[Any] | None:
        reads[index] += 1
        return page(self, deploy_id, index, digest, ids)

    monkeypatch.setattr(DynamoDBStore, "page", counted)
    held = whole_records_at_each_submit(monkeypatch)
    assert run("restore", "--store", store, "--deploy-id", "d1").code == 0
    replaced = replacements_of(aws)
    assert sorted(replaced) == sorted(jobs) and all(len(r) == 1 for r in replaced.values())
    # Each page read back to send its jobs, then once by each of the two saves of those jobs (`submitting`, then
    # `resubmitted`): 3, where a read a step would make 1 + 2 * PAGE.
    assert set(reads.values()) == {3}, reads
    assert max(held) <= 3 * PAGE, held
