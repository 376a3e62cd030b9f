"""Manifests kept in pages: a save writes only the pages it changed (bytes per job stay flat as
manifests grow); a page swapped, dropped, replayed from an older version or copied from another
deploy is refused before anything acts on it; a manifest written whole (before pages) is still
read, and its next save writes it in pages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobguard.adapters.stores.file import FileStore
from jobguard.domain.pages import PAGED, WHOLE
from jobguard.sim import Seeder, SimulatedAWS

from .conftest import load_manifest, records, replacements_of
from .hostile import assert_unchanged, one_error, resign, snapshot, write_document

PAGE = 2  # records per page here: five jobs make three pages


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("jobguard.commands.manifests.PAGE_RECORDS", PAGE)


def _jobs(seed: Seeder, queue: str, count: int) -> list[str]:
    seed.queue(queue)
    seed.definition(f"{queue}-def")
    return [seed.job(status="RUNNABLE", jobName=f"{queue}-{i}", jobQueue=queue, jobDefinition=f"{queue}-def") for i in range(count)]


# -- the objects of a folder or bucket store -------------------------------------------------------
def _page_names(store: str, seed: Seeder, deploy_id: str) -> list[str]:
    """The names of a manifest's pages (relative to the store), in order, as its head names them."""
    head = _read(store, seed, f"{deploy_id}.json")
    return [f"pages/{deploy_id}/{i:06d}-{digest}.json" for i, digest in enumerate(json.loads(head)["pages"])]


def _read(store: str, seed: Seeder, name: str) -> bytes:
    if store.startswith("file://"):
        return Path(store[len("file://") :], name).read_bytes()
    bucket, _, prefix = store[len("s3://") :].partition("/")
    return bytes(seed.client("s3").get_object(Bucket=bucket, Key=f"{prefix}/{name}")["Body"].read())


def _write(store: str, seed: Seeder, name: str, body: bytes | None) -> None:
    """Put (None: delete) an object, as someone with write access to the store would."""
    if store.startswith("file://"):
        path = Path(store[len("file://") :], name)
        path.unlink() if body is None else path.write_bytes(body)
        return
    bucket, _, prefix = store[len("s3://") :].partition("/")
    s3 = seed.client("s3")
    s3.delete_object(Bucket=bucket, Key=f"{prefix}/{name}") if body is None else s3.put_object(
        Bucket=bucket, Key=f"{prefix}/{name}", Body=body
    )


def _as(body: bytes, deploy_id: str, page: int) -> bytes:
    """A page's body made to say it is `page` of `deploy_id`."""
    return json.dumps({**json.loads(body), "deploy_id": deploy_id, "page": page}).encode()


@pytest.fixture
def paged_store(store: str) -> str:
    if store.startswith("dynamodb://"):
        pytest.skip("DynamoDB keeps one item per record, no page objects (its items are edited in test_tampering)")
    return store


@pytest.mark.usefixtures("small_pages")
@pytest.mark.parametrize("attack", ["swapped", "dropped", "from another deploy", "an older version"])
def test_a_tampered_page_is_refused(seed: Seeder, paged_store: str, run, aws: SimulatedAWS, attack: str) -> None:
    store = paged_store
    jobs = _jobs(seed, "work", 5)
    _jobs(seed, "other", 2)
    assert run("drain", "--store", store, "--queue", "other", "--deploy-id", "d2").code == 0
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    pages = _page_names(store, seed, "d1")
    assert len(pages) == 3 and sorted(r for r in records(store, seed, "d1")) == sorted(jobs)
    drained = _read(store, seed, pages[0])  # its records say "terminated": owed a replacement
    words: tuple[str, ...] = ("signature does not verify",)
    if attack == "an older version":  # restored, then its first page put back as it was: would resubmit its jobs again
        assert run("restore", "--store", store, "--deploy-id", "d1").code == 0
        pages = _page_names(store, seed, "d1")
        _write(store, seed, pages[0], drained)
    elif attack == "swapped":
        first, second = _read(store, seed, pages[0]), _read(store, seed, pages[1])
        _write(store, seed, pages[0], _as(second, "d1", 0))
        _write(store, seed, pages[1], _as(first, "d1", 1))
    elif attack == "dropped":
        _write(store, seed, pages[1], None)
        words = ("page 1", "missing")
    else:
        _write(store, seed, pages[0], _as(_read(store, seed, _page_names(store, seed, "d2")[0]), "d1", 0))
    before = snapshot(aws, seed, store)
    one_error(run("restore", "--store", store, "--deploy-id", "d1"), 2, *words)
    one_error(run("status", "--store", store, "--deploy-id", "d1"), 2, *words)
    assert_unchanged(before, aws, seed)


