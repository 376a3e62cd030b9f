"""Attacks on the index of open deploys (`open/DEPLOY_ID`, commands/manifests.py) and on what 4cb275d made of it:
a restore drops an entry only at the version it read before the deploy's manifest, a run that indexed its deploy
gives the entry a new version once its manifest holds work. Two restores dropping the same stale entry, damaged
entries, and what the index costs a drain in store calls."""

from __future__ import annotations

import io
import socket
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest

from jobguard.adapters.aws import Aws, AwsSettings
from jobguard.adapters.stores import open_store
from jobguard.commands.manifests import Manifests
from jobguard.domain.manifest import SWEPT
from jobguard.errors import ConflictError
from jobguard.output.report import Reporter
from jobguard.sim import Seeder, SimulatedAWS
from jobguard.sim.server import ACCOUNT, REGION

from .conftest import BUCKET, TABLE, asked_to_stop, exactly_once, run_process, store_at


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
        path.rmdir() if path.is_dir() else path.unlink()
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
def test_a_damaged_index_entry_stops_only_the_runs_that_must_read_it(
    seed: Seeder, store: str, run: Any, workdir: Path, damage: str
) -> None:
    """A hand-edited entry in the index of open deploys. Its body is never parsed: any bytes index the deploy. One
    that cannot be read at all (a folder, more than a document may hold) is bad input to the runs that read it (a
    restore of everything, the deploy's own runs: one error line naming it, exit 2, nothing changed), as a damaged
    manifest is; since 4cb275d every restore reads every entry, and such an entry stopped the restores of every
    other deploy on the store too, where another deploy's damaged manifest is left to its own restore."""
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
    unreadable = damage in ("huge", "folder") and not store.startswith("dynamodb://")  # an item is read whole
    everything = run("restore", "--store", store)
    assert "X1" in store_at(store).keys("open")  # kept: it still indexes the deploy
    if unreadable:
        own = run("restore", "--store", store, "--deploy-id", "X1")
        for refused in (everything, own):
            assert refused.code == 2 and refused.err.startswith("error: ") and "open/X1.json" in refused.err, refused.err
        _put_entry(seed, store, workdir, "X1", b"")  # put right by hand
    else:
        assert everything.code == 0 and "deploy X1 holds it" in everything.out, (everything.out, everything.err)
    own = run("restore", "--store", store, "--deploy-id", "X1")
    assert own.code == 0 and "restore X1: 2 jobs: 2 resubmitted" in own.out, (own.out, own.err)


def _manifests(store: str) -> Manifests:
    return Manifests(open_store(store, Aws(AwsSettings())), None, ACCOUNT, REGION, Reporter(io.StringIO(), io.StringIO()))


