"""Attacks on manifests kept in pages (issue 25 part 3): a page accepted unsigned after an edit, a
page write S3 answers with a conflict, a reader while another run keeps saving, the pages left behind."""

from __future__ import annotations

import io
import json
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from jobguard.adapters.aws import Aws, AwsSettings
from jobguard.adapters.stores import open_store
from jobguard.adapters.stores.file import FileStore
from jobguard.commands.manifests import Manifests
from jobguard.domain.manifest import Manifest
from jobguard.errors import JobguardError
from jobguard.output.report import Reporter
from jobguard.sim import ACCOUNT, REGION, Seeder, SimulatedAWS

from .conftest import BUCKET, configure, replacements_of, signing_key
from .test_pages import _jobs, _page_names, _read, _write

PAGE = 2  # records per page here


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("jobguard.commands.manifests.PAGE_RECORDS", PAGE)


@pytest.fixture
def paged_store(store: str) -> str:
    if store.startswith("dynamodb://"):
        pytest.skip("DynamoDB keeps one item per record, no page objects")
    return store


def _stored_pages(store: str, seed: Seeder, deploy_id: str) -> set[str]:
    """Every page object of a deploy in a folder or bucket store, named relative to the store."""
    if store.startswith("file://"):
        folder = Path(store[len("file://") :])
        return {str(p.relative_to(folder)) for p in (folder / "pages" / deploy_id).glob("*")}
    bucket, _, prefix = store[len("s3://") :].partition("/")
    listed = seed.client("s3").list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/pages/{deploy_id}/").get("Contents", [])
    return {o["Key"][len(prefix) + 1 :] for o in listed}


@pytest.mark.usefixtures("small_pages")
def test_drain_and_restore_leave_only_the_pages_the_head_names(seed: Seeder, paged_store: str, run, aws: SimulatedAWS) -> None:
    store = paged_store
    _jobs(seed, "work", 7)
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    assert _stored_pages(store, seed, "d1") == set(_page_names(store, seed, "d1"))
    result = run("restore", "--store", store, "--deploy-id", "d1")
    assert result.code == 0, result.err
    assert _stored_pages(store, seed, "d1") == set(_page_names(store, seed, "d1"))


@pytest.mark.usefixtures("small_pages")
def test_a_page_edited_then_accepted_unsigned_stays_readable_after_the_next_save(
    seed: Seeder, paged_store: str, run, aws: SimulatedAWS
) -> None:
    """The edited page keeps its old name; the save after it named the page by its new records' digest,
    under which nothing was stored: every later read said 'page 0 is missing'."""
    store = paged_store
    jobs = _jobs(seed, "work", 5)
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    names = _page_names(store, seed, "d1")
    page = json.loads(_read(store, seed, names[0]))
    for job in page["jobs"]:  # restore leaves these records (and so their page) as they are
        job["outcome"] = "finished"
    _write(store, seed, names[0], json.dumps(page).encode())
    head = json.loads(_read(store, seed, "d1.json"))
    head.pop("signature")
    _write(store, seed, "d1.json", json.dumps(head).encode())
    restored = run("restore", "--store", store, "--deploy-id", "d1", "--unsigned")
    assert restored.code == 0, restored.err
    status = run("status", "--store", store, "--deploy-id", "d1", "--unsigned")
    assert status.code == 0, status.err
    finished = {job["job_id"] for job in page["jobs"]}
    assert {j: len(r) for j, r in replacements_of(aws).items()} == dict.fromkeys(set(jobs) - finished, 1)


