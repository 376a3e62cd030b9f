"""Attacks on DynamoDB's paged reads (adapters/stores/dynamodb.py `load`, `page`; commands/manifests.py `whole`,
`read_back`): a flaky BatchGetItem, another run saving the manifest while restore reads it, items edited or
dropped by hand, damaged headers, restores killed at each call. Every restore finishes each job exactly once or
stops with one clear error line, and a rerun finishes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from jobguard.adapters.stores.dynamodb import DynamoDBStore
from jobguard.commands.manifests import Manifests
from jobguard.domain.manifest import JobRecord
from jobguard.sim import Seeder, SimulatedAWS

from .conftest import TABLE, exactly_once, killed_at_call, records, replacements_of, run_process, whole_records_at_each_submit
from .hostile import one_error

PAGE = 4
MATRIX = {"GITHUB_ACTIONS": "true", "GITHUB_RUN_ID": "4005", "GITHUB_REPOSITORY": "org/stack"}


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("jobguard.commands.manifests.PAGE_RECORDS", PAGE)
    monkeypatch.setattr("jobguard.commands.restore.SUBMIT_PAGE", PAGE)


def _jobs(seed: Seeder, queue: str, n: int) -> list[str]:
    seed.queue(queue)
    overrides = [{"environment": [{"name": "INPUT", "value": f"s3://in/{queue}/{i}"}]} for i in range(n)]
    return [seed.job(jobName=f"{queue}-{i}", jobQueue=queue, jobDefinition="proc", containerOverrides=o) for i, o in enumerate(overrides)]


def _inputs_kept(aws: SimulatedAWS, seed: Seeder, jobs: list[str]) -> None:
    """Each job replaced once, with its own inputs (job QUEUE-I was given s3://in/QUEUE/I)."""
    for new in exactly_once(aws, jobs).values():
        request = aws.batch.jobs[new].request
        queue, _, i = str(request["jobName"]).rpartition("-")
        assert request["containerOverrides"]["environment"][0]["value"] == f"s3://in/{queue}/{i}", request


DYNAMODB = pytest.mark.parametrize("store", ["dynamodb"], indirect=True)
Test = TypeVar("Test", bound=Callable[..., None])


def PAGED(test: Test) -> Test:
    """On DynamoDB, in pages of PAGE records."""
    paged: Test = DYNAMODB(pytest.mark.usefixtures("small_pages")(test))
    return paged


def _table(seed: Seeder) -> Any:
    return seed.client("dynamodb")


def _items(seed: Seeder, deploy_id: str = "d1") -> list[dict[str, Any]]:
    """The job items of a manifest, in their places."""
    pages = (
        _table(seed)
        .get_paginator("query")
        .paginate(TableName=TABLE, KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": {"S": f"deploy#{deploy_id}"}})
    )
    return sorted((i for page in pages for i in page["Items"]), key=lambda i: int(i["seq"]["N"]))


def _put(seed: Seeder, item: dict[str, Any]) -> None:
    _table(seed).put_item(TableName=TABLE, Item=item)


def _delete(seed: Seeder, item: dict[str, Any]) -> None:
    _table(seed).delete_item(TableName=TABLE, Key={"pk": item["pk"], "sk": item["sk"]})


def _header(seed: Seeder, deploy_id: str = "d1") -> dict[str, Any]:
    return dict(_table(seed).get_item(TableName=TABLE, Key={"pk": {"S": "deploys"}, "sk": {"S": deploy_id}})["Item"])


def _drained(seed: Seeder, run: Any, store: str, n: int = 10) -> list[str]:
    """`n` drained jobs of queue `work`, each with inputs of its own: pages of PAGE (`small_pages`)."""
    seed.definition("proc")
    jobs = _jobs(seed, "work", n)
    drained = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1")
    assert drained.code == 0, drained.err
    return jobs


def _restore(run: Any, store: str, *more: str) -> Any:
    return run("restore", "--store", store, "--deploy-id", "d1", *more)


def _restored_once(aws: SimulatedAWS, seed: Seeder, run: Any, store: str, jobs: list[str]) -> None:
    """A restore of d1 that succeeds, each job replaced once with its own inputs."""
    restored = _restore(run, store)
    assert restored.code == 0, restored.err
    _inputs_kept(aws, seed, jobs)


def _all_resubmitted(seed: Seeder, store: str) -> None:
    assert {r["outcome"] for r in records(store, seed, "d1").values()} == {"resubmitted"}


def _nothing_sent_then_rerun_finishes(aws: SimulatedAWS, seed: Seeder, run: Any, store: str, jobs: list[str], sent: int = 0) -> None:
    assert len(replacements_of(aws)) == sent
    _restored_once(aws, seed, run, store, jobs)
    _all_resubmitted(seed, store)


def _unprocessed_at_first(
    asks: int | Callable[[str], int], which: Callable[[str], bool] = lambda sk: True
) -> Callable[[dict[str, Any]], bool]:
    """For `aws.unprocessed`: BatchGetItem leaves each key `which` picks unprocessed the first `asks` times (or
    `asks(sk)` times) a call asks for it. The simulation looks at each key of a call twice."""
    looked: dict[str, int] = {}

    def unprocessed(key: dict[str, Any]) -> bool:
        sk = key["sk"]["S"]
        looked[sk] = looked.get(sk, 0) + 1
        times = asks(sk) if callable(asks) else asks
        return which(sk) and looked[sk] <= 2 * times

    return unprocessed


def _every_other(sk: str) -> bool:
    return hash(sk) % 2 == 0


# -- a flaky BatchGetItem -----------------------------------------------------------------------------------------
@PAGED
def test_batch_get_leaving_every_key_unprocessed_fails_with_one_line_and_a_rerun_finishes(
    seed: Seeder, store: str, run, aws: SimulatedAWS
) -> None:
    jobs = _drained(seed, run, store)
    aws.unprocessed = lambda key: True
    one_error(_restore(run, store), 4, "unprocessed")
    aws.unprocessed = None
    _nothing_sent_then_rerun_finishes(aws, seed, run, store, jobs)


@PAGED
def test_batch_get_leaving_keys_unprocessed_a_while_still_restores_each_job_once(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    jobs = _drained(seed, run, store)
    aws.unprocessed = _unprocessed_at_first(2, which=_every_other)
    _restored_once(aws, seed, run, store, jobs)
    assert aws.calls["dynamodb:BatchGetItem"] > 0


@PAGED
def test_batch_get_unprocessed_forever_while_reading_a_page_back_sends_nothing_of_it(
    seed: Seeder, store: str, run, aws: SimulatedAWS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Load reads every page; then BatchGetItem stops answering (capacity exhausted) as restore reads page 1 back."""
    jobs = _drained(seed, run, store)
    whole, calls = Manifests.whole, []

    def starved_after_the_first_page(self: Manifests, manifest: Any, wanted: list[JobRecord]) -> list[JobRecord]:
        calls.append(1)
        if len(calls) > 1:
            aws.unprocessed = lambda key: True
        return whole(self, manifest, wanted)

    monkeypatch.setattr(Manifests, "whole", starved_after_the_first_page)
    one_error(_restore(run, store), 4, "unprocessed")
    aws.unprocessed = None
    monkeypatch.setattr(Manifests, "whole", whole)
    _nothing_sent_then_rerun_finishes(aws, seed, run, store, jobs, sent=len(replacements_of(aws)))


@PAGED
@pytest.mark.parametrize("fault", ["drop", "lost-reply", (500, "InternalServerError"), (400, "ThrottlingException")])
def test_batch_get_failing_every_other_call_still_restores_each_job_once(
    seed: Seeder, store: str, run, aws: SimulatedAWS, fault: Any
) -> None:
    jobs = _drained(seed, run, store)
    aws.fault = lambda action, count: fault if action == "dynamodb:BatchGetItem" and count % 2 else None
    _restored_once(aws, seed, run, store, jobs)
    assert aws.faults["dynamodb:BatchGetItem"] > 1


@PAGED
def test_batch_get_dropped_every_time_fails_with_one_line_and_a_rerun_finishes(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    jobs = _drained(seed, run, store)
    aws.fault = lambda action, count: "drop" if action == "dynamodb:BatchGetItem" else None
    one_error(_restore(run, store), 4)
    aws.fault = None
    _nothing_sent_then_rerun_finishes(aws, seed, run, store, jobs)


# -- items and headers changed by hand ----------------------------------------------------------------------------
@PAGED
def test_a_job_item_deleted_by_hand_is_refused_before_anything_is_sent(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    jobs = _drained(seed, run, store)
    gone = _items(seed)[5]
    _delete(seed, gone)
    one_error(_restore(run, store), 2, "deleted or their places edited")
    assert not replacements_of(aws)
    _put(seed, gone)
    _nothing_sent_then_rerun_finishes(aws, seed, run, store, jobs)


@PAGED
def test_a_job_item_deleted_by_hand_after_restore_read_it_stops_restore_before_its_page_is_sent(
    seed: Seeder, store: str, run, aws: SimulatedAWS, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = _drained(seed, run, store)
    gone = _items(seed)[5]  # page 1
    whole = Manifests.whole

    def deleted(self: Manifests, manifest: Any, wanted: list[JobRecord]) -> list[JobRecord]:
        _delete(seed, gone)
        return whole(self, manifest, wanted)

    monkeypatch.setattr(Manifests, "whole", deleted)
    one_error(_restore(run, store), 2)
    on_page_1 = {json.loads(i["body"]["S"])["job_id"] for i in _items(seed)[4:8]} | {json.loads(gone["body"]["S"])["job_id"]}
    assert not on_page_1 & set(replacements_of(aws))
    monkeypatch.setattr(Manifests, "whole", whole)
    _put(seed, gone)
    _nothing_sent_then_rerun_finishes(aws, seed, run, store, jobs, sent=len(replacements_of(aws)))


@PAGED
@pytest.mark.parametrize("change", ["swap", "duplicate", "garbage", "absent"])
def test_job_item_places_changed_by_hand_are_refused_or_harmless(seed: Seeder, store: str, run, aws: SimulatedAWS, change: str) -> None:
    """Two records swapped, a place given twice, a place that is not a number, no place: the order the signature
    covers is no longer the stored one (refused, nothing sent), or the records are still in it (restored once)."""
    jobs = _drained(seed, run, store)
    items = _items(seed)
    if change == "swap":
        _put(seed, {**items[4], "seq": items[6]["seq"]})
        _put(seed, {**items[6], "seq": items[4]["seq"]})
    elif change == "duplicate":
        _put(seed, {**items[3], "seq": items[2]["seq"]})
    elif change == "garbage":
        _put(seed, {**items[3], "seq": {"S": "three"}})
    else:
        _put(seed, {k: v for k, v in items[3].items() if k != "seq"})
    result = _restore(run, store)
    if result.code:
        one_error(result, 2)
        assert not replacements_of(aws)
        for item in items:
            _put(seed, item)
        _nothing_sent_then_rerun_finishes(aws, seed, run, store, jobs)
    else:
        _inputs_kept(aws, seed, jobs)


@PAGED
@pytest.mark.parametrize("size", ["4", 0, -1, True, 2.5, 10**9, None, [4], 3, 5])
def test_a_header_whose_page_records_is_absent_or_garbage_is_refused_with_one_line(
    seed: Seeder, store: str, run, aws: SimulatedAWS, size: Any
) -> None:
    jobs = _drained(seed, run, store)
    header = _header(seed)
    body = json.loads(header["body"]["S"])
    assert body["page_records"] == PAGE
    body["page_records"] = size
    _put(seed, {**header, "body": {"S": json.dumps(body)}})
    one_error(_restore(run, store), 2)
    assert not replacements_of(aws)
    assert _header(seed)["body"]["S"] == json.dumps(body)  # nothing rewritten
    _put(seed, header)
    _nothing_sent_then_rerun_finishes(aws, seed, run, store, jobs)


@PAGED
def test_a_header_without_page_records_is_read_whole_in_pages_of_the_default_size(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    """Without `page_records` a header reads as one from before pages: records handed out whole, the signature
    checked in pages of the default size (PAGE here, as written): the same manifest, restored once."""
    jobs = _drained(seed, run, store)
    header = _header(seed)
    body = {k: v for k, v in json.loads(header["body"]["S"]).items() if k != "page_records"}
    _put(seed, {**header, "body": {"S": json.dumps(body)}})
    _restored_once(aws, seed, run, store, jobs)


# -- another run saves the manifest while restore reads it ---------------------------------------------------------
def _matrix_legs_sharing_page_0(seed: Seeder, store: str, run, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], Any]:
    """Two legs of one deploy whose records share page 0. Leg 1 restores (its records on page 0 change: a save)
    after leg 0 read the manifest, before leg 0 reads page 0 back to send its jobs. Leg 0's result."""
    seed.definition("proc")
    leg1 = _jobs(seed, "leg-1", 2)
    assert run("drain", "--store", store, "--queue", "leg-1", "--deploy-id", "d1").code == 0
    leg0 = _jobs(seed, "leg-0", 2)
    assert run("drain", "--store", store, "--queue", "leg-0", "--deploy-id", "d1").code == 0
    assert len(records(store, seed, "d1")) == 4  # one page, both legs
    for name, value in MATRIX.items():
        monkeypatch.setenv(name, value)
    whole, other = Manifests.whole, list[subprocess.Popen[str]]()

    def other_leg_first(self: Manifests, manifest: Any, wanted: list[JobRecord]) -> list[JobRecord]:
        if not other:
            other.append(run_process("restore", "--store", store, "--queue", "leg-1", "--deploy-id", "d1"))
            _, err = other[0].communicate(timeout=120)
            assert other[0].returncode == 0, err
        return whole(self, manifest, wanted)

    monkeypatch.setattr(Manifests, "whole", other_leg_first)
    result = run("restore", "--store", store, "--queue", "leg-0", "--deploy-id", "d1")
    monkeypatch.setattr(Manifests, "whole", whole)
    return leg0 + leg1, result


@pytest.mark.slow
@pytest.mark.usefixtures("small_pages")
@pytest.mark.parametrize("store", ["s3", "dynamodb"], indirect=True)
def test_a_matrix_leg_saving_a_shared_page_before_the_other_reads_it_back_is_no_tampering(
    seed: Seeder, store: str, run, aws: SimulatedAWS, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs, result = _matrix_legs_sharing_page_0(seed, store, run, monkeypatch)
    assert result.code == 0, result.err
    _inputs_kept(aws, seed, jobs)


def _saved_behind(seed: Seeder) -> None:
    """A save by another run that lands between restore's reads: the header's version moves on."""
    header = _header(seed)
    _put(seed, {**header, "version": {"N": str(int(header["version"]["N"]) + 1)}})


@PAGED
@pytest.mark.parametrize("where", ["_order", "_items"])
def test_a_save_landing_while_restore_reads_the_manifest_is_read_again(
    seed: Seeder, store: str, run, aws: SimulatedAWS, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    jobs = _drained(seed, run, store)
    real, saves = getattr(DynamoDBStore, where), list[int]()

    def with_a_save(self: DynamoDBStore, *args: Any, **kwargs: Any) -> Any:
        if len(saves) < 3:
            saves.append(1)
            _saved_behind(seed)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(DynamoDBStore, where, with_a_save)
    _restored_once(aws, seed, run, store, jobs)
    assert len(saves) == 3


@PAGED
def test_saves_landing_during_every_read_give_up_with_one_line_and_a_rerun_finishes(
    seed: Seeder, store: str, run, aws: SimulatedAWS, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = _drained(seed, run, store)
    real = DynamoDBStore._order

    def always_a_save(self: DynamoDBStore, *args: Any) -> Any:
        _saved_behind(seed)
        return real(self, *args)

    monkeypatch.setattr(DynamoDBStore, "_order", always_a_save)
    one_error(_restore(run, store), 4, "kept")
    monkeypatch.setattr(DynamoDBStore, "_order", real)
    _nothing_sent_then_rerun_finishes(aws, seed, run, store, jobs)


@PAGED
def test_a_record_gone_between_the_order_and_its_page_with_no_save_is_one_error(
    seed: Seeder, store: str, run, aws: SimulatedAWS, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = _drained(seed, run, store)
    gone = _items(seed)[2]
    real = DynamoDBStore._order

    def dropped_after(self: DynamoDBStore, *args: Any) -> Any:
        order = real(self, *args)
        _delete(seed, gone)
        return order

    monkeypatch.setattr(DynamoDBStore, "_order", dropped_after)
    one_error(_restore(run, store), 2, "gone")
    monkeypatch.setattr(DynamoDBStore, "_order", real)
    _put(seed, gone)
    _nothing_sent_then_rerun_finishes(aws, seed, run, store, jobs)


# -- status and drain read the same way ---------------------------------------------------------------------------
@PAGED
def test_status_and_a_second_drain_of_the_deploy_read_paged_items(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    jobs = _drained(seed, run, store)
    aws.unprocessed = lambda key: hash(key["sk"]["S"]) % 3 == 0 and aws.calls["dynamodb:BatchGetItem"] % 2 == 1
    shown = run("status", "--store", store, "--deploy-id", "d1", "--json")
    assert shown.code == 0, shown.err
    assert all(job in shown.out for job in jobs)
    more = _jobs(seed, "later", 5)
    drained = run("drain", "--store", store, "--queue", "later", "--deploy-id", "d1")
    assert drained.code == 0, drained.err
    assert len(records(store, seed, "d1")) == 15
    _restored_once(aws, seed, run, store, jobs + more)


# -- memory -------------------------------------------------------------------------------------------------------
@pytest.mark.slow
@PAGED
@pytest.mark.parametrize("atomic", [1, 3])
def test_saves_in_small_steps_over_dependents_spread_across_pages_hold_a_bounded_number_of_whole_records(
    seed: Seeder, store: str, run, aws: SimulatedAWS, monkeypatch: pytest.MonkeyPatch, atomic: int
) -> None:
    from .test_elision import _check_restored
    from .test_elision import _drained as _drained_with_dependents

    monkeypatch.setattr(DynamoDBStore, "atomic_records", atomic)
    jobs = _drained_with_dependents(seed, run, store)
    held = whole_records_at_each_submit(monkeypatch)
    restored = _restore(run, store)
    assert restored.code == 0, restored.err
    _check_restored(aws, jobs)
    assert max(held) <= 3 * PAGE, held


# -- kill -9 ------------------------------------------------------------------------------------------------------
RESTORE_IN_STEPS = (
    "import sys; from jobguard.adapters.stores.dynamodb import DynamoDBStore; DynamoDBStore.atomic_records = 3; "
    "from jobguard.cli import main; sys.exit(main(sys.argv[1:]))"
)


@pytest.mark.slow
@PAGED
@pytest.mark.parametrize(
    ("action", "at"),
    [("dynamodb:BatchGetItem", n) for n in (1, 2, 3, 4, 6, 8)] + [("dynamodb:TransactWriteItems", n) for n in (1, 2, 3, 5, 8, 9)],
)
def test_a_restore_killed_at_a_paged_read_or_a_step_is_finished_by_the_next_each_job_once(
    seed: Seeder, store: str, run, aws: SimulatedAWS, action: str, at: int
) -> None:
    """Pages of 4, saves in steps of 3 (a step's transaction half of a page, half of the next): at least 8
    BatchGetItem and 9 TransactWriteItems in all when nothing is killed."""
    jobs = _drained(seed, run, store, 11)
    first = aws.calls[action] + at
    process = subprocess.Popen(
        [sys.executable, "-c", RESTORE_IN_STEPS, "restore", "--store", store, "--deploy-id", "d1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    killed_at_call(aws, process, action, first)
    _restored_once(aws, seed, run, store, jobs)
    _all_resubmitted(seed, store)


@PAGED
def test_places_renumbered_with_gaps_are_refused_before_anything_is_sent(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    """Saves place records at 0, 1, 2, ...: places renumbered by hand would have the next save write its records
    between them, out of the signed order. Refused in one line, nothing sent; once mended, restored once."""
    jobs = _drained(seed, run, store)
    items = _items(seed)
    for item in items:
        _put(seed, {**item, "seq": {"N": str(int(item["seq"]["N"]) * 10 + 7)}})
    one_error(_restore(run, store), 2, "is at place 7 where 0 was due")
    one_error(run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1"), 2, "is at place 7 where 0 was due")
    assert not replacements_of(aws)
    for item in items:
        _put(seed, item)
    _restored_once(aws, seed, run, store, jobs)


@pytest.mark.slow
@PAGED
def test_batch_get_gone_once_jobs_are_sent_stops_restore_in_a_save_and_a_rerun_sends_none_twice(
    seed: Seeder, store: str, run, aws: SimulatedAWS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Saves in steps of one record: the save of `resubmitted` reads its page back (the records let go after the
    `submitting` save); BatchGetItem fails from the first SubmitJob on, so that save stops half way."""
    monkeypatch.setattr(DynamoDBStore, "atomic_records", 1)
    jobs = _drained(seed, run, store)
    sent: list[str] = []
    aws.after = lambda action, count: sent.append(action) if action == "batch:SubmitJob" else None
    aws.fault = lambda action, count: (500, "InternalServerError") if sent and action == "dynamodb:BatchGetItem" else None
    one_error(_restore(run, store), 4, "InternalServerError")
    assert sent and aws.faults["dynamodb:BatchGetItem"]
    aws.fault = aws.after = None
    _nothing_sent_then_rerun_finishes(aws, seed, run, store, jobs, sent=len(replacements_of(aws)))


@PAGED
@pytest.mark.parametrize("fault", ["lost-reply", "drop"])
def test_a_step_whose_reply_is_lost_is_merged_and_each_job_sent_once(
    seed: Seeder, store: str, run, aws: SimulatedAWS, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    monkeypatch.setattr(DynamoDBStore, "atomic_records", 3)
    jobs = _drained(seed, run, store, 11)
    first = aws.calls["dynamodb:TransactWriteItems"]
    aws.fault = lambda action, count: fault if action == "dynamodb:TransactWriteItems" and (count - first) % 3 == 1 else None
    _restored_once(aws, seed, run, store, jobs)
    assert aws.faults["dynamodb:TransactWriteItems"] > 2
    _all_resubmitted(seed, store)


@DYNAMODB
def test_batch_get_reading_one_key_a_call_still_restores(
    seed: Seeder, store: str, run, aws: SimulatedAWS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """retry.attempts is 10 (FAST); pages of 12 records: one BatchGetItem of 12 keys, answered one key a call."""
    monkeypatch.setattr("jobguard.commands.manifests.PAGE_RECORDS", 12)
    jobs = _drained(seed, run, store, 12)
    rank = {item["sk"]["S"]: n for n, item in enumerate(_items(seed))}
    aws.unprocessed = _unprocessed_at_first(rank.__getitem__)  # key n of the page read by the n+1-th call asking for it
    _restored_once(aws, seed, run, store, jobs)


@pytest.mark.slow
@PAGED
@pytest.mark.parametrize("attempt", range(2))
def test_matrix_legs_restoring_at_once_over_small_shared_pages_send_each_job_once(
    seed: Seeder, store: str, run, aws: SimulatedAWS, attempt: int
) -> None:
    """Pages of 4: [leg-0 x4] [leg-0 x2, leg-1 x2] [leg-1 x4], two legs' restores at the same time, each saving in
    steps of 3 (the shared page's records written and read back by both, over and over)."""
    seed.definition("proc")
    jobs = _jobs(seed, "leg-0", 6)
    assert run("drain", "--store", store, "--queue", "leg-0", "--deploy-id", "d1").code == 0
    jobs += _jobs(seed, "leg-1", 6)
    assert run("drain", "--store", store, "--queue", "leg-1", "--deploy-id", "d1").code == 0
    legs = [
        subprocess.Popen(
            [sys.executable, "-c", RESTORE_IN_STEPS, "restore", "--store", store, "--queue", leg, "--deploy-id", "d1"],
            env={**os.environ, **MATRIX},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for leg in ("leg-0", "leg-1")
    ]
    for process in legs:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
    _inputs_kept(aws, seed, jobs)
    _all_resubmitted(seed, store)


@PAGED
def test_a_manifest_signed_whole_before_pages_is_read_in_batches_and_restored_once(
    seed: Seeder, store: str, run, aws: SimulatedAWS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A header without page_records, its signature over the whole document (WHOLE): its records read whole, in
    BatchGetItems of 3 keys here, some keys unprocessed at first; the next save writes it in pages."""
    from jobguard.domain.pages import WHOLE

    from .conftest import load_manifest
    from .hostile import resign, write_document

    jobs = _drained(seed, run, store)
    document = load_manifest(store, seed, "d1")
    document.pop("page_records")
    document["signature"]["algorithm"] = WHOLE
    resign(document, seed)
    write_document(store, seed, "d1", document)
    monkeypatch.setattr("jobguard.adapters.stores.dynamodb.BATCH_KEYS", 3)
    aws.unprocessed = _unprocessed_at_first(1, which=_every_other)
    _restored_once(aws, seed, run, store, jobs)
    assert aws.calls["dynamodb:BatchGetItem"] >= 4
    assert json.loads(_header(seed)["body"]["S"])["page_records"] == PAGE


@PAGED
def test_an_item_edited_by_hand_as_another_run_saves_is_still_refused_before_its_page_is_sent(
    seed: Seeder, store: str, run, aws: SimulatedAWS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The edit hides behind a save (the header's version moves on with it): restore reads the manifest again
    rather than refusing the page outright, and the read again refuses it (the signature)."""
    jobs = _drained(seed, run, store)
    item = _items(seed)[5]  # page 1
    record = json.loads(item["body"]["S"])
    whole, edited = Manifests.whole, list[int]()

    def edited_and_saved(self: Manifests, manifest: Any, wanted: list[JobRecord]) -> list[JobRecord]:
        if any(r.job_id == record["job_id"] for r in wanted) and not edited:
            edited.append(1)
            evil = {**record, "submission": {**record["submission"], "containerOverrides": {"command": ["rm", "-rf", "/"]}}}
            _put(seed, {**item, "body": {"S": json.dumps(evil, sort_keys=True)}})
            _saved_behind(seed)
        return whole(self, manifest, wanted)

    monkeypatch.setattr(Manifests, "whole", edited_and_saved)
    one_error(_restore(run, store), 2, "signature")
    assert edited
    on_page_1 = {json.loads(i["body"]["S"])["job_id"] for i in _items(seed)[4:8]}
    assert not on_page_1 & set(replacements_of(aws))
    assert not [j for j in aws.batch.jobs.values() if "command" in j.request.get("containerOverrides", {})]
    monkeypatch.setattr(Manifests, "whole", whole)
    _put(seed, item)
    _nothing_sent_then_rerun_finishes(aws, seed, run, store, jobs, sent=len(replacements_of(aws)))


@PAGED
@pytest.mark.parametrize("command", ["drain", "status"])
def test_drain_and_status_of_a_deploy_whose_items_cannot_be_read_change_nothing(
    seed: Seeder, store: str, run, aws: SimulatedAWS, command: str
) -> None:
    """BatchGetItem leaves every key unprocessed: a second drain of the deploy stops no job and queues nothing;
    status says so in one line."""
    from .hostile import assert_unchanged, snapshot

    jobs = _drained(seed, run, store)
    more = _jobs(seed, "later", 3)
    before = snapshot(aws, seed, store)
    aws.unprocessed = lambda key: True
    args = ("--queue", "later") if command == "drain" else ()
    one_error(run(command, "--store", store, "--deploy-id", "d1", *args), 4, "unprocessed")
    aws.unprocessed = None
    assert_unchanged(before, aws, seed)
    assert run("drain", "--store", store, "--queue", "later", "--deploy-id", "d1").code == 0
    _nothing_sent_then_rerun_finishes(aws, seed, run, store, jobs + more)
