"""Attacks on the index of open deploys (`open/DEPLOY_ID`, commands/manifests.py) and on what 4cb275d made of it:
a restore drops an entry only at the version it read before the deploy's manifest, a run that indexed its deploy
gives the entry a new version once its manifest holds work. Two restores dropping the same stale entry, damaged
entries, and what the index costs a drain in store calls."""

from __future__ import annotations

from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest

from jobguard.commands.manifests import Manifests
from jobguard.errors import ConflictError
from jobguard.sim import Seeder, SimulatedAWS

from .conftest import BUCKET, TABLE, asked_to_stop, run_process, store_at


def _queue(seed: Seeder, name: str, jobs: int) -> list[str]:
    seed.queue(name)
    seed.definition("proc")
    return [seed.job(jobName=f"{name}-{i}", jobQueue=name, jobDefinition="proc") for i in range(jobs)]


def test_two_restores_drop_the_entry_a_drain_indexed_before_its_manifest(
    seed: Seeder, store: str, run: Any, aws: SimulatedAWS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two restores (a person's restore of everything, another deploy's restore) both read the index just after a
    drain put its deploy there and before its manifest exists: the first drops the entry, the drain writes it again
    once its jobs are recorded, and the second, slower, drops the version it read. On DynamoDB a version was a count
    that started again at 1 when an entry was written anew: the second drop took the drain's new entry, and the
    drain's jobs were invisible to every later restore of everything."""
    jobs = _queue(seed, "work", 3)
    write = Manifests._write
    slow: list[Any] = []  # the slower restore's entry, read before a manifest it found missing

    def restores_first(self: Manifests, manifest: Any, ids: list[str], read_back: set[str]) -> None:
        if not slow:
            there = store_at(store)
            entry = there.read("open/1301")  # what `_candidates` reads first ...
            assert entry is not None and there.load("1301") is None  # ... then no manifest behind it: stale
            slow.append(entry)
            popen = run_process("restore", "--store", store)  # the faster restore drops the entry
            out, err = popen.communicate(timeout=120)
            assert popen.returncode == 0 and "nothing to restore" in out, (out, err)
            assert there.read("open/1301") is None
        write(self, manifest, ids, read_back)

    monkeypatch.setattr(Manifests, "_write", restores_first)
    drained = run("drain", "--store", store, "--queue", "work", "--deploy-id", "1301")
    monkeypatch.setattr(Manifests, "_write", write)
    assert drained.code == 0, drained.err
    assert all(asked_to_stop(aws, j) for j in jobs)
    with suppress(ConflictError):  # the slower restore drops what it read, as `forget_index` does
        store_at(store).delete("open/1301", slow[0].version)
    by_hand = run("restore", "--store", store)
    assert by_hand.code == 0 and "deploy 1301 holds it" in by_hand.out and "3 owed jobs wait for its restore" in by_hand.out, by_hand.out


def _entry_path(workdir: Path, deploy_id: str) -> Path:
    return workdir / "manifests" / "open" / f"{deploy_id}.json"


def _put_entry(seed: Seeder, store: str, workdir: Path, deploy_id: str, body: bytes | None) -> None:
    """Replace the deploy's index entry by hand: with `body`, or (None, a folder store) with a folder."""
    if store.startswith("file://"):
        path = _entry_path(workdir, deploy_id)
        path.unlink()
        if body is None:
            path.mkdir()
        else:
            path.write_bytes(body)
    elif store.startswith("s3://"):
        seed.client("s3").put_object(Bucket=BUCKET, Key=f"deploys/open/{deploy_id}.json", Body=body)
    else:
        item = {"pk": {"S": "open"}, "sk": {"S": deploy_id}, "body": {"S": (body or b"").decode()}, "version": {"N": "7"}}
        seed.client("dynamodb").put_item(TableName=TABLE, Item=item)


@pytest.mark.parametrize("damage", ["not JSON", "empty", "huge", "folder"])
def test_a_damaged_index_entry_stops_no_restore(seed: Seeder, store: str, run: Any, workdir: Path, damage: str) -> None:
    """A hand-edited entry in the index of open deploys: its body is never parsed, and one that cannot even be read
    (a folder, more than a document may hold) is left as it is, still indexing its deploy. Before, every restore read
    every entry and stopped at such an entry (exit 2): the restores of every other deploy on the store too."""
    if damage == "folder" and not store.startswith("file://"):
        pytest.skip("a folder in place of a document is a folder store's")
    _queue(seed, "work", 2)
    _queue(seed, "other", 1)
    for deploy_id, queue in (("X1", "work"), ("Y1", "other")):
        drained = run("drain", "--store", store, "--queue", queue, "--deploy-id", deploy_id)
        assert drained.code == 0, drained.err
    body = {"not JSON": b"{garbage", "empty": b"", "huge": b"x" * 100_000, "folder": None}[damage]
    _put_entry(seed, store, workdir, "X1", body)
    other = run("restore", "--store", store, "--deploy-id", "Y1")
    assert other.code == 0 and "restore Y1: 1 jobs: 1 resubmitted" in other.out, (other.out, other.err)
    everything = run("restore", "--store", store)
    assert everything.code == 0 and "deploy X1 holds it" in everything.out, (everything.out, everything.err)
    assert "X1" in store_at(store).keys("open")  # kept: it still indexes the deploy
    own = run("restore", "--store", store, "--deploy-id", "X1")
    assert own.code == 0 and "restore X1: 2 jobs: 2 resubmitted" in own.out, (own.out, own.err)