@pytest.mark.usefixtures("small_pages")
@pytest.mark.parametrize("every", [2, 3, 5])
@pytest.mark.slow
def test_a_page_write_answered_409_is_never_named_unstored(seed: Seeder, workdir: Path, run, aws: SimulatedAWS, every: int) -> None:
    """S3 answers a conditional PutObject racing another write of the key with 409 ConditionalRequestConflict:
    nothing is stored. Taken for 'the page is there', the head named a page never written: drain said 0 and
    restore refused the manifest (every drained job lost)."""
    configure(workdir, f"signing-key: kms:{signing_key(seed)}")
    seed.client("s3").create_bucket(Bucket=BUCKET)
    store = f"s3://{BUCKET}/deploys"
    jobs = _jobs(seed, "work", 5)
    aws.fault = lambda action, n: (409, "ConditionalRequestConflict") if action == "s3:PutObject" and n % every == 0 else None
    drained = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1")
    aws.fault = None
    restored = run("restore", "--store", store, "--deploy-id", "d1")
    assert restored.code == 0, restored.err
    replaced = {j: len(r) for j, r in replacements_of(aws).items()}
    with aws.batch.lock:
        kept = {j for j in jobs if aws.batch.jobs[j].status not in ("SUCCEEDED", "FAILED")}
    assert set(replaced.values()) <= {1} and set(replaced) | kept == set(jobs) and not set(replaced) & kept, (drained.err, replaced)
    if drained.code == 0:
        assert set(replaced) == set(jobs)