def test_a_run_that_saves_work_after_another_closed_the_deploy_keeps_it_indexed(
    seed: Seeder, store: str, aws: SimulatedAWS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs of one deploy save its manifest (matrix legs share the deploy id: one leg's restore while another
    leg still drains). The restore's last save shows nothing left and drops the entry it read before it; between
    that save and the drop, the drain, which indexed the deploy at its own first save, saves work again (merged onto
    the restore's). Only a run's first save gave the entry a new version: the drop took it, and the drain's work
    was out of the index."""
    draining, restoring = _manifests(store), _manifests(store)
    drained = draining.new("D1", {})
    drained.open_window(1)
    draining.save(drained)  # indexed, and confirmed
    restored = restoring.load("D1")
    assert restored is not None and restored.has_work_left
    restored.stamp_window(SWEPT, 2)
    forget = Manifests.forget_index

    def drain_saves_first(self: Manifests, deploy_id: str, entry: Any) -> None:
        drained.frozen_queues["q2"] = "ENABLED"  # work again: a queue frozen, to be put back by a restore
        draining.save(drained)  # conflicts with the restore's save, merges onto it
        assert drained.has_work_left
        forget(self, deploy_id, entry)

    monkeypatch.setattr(Manifests, "forget_index", drain_saves_first)
    restoring.save(restored)
    monkeypatch.setattr(Manifests, "forget_index", forget)
    assert "D1" in store_at(store).keys("open")
    loaded = _manifests(store).load("D1")
    assert loaded is not None and loaded.has_work_left


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["throttled", "failing", "lost-reply"])
def test_the_confirm_write_throttled_or_failing(
    seed: Seeder, store: str, run: Any, aws: SimulatedAWS, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    """The store answers the entry's confirm write (after the drain's first save) with throttling, with errors
    to the last retry, or carries it out and loses the answer: the drain either goes on or stops cleanly, the
    deploy stays indexed, and the next runs drain and restore every job exactly once."""
    jobs = _queue(seed, "work", 4)
    write = "s3:PutObject" if store.startswith("s3://") else "dynamodb:PutItem"
    answer: Any = {"throttled": (503, "SlowDown") if write.startswith("s3") else (400, "ThrottlingException")}.get(fault)
    answer = answer or {"failing": (500, "InternalError"), "lost-reply": "lost-reply"}[fault]
    faults = [0]
    confirm = Manifests._confirm_open

    def faulty(self: Manifests, deploy_id: str) -> None:
        def inject(action: str, count: int) -> Any:
            if action != write or (fault != "failing" and faults[0] >= 2):
                return None
            faults[0] += 1
            return answer

        aws.fault = inject
        try:
            confirm(self, deploy_id)
        finally:
            aws.fault = None

    monkeypatch.setattr(Manifests, "_confirm_open", faulty)
    first = run("drain", "--store", store, "--queue", "work", "--deploy-id", "C1")
    monkeypatch.setattr(Manifests, "_confirm_open", confirm)
    if store.startswith("file://"):
        assert first.code == 0, first.err  # a folder store makes no call to fail
    elif fault == "failing":
        assert first.code == 4 and "open/C1" in first.err, (first.code, first.err)
        assert faults[0] > 1  # retried
    else:
        assert first.code == 0 and faults[0] == 2, (first.code, first.err, faults)
    assert "C1" in store_at(store).keys("open")
    again = run("drain", "--store", store, "--queue", "work", "--deploy-id", "C1")
    assert again.code == 0, again.err
    everything = run("restore", "--store", store)
    assert everything.code == 0 and "deploy C1 holds it" in everything.out, everything.out
    restored = run("restore", "--store", store, "--deploy-id", "C1")
    assert restored.code == 0, restored.err
    exactly_once(aws, jobs)
    assert "C1" not in store_at(store).keys("open")


def _sent(aws: SimulatedAWS, head: str, body: bytes) -> bytes:
    """Send one raw HTTP request to the simulation, then end the sending side; its whole answer."""
    with socket.create_connection(("127.0.0.1", int(aws.endpoint.rsplit(":", 1)[1])), timeout=10) as client:
        client.sendall(head.encode() + body)
        client.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
    return answer


STS_HEAD = (
    "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n{length}"
    f"Authorization: AWS4-HMAC-SHA256 Credential=AKID/20261208/{REGION}/sts/aws4_request, SignedHeaders=host, Signature=0\r\n\r\n"
)
STS_BODY = b"Action=GetCallerIdentity&Version=2011-06-15"


@pytest.mark.parametrize("whole", [True, False])
def test_a_chunked_request_is_a_call_when_whole(aws: SimulatedAWS, whole: bool) -> None:
    """A body sent `Transfer-Encoding: chunked` has no Content-Length. The simulation read no body then: a whole
    chunked GetCallerIdentity was answered 404 and counted as `sts:POST`, and one cut mid-chunk was counted too.
    A whole one is the call it carries; one cut short is no call (4cb275d: a client killed mid-body)."""
    chunked = f"{len(STS_BODY):x}\r\n".encode() + STS_BODY + b"\r\n0\r\n\r\n"
    answer = _sent(aws, STS_HEAD.format(length="Transfer-Encoding: chunked\r\n"), chunked if whole else chunked[:20])
    if whole:
        assert answer.startswith(b"HTTP/1.1 200") and b"GetCallerIdentityResult" in answer, answer[:200]
        assert dict(aws.calls) == {"sts:GetCallerIdentity": 1}
    else:
        assert answer == b"" and not aws.calls and not aws.recorded


def test_a_request_with_an_empty_body_is_a_call(aws: SimulatedAWS) -> None:
    """Content-Length 0 is a whole request (AWS answers it): counted, not taken for one cut short."""
    answer = _sent(aws, STS_HEAD.format(length="Content-Length: 0\r\n"), b"")
    assert answer.startswith(b"HTTP/1.1 ") and sum(aws.calls.values()) == 1, (answer[:100], aws.calls)