@pytest.mark.usefixtures("small_pages")
def test_a_page_copied_from_another_deploy_as_it_is_says_so(seed: Seeder, paged_store: str, run, aws: SimulatedAWS) -> None:
    store = paged_store
    _jobs(seed, "work", 3)
    _jobs(seed, "other", 2)
    assert run("drain", "--store", store, "--queue", "other", "--deploy-id", "d2").code == 0
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    _write(store, seed, _page_names(store, seed, "d1")[0], _read(store, seed, _page_names(store, seed, "d2")[0]))
    before = snapshot(aws, seed, store)
    one_error(run("restore", "--store", store, "--deploy-id", "d1", "--unsigned"), 2, "page 0 says deploy 'd2'", "a copy or an edit")
    assert_unchanged(before, aws, seed)


@pytest.mark.usefixtures("small_pages")
def test_a_manifest_written_whole_is_restored_and_saved_in_pages(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    """A store written by jobguard before pages: one whole document, signed over the whole document."""
    jobs = _jobs(seed, "work", 5)
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    document = load_manifest(store, seed, "d1")
    del document["page_records"]
    document["signature"]["algorithm"] = WHOLE
    resign(document, seed)
    write_document(store, seed, "d1", document)
    assert "jobs" in load_manifest(store, seed, "d1") and "page_records" not in load_manifest(store, seed, "d1")
    result = run("restore", "--store", store, "--deploy-id", "d1")
    assert result.code == 0, result.err
    assert {j: len(r) for j, r in replacements_of(aws).items()} == dict.fromkeys(jobs, 1)
    stored = load_manifest(store, seed, "d1")
    assert stored["signature"]["algorithm"] == PAGED and stored["page_records"] == PAGE
    assert {r["outcome"] for r in stored["jobs"]} == {"resubmitted"}
    if not store.startswith("dynamodb://"):
        assert len(_page_names(store, seed, "d1")) == 3


def _written(seed: Seeder, run, workdir: Path, written: list[int], count: int) -> int:
    """Bytes a folder store is given by a drain and a restore of `count` jobs."""
    before = written[0]
    queue = f"q{count}"
    _jobs(seed, queue, count)
    store = f"file://{workdir}/{queue}"
    assert run("drain", "--store", store, "--queue", queue, "--deploy-id", queue).code == 0
    assert run("restore", "--store", store, "--deploy-id", queue).code == 0
    return written[0] - before


def test_bytes_written_per_job_stay_flat_as_manifests_grow(seed: Seeder, run, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Drain and restore save every 4 records: a store that rewrote the whole manifest at each save would
    write about 4 times as much per job for 48 jobs as for 12 (O(N^2) bytes)."""
    for module, name in (("drain", "RECORD_PAGE"), ("restore", "SUBMIT_PAGE"), ("manifests", "PAGE_RECORDS")):
        monkeypatch.setattr(f"jobguard.commands.{module}.{name}", 4)
    written = [0]
    write = FileStore._write_atomically

    def counted(self: FileStore, path: Path, body: bytes) -> None:
        write(self, path, body)
        written[0] += len(body)

    monkeypatch.setattr(FileStore, "_write_atomically", counted)
    small, large = (_written(seed, run, workdir, written, n) / n for n in (12, 48))
    assert large < 1.3 * small, (small, large)