@pytest.mark.slow
def test_a_manifest_is_read_while_another_run_keeps_saving_it(
    seed: Seeder, paged_store: str, run, aws: SimulatedAWS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each save deletes the pages only the head it replaced named. A reader (status, a restore of everything, a
    matrix leg merging its conflicting save) that started on the old head found a page gone and read the whole
    manifest again, which the next save spoiled again: 'other writers kept replacing the manifest' after 8 tries
    (7 loads in 11 failed). It now goes on with the new head when the pages it has read are still in it."""
    monkeypatch.setattr("jobguard.commands.manifests.PAGE_RECORDS", 5)
    store = paged_store  # DynamoDB (an item per record, no pages) still gives up after 8 tries beside a writer this busy
    _jobs(seed, "work", 400)
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0

    def manifests() -> Manifests:
        return Manifests(open_store(store, Aws(AwsSettings())), None, ACCOUNT, REGION, Reporter(io.StringIO(), io.StringIO()))

    stop, saves = threading.Event(), [0]

    def writer() -> None:  # changes the records of the last pages, the ones a reader reads last, as fast as it can
        writing = manifests()
        manifest = writing.load("d1")
        assert manifest is not None
        ids = list(manifest.jobs)[-10:]
        while not stop.is_set():
            job_id = ids[saves[0] % len(ids)]
            manifest.jobs[job_id] = replace(manifest.jobs[job_id], reason=f"save {saves[0]}")
            manifest.changed[job_id] = None
            writing.save(manifest)
            saves[0] += 1

    thread = threading.Thread(target=writer)
    thread.start()
    errors: list[str] = []
    loads: list[Manifest | None] = []
    try:
        while len(loads) + len(errors) < 8:
            try:
                loads.append(manifests().load("d1"))
            except JobguardError as exc:
                errors.append(str(exc))
    finally:
        stop.set()
        thread.join()
    assert not errors and saves[0] > 6, (errors, saves)
    assert all(loaded is not None and len(loaded.jobs) == 400 for loaded in loads)


@pytest.mark.usefixtures("small_pages")
def test_a_reader_that_followed_a_save_then_saves_leaves_no_page_behind(
    seed: Seeder, workdir: Path, run, aws: SimulatedAWS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S3: the pages a save deletes came from the head its process read first; a read that followed a save to a
    newer head then saved deleted nothing (the pages only the newer head named stayed, for ever)."""
    configure(workdir, f"signing-key: kms:{signing_key(seed)}")
    seed.client("s3").create_bucket(Bucket=BUCKET)
    store = f"s3://{BUCKET}/deploys"
    _jobs(seed, "work", 5)
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0

    def manifests() -> Manifests:
        return Manifests(open_store(store, Aws(AwsSettings())), None, ACCOUNT, REGION, Reporter(io.StringIO(), io.StringIO()))

    def change(manifest: Manifest, job_id: str, reason: str) -> None:
        manifest.jobs[job_id] = replace(manifest.jobs[job_id], reason=reason)
        manifest.changed[job_id] = None

    writer, reader = manifests(), manifests()
    written = writer.load("d1")
    assert written is not None
    read_pages = type(reader.store)._pages_of  # type: ignore[attr-defined]
    saved: list[bool] = []

    def pages_of(self: Any, keys: list[str]) -> list[bytes | None]:
        if not saved:  # another run saves (its last page changed) while this one reads
            saved.append(True)
            change(written, list(written.jobs)[-1], "the other run")
            writer.save(written)
        return list(read_pages(self, keys))

    monkeypatch.setattr(type(reader.store), "_pages_of", pages_of)
    manifest = reader.load("d1")
    assert saved and manifest is not None and manifest.jobs[list(manifest.jobs)[-1]].reason == "the other run"
    change(manifest, next(iter(manifest.jobs)), "this run")
    reader.save(manifest)
    assert _stored_pages(store, seed, "d1") == set(_page_names(store, seed, "d1"))


@pytest.mark.timeout(120)
@pytest.mark.usefixtures("small_pages")
@pytest.mark.slow
def test_a_read_beside_a_run_that_saves_at_every_page_read_ends(
    seed: Seeder, workdir: Path, run, aws: SimulatedAWS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Following newer heads is bounded: a writer faster than the reader makes it give up with one error, not spin."""
    configure(workdir, f"signing-key: kms:{signing_key(seed)}")
    seed.client("s3").create_bucket(Bucket=BUCKET)
    store = f"s3://{BUCKET}/deploys"
    _jobs(seed, "work", 5)
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    monkeypatch.setattr("jobguard.adapters.stores.paged.FOLLOWS", 3)
    writer = Manifests(open_store(store, Aws(AwsSettings())), None, ACCOUNT, REGION, Reporter(io.StringIO(), io.StringIO()))
    written = writer.load("d1")
    assert written is not None
    reader = Manifests(open_store(store, Aws(AwsSettings())), None, ACCOUNT, REGION, Reporter(io.StringIO(), io.StringIO()))
    read_pages, saves = type(reader.store)._pages_of, [0]  # type: ignore[attr-defined]

    def pages_of(self: Any, keys: list[str]) -> list[bytes | None]:
        if self is reader.store:  # another run saves (the last page changed) before each read of this one
            last = list(written.jobs)[-1]
            written.jobs[last] = replace(written.jobs[last], reason=f"save {saves[0]}")
            written.changed[last] = None
            writer.save(written)
            saves[0] += 1
        return list(read_pages(self, keys))

    monkeypatch.setattr(type(reader.store), "_pages_of", pages_of)
    with pytest.raises(JobguardError, match="kept replacing the manifest while it was read"):
        reader.load("d1")
    assert saves[0] < 100


class _Killed(BaseException):
    """kill -9 as far as the store can tell: the process stops between two writes, nothing after runs."""


@pytest.mark.usefixtures("small_pages")
@pytest.mark.parametrize("save", [2, 3, 4])
def test_a_drain_killed_between_its_pages_and_its_head_then_restore(
    seed: Seeder, workdir: Path, run, aws: SimulatedAWS, monkeypatch: pytest.MonkeyPatch, save: int
) -> None:
    """The pages are written, the head is not (its 2nd save, the records marked terminating, and the two after the
    stops): the previous head and its pages are whole; restore brings back each job the drain stopped, once; the
    pages left unnamed are only storage."""
    store = workdir / "m"
    jobs = _jobs(seed, "work", 7)
    write, heads = FileStore._write_atomically, [0]

    def killed(self: FileStore, path: Path, body: bytes) -> None:
        if path == store / "d1.json":
            heads[0] += 1
            if heads[0] == save:
                raise _Killed
        write(self, path, body)

    monkeypatch.setattr(FileStore, "_write_atomically", killed)
    with pytest.raises(_Killed):
        run("drain", "--store", f"file://{store}", "--queue", "work", "--deploy-id", "d1")
    monkeypatch.setattr(FileStore, "_write_atomically", write)
    for lock in (store / "leases").glob("*.json"):  # the killed process's leases: freed at once on this machine
        lock.unlink()
    restored = run("restore", "--store", f"file://{store}", "--deploy-id", "d1")
    assert restored.code == 0, restored.err
    replaced = {j: len(r) for j, r in replacements_of(aws).items()}
    with aws.batch.lock:
        kept = {j for j in jobs if aws.batch.jobs[j].status not in ("SUCCEEDED", "FAILED")}
    assert set(replaced.values()) <= {1} and set(replaced) | kept == set(jobs) and not set(replaced) & kept, replaced
