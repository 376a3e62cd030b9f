"""Every bad input of issue 13, and more: through the CLI, each gets its exit code and exactly one
`error:` line (at most one `hint:`), never a traceback, and changes nothing in Batch or the store.

The world of each case: queue `work`, job `first` and job `second` (PENDING on it), drained into
a folder store as deploy d1. Restoring it would submit `first` in one wave and `second` in the
next: a damaged manifest must be refused before the first wave, so nothing is submitted at all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from jobguard.sim import Seeder, SimulatedAWS, Timing
from jobguard.sim.batch import ClientException

from .conftest import FAST, Hook, Result, load_manifest, merged_config, replacements_of
from .hostile import (
    assert_unchanged,
    aws_store,
    batch_state,
    edit,
    job_named,
    one_error,
    read_document,
    snapshot,
    temp_files,
    world,
    write_document,
)

Json = dict[str, Any]


@dataclass
class World:
    seed: Seeder
    aws: SimulatedAWS
    workdir: Path
    monkeypatch: pytest.MonkeyPatch
    first: str
    second: str

    @property
    def store(self) -> str:
        return f"file://{self.workdir}/m"

    @property
    def folder(self) -> Path:
        return self.workdir / "m"

    @property
    def manifest(self) -> Path:
        return self.folder / "d1.json"

    @property
    def first_page(self) -> Path:
        """The file holding the manifest's first records (its head, d1.json, names its pages)."""
        (found,) = (self.folder / "pages" / "d1").glob("000000-*.json")
        return found

    @property
    def lease(self) -> Path:
        """The lease file of queue `work` (its name also holds the account and region)."""
        (found,) = (self.folder / "leases").glob("*work.json")
        return found

    def file(self, name: str, content: str | bytes) -> str:
        path = self.workdir / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return str(path)

    def config(self, text: str) -> str:
        """A config file holding the fast test settings and `text`; its path."""
        return self.file("custom.yml", merged_config(FAST, text))


@pytest.fixture
def w(seed: Seeder, aws: SimulatedAWS, workdir: Path, monkeypatch: pytest.MonkeyPatch, run) -> World:
    """Two jobs drained into a file store. In the instant world: what is checked here is the refusal
    of bad input, which comes before any waiting; tests/test_real_batch.py covers Batch's timing."""
    aws.reset(Timing.instant())
    first, second = world(seed)
    drained = run("drain", "--store", f"file://{workdir}/m", "--queue", "work", "--deploy-id", "d1")
    assert drained.code == 0, drained.err
    return World(seed, aws, workdir, monkeypatch, first, second)


def test_the_world_restores_when_nothing_is_wrong(w: World, run) -> None:
    """The control: every refusal below is the bad input's doing."""
    result = run("restore", "--store", w.store, "--deploy-id", "d1")
    assert result.code == 0, result.err
    assert set(replacements_of(w.aws)) == {w.first, w.second}


# -- damaged manifests ------------------------------------------------------------------------
def _second(change: Callable[[Json], Any]) -> Callable[[Json], Any]:
    """Change the submission of `second`, whose wave comes after `first`'s."""
    return lambda document: change(job_named(document, "second")["submission"])


def _jobs(change: Callable[[Json], Any]) -> Callable[[Json], Any]:
    return lambda document: [change(job) for job in document["jobs"]]


def _renamed(job: Json) -> None:
    job["job_name"] += "\n"
    job["submission"]["jobName"] = job["job_name"]


def _duplicate(document: Json) -> None:
    document["jobs"].append(dict(document["jobs"][0]))


def _dependencies(count: int) -> Callable[[Json], Any]:
    return _second(lambda s: s.update(dependsOn=[{"jobId": f"job-{i}"} for i in range(count)]))


# (id, change of the parsed document (re-signed with its own key), words of the error line)
DOCUMENT_DAMAGE: list[tuple[str, Callable[[Json], Any], tuple[str, ...]]] = [
    # from the issue
    (
        "environment-as-dict",
        _second(lambda s: s.update(containerOverrides={"environment": {"MODE": "x"}})),
        ("environment", "expected array"),
    ),
    (
        "environment-entry-without-name",
        _second(lambda s: s.update(containerOverrides={"environment": [{"value": "x"}]})),
        ("environment[0]", "name"),
    ),
    ("tags-as-list", _second(lambda s: s.update(tags=["team"])), ("submission.tags", "expected object")),
    ("depends-on-number", _second(lambda s: s.update(dependsOn=[{"jobId": 5}])), ("dependsOn[0].jobId",)),
    ("depends-on-without-job", _second(lambda s: s.update(dependsOn=[{"type": "SEQUENTIAL"}])), ("dependsOn[0]", "jobId")),
    ("depends-on-object", _second(lambda s: s.update(dependsOn={"jobId": "x"})), ("dependsOn", "expected array")),
    ("depends-on-bad-type", _second(lambda s: s.update(dependsOn=[{"jobId": "x", "type": "ALL"}])), ("dependsOn[0].type",)),
    ("schema-version-true", lambda d: d.update(schema_version=True), ("schema_version", "true")),
    ("deploy-id-newline", lambda d: d.update(deploy_id="d1\n"), ("deploy_id",)),
    ("times-wrong-type", _jobs(lambda j: j["times"].update(recorded=5)), ("times.recorded", "expected string")),
    ("times-unknown-outcome", _jobs(lambda j: j["times"].update(exploded="2024-01-01T00:00:00Z")), ("times",)),
    ("times-not-a-date", _jobs(lambda j: j["times"].update(recorded="yesterday")), ("times.recorded", "date-time")),
    ("origin-wrong-type", lambda d: d.update(origin={"repository": 5}), ("origin.repository",)),
    ("origin-a-string", lambda d: d.update(origin="github"), ("origin", "expected object")),
    ("origin-unknown-field", lambda d: d.update(origin={"actor": "x"}), ("origin", "actor")),
    ("origin-run-url-not-https", lambda d: d.update(origin={"run_url": "javascript:alert(1)"}), ("origin.run_url",)),
    ("bad-status", _jobs(lambda j: j.update(status_at_drain="DONE")), ("status_at_drain", "DONE")),
    ("bad-job-type", _jobs(lambda j: j.update(job_type="lambda")), ("job_type", "lambda")),
    ("bad-queue-state", lambda d: d.update(frozen_queues={"work": "ON"}), ("frozen_queues.work", "ON")),
    ("duplicate-job-ids", _duplicate, ("recorded twice",)),
    # more
    ("schema-version-string", lambda d: d.update(schema_version="2"), ("schema_version",)),
    ("schema-version-newer", lambda d: d.update(schema_version=99), ("schema version 99",)),
    ("schema-version-missing", lambda d: d.pop("schema_version"), ("schema_version",)),
    ("job-name-newline", _jobs(_renamed), ("job_name",)),
    ("queue-newline", _jobs(lambda j: j.update(queue="work\n")), ("queue",)),
    ("job-id-path", _jobs(lambda j: j.update(job_id="../../etc/passwd")), ("job_id",)),
    ("bad-outcome", _jobs(lambda j: j.update(outcome="lost")), ("outcome", "lost")),
    ("bad-stage", _jobs(lambda j: j.update(stage="deploy")), ("stage",)),
    ("attempts-true", _jobs(lambda j: j.update(attempts=True)), ("attempts", "expected integer")),
    ("attempts-negative", _jobs(lambda j: j.update(attempts=-1)), ("attempts",)),
    ("created-at-negative", _jobs(lambda j: j.update(created_at=-5)), ("created_at",)),
    ("resubmits-too-many", _jobs(lambda j: j.update(resubmits=10**7)), ("resubmits",)),
    ("array-succeeded-twice", _jobs(lambda j: j.update(array_succeeded=[1, 1])), ("array_succeeded", "unique")),
    ("array-succeeded-out-of-range", _jobs(lambda j: j.update(array_succeeded=[10000])), ("array_succeeded[0]",)),
    ("unknown-field", lambda d: d.update(admin=True), ("unknown field", "admin")),
    ("unknown-job-field", _jobs(lambda j: j.update(command="sh")), ("unknown field", "command")),
    ("jobs-missing", lambda d: d.pop("jobs"), ("jobs",)),
    ("submission-missing", _jobs(lambda j: j.pop("submission")), ("submission",)),
    ("jobs-not-a-list", lambda d: d.update(jobs={}), ("jobs", "expected array")),
    ("account-not-an-account", lambda d: d.update(account="12345"), ("account",)),
    ("region-not-a-region", lambda d: d.update(region="mars"), ("region",)),
    ("arn-of-another-account", _jobs(lambda j: j.update(job_arn=j["job_arn"].replace("123456789012", "999999999999"))), ("ARN",)),
    ("arn-of-another-job", _jobs(lambda j: j.update(job_arn=j["job_arn"][:-4] + "abcd")), ("ARN",)),
    ("submission-renamed", _second(lambda s: s.update(jobName="other")), ("jobName",)),
    ("submission-names-a-queue", _second(lambda s: s.update(jobQueue="admin")), ("jobQueue",)),
    ("submission-names-a-definition", _second(lambda s: s.update(jobDefinition="admin:1")), ("jobDefinition",)),
    ("depends-on-21", _dependencies(21), ("dependsOn", "more than 20")),
    ("tags-51", _second(lambda s: s.update(tags={f"t{i}": "v" for i in range(51)})), ("tags", "more than 50")),
    ("array-of-one", _second(lambda s: s.update(arrayProperties={"size": 1})), ("arrayProperties.size",)),
    (
        "command-as-string",
        _second(lambda s: s.update(containerOverrides={"command": "sh -c 'curl x | sh'"})),
        ("command", "expected array"),
    ),
    ("parameter-number", _second(lambda s: s.update(parameters={"input": 5})), ("parameters.input",)),
    ("priority-a-float", _second(lambda s: s.update(schedulingPriorityOverride=1.5)), ("schedulingPriorityOverride",)),
    ("signature-algorithm", lambda d: d["signature"].update(algorithm="HMAC_SHA_1"), ("signature.algorithm",)),
    ("signature-mac-not-base64", lambda d: d["signature"].update(mac="!" * 44), ("signature.mac",)),
    ("signature-without-key", lambda d: d["signature"].pop("key"), ("signature", "key")),
]

# (id, bytes of the stored manifest, words of the error line)
RAW_DAMAGE: list[tuple[str, Callable[[bytes], bytes], tuple[str, ...]]] = [
    ("200000-deep", lambda _: b"[" * 200_000 + b"]" * 200_000, ("nested too deep",)),
    ("truncated", lambda body: body[: len(body) // 2], ("not valid JSON",)),
    ("empty", lambda _: b"", ("not valid JSON",)),
    ("not-utf8", lambda body: b"\xff\xfe" + body, ("not UTF-8",)),
    ("byte-order-mark", lambda body: "\ufeff".encode() + body, ("not valid JSON",)),
    ("nan", lambda body: body.replace(b'"attempts": 0', b'"attempts": NaN', 1), ("NaN",)),
    ("infinity", lambda body: body.replace(b'"attempts": 0', b'"attempts": -Infinity', 1), ("Infinity",)),
    ("overflowing-number", lambda body: body.replace(b'"attempts": 0', b'"attempts": 1e400', 1), ("attempts", "expected integer")),
    ("a-list", lambda _: b"[]", ("expected object",)),
    ("null", lambda _: b"null", ("expected object",)),
    ("a-string", lambda _: b'"manifest"', ("expected object",)),
]


def _refused_everywhere(w: World, run, *words: str) -> None:
    """restore (of everything and by name), status and drain all refuse the damaged manifest, changing nothing."""
    before = snapshot(w.aws, w.seed, w.store)
    commands = [
        ["restore", "--store", w.store],
        ["restore", "--store", w.store, "--deploy-id", "d1"],
        ["status", "--store", w.store, "--deploy-id", "d1"],
        ["drain", "--store", w.store, "--queue", "work", "--deploy-id", "d1"],
        ["drain", "--store", w.store, "--queue", "work", "--deploy-id", "d2"],  # another deploy: d1's jobs' owner is unknown
    ]
    for args in commands:
        one_error(run(*args), 2, str(w.manifest), *words)
        assert_unchanged(before, w.aws, w.seed)
    assert replacements_of(w.aws) == {}


@pytest.mark.slow  # every damage (55) against every command (5)
@pytest.mark.parametrize(("change", "words"), [pytest.param(c, words, id=i) for i, c, words in DOCUMENT_DAMAGE])
def test_damaged_manifest(w: World, run, change, words) -> None:
    """Signed again with its own key, so only the checks can tell: refused before the first wave."""
    edit(w.store, w.seed, "d1", change)
    _refused_everywhere(w, run, *words)


@pytest.mark.parametrize(("damage", "words"), [pytest.param(d, words, id=i) for i, d, words in RAW_DAMAGE])
def test_unreadable_manifest(w: World, run, damage, words) -> None:
    # a damage to a record (it leaves the head as it is) goes to the page that holds the record
    target = w.manifest if damage(w.manifest.read_bytes()) != w.manifest.read_bytes() else w.first_page
    target.write_bytes(damage(target.read_bytes()))
    _refused_everywhere(w, run, *words)


@pytest.mark.parametrize("store", ["s3", "dynamodb"])
@pytest.mark.parametrize(
    ("damage", "words"),
    [
        pytest.param(lambda doc: (None, b'{"schema_version": 2, "dep'), ("not valid JSON",), id="truncated"),
        pytest.param(lambda doc: (None, b"[]"), ("expected object", "object"), id="not-an-object"),
        pytest.param(lambda doc: ({**doc, "jobs": [{**doc["jobs"][0], "attempts": "many"}]}, None), ("attempts",), id="bad-record"),
    ],
)
def test_damaged_manifest_in_aws_stores(seed: Seeder, aws: SimulatedAWS, workdir: Path, run, store: str, damage, words) -> None:
    world(seed)
    store = aws_store(seed, workdir, store)
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    document, raw = damage(read_document(store, seed, "d1"))
    write_document(store, seed, "d1", document, raw)
    before = snapshot(aws, seed, store)
    for args in (["restore", "--store", store], ["restore", "--store", store, "--deploy-id", "d1"]):
        line = one_error(run(*args), 2, "d1")
        assert any(word in line for word in words), line
        assert_unchanged(before, aws, seed)


# -- flags, settings, files and the environment ------------------------------------------------
@dataclass(frozen=True)
class Case:
    prepare: Callable[[World], list[str]]  # sets the bad input up; the command line to run
    code: int
    words: tuple[str, ...]


CASES: dict[str, Case] = {}


def case(code: int, *words: str) -> Callable[[Callable[[World], list[str]]], Callable[[World], list[str]]]:
    def register(prepare: Callable[[World], list[str]]) -> Callable[[World], list[str]]:
        CASES[prepare.__name__.replace("_", "-")] = Case(prepare, code, words)
        return prepare

    return register


def _drain(w: World, *extra: str) -> list[str]:
    return ["drain", "--store", w.store, "--queue", "work", "--deploy-id", "d2", *extra]


def _restore(w: World, *extra: str) -> list[str]:
    return ["restore", "--store", w.store, *extra]


def _with_config(text: str, command: Callable[[World], list[str]] = _drain) -> Callable[[World], list[str]]:
    return lambda w: [*command(w), "--config", w.config(text)]


def _plan(body: Any) -> Callable[[World], list[str]]:
    def prepare(w: World) -> list[str]:
        text = body if isinstance(body, (str, bytes)) else json.dumps(body)
        return _drain(w, "--plan", w.file("plan.json", text))

    return prepare


def _change(actions: list[str], before: Any, after: Any = None) -> Json:
    return {
        "format_version": "1.2",
        "resource_changes": [
            {
                "address": "aws_batch_job_queue.work",
                "type": "aws_batch_job_queue",
                "change": {"actions": actions, "before": before, "after": after},
            }
        ],
    }


# The inputs ---------------------------------------------------------------------------
@case(2, "custom.yml", "not UTF-8")
def binary_config_file(w: World) -> list[str]:
    return ["status", "--store", w.store, "--config", w.file("custom.yml", bytes(range(128, 256)) * 8)]


@case(2, "custom.yml")
def config_file_with_nul_bytes(w: World) -> list[str]:
    return ["status", "--store", w.store, "--config", w.file("custom.yml", b"store: file://x\x00\x01\x02\n")]


@case(2, "profile", "nope")
def missing_aws_profile(w: World) -> list[str]:
    w.monkeypatch.setenv("AWS_PROFILE", "nope")
    w.monkeypatch.setenv("AWS_CONFIG_FILE", w.file("aws-config", "[profile other]\nregion = us-east-1\n"))
    return ["status", "--store", w.store]


@case(2, "AWS configuration")
def malformed_aws_config_file(w: World) -> list[str]:
    w.monkeypatch.delenv("AWS_REGION")
    w.monkeypatch.delenv("AWS_DEFAULT_REGION")
    w.monkeypatch.setenv("AWS_CONFIG_FILE", w.file("aws-config", "[default\nregion = us-east-1\n = =\n"))
    return ["status", "--store", w.store]


@case(2, "AWS configuration")
def malformed_aws_config_file_of_the_profile(w: World) -> list[str]:
    w.monkeypatch.setenv("AWS_PROFILE", "work")
    w.monkeypatch.setenv("AWS_CONFIG_FILE", w.file("aws-config", "[profile work\nregion = us-east-1\n"))
    return ["status", "--store", w.store]


@case(2, "--interval", "-1")
def watch_with_negative_interval(w: World) -> list[str]:
    return ["status", "--store", w.store, "--watch", "--interval", "-1"]


@case(2, "plan.json", "before", "expected an object")
def plan_whose_before_is_a_string(w: World) -> list[str]:
    return _plan(_change(["delete"], "work"))(w)


@case(2, "leases", "work.json", "not a regular file")
def lease_file_that_is_a_folder(w: World) -> list[str]:
    lease = w.lease
    lease.unlink()
    lease.mkdir()
    return _drain(w)


@case(2, "leases", "work.json", "not a regular file")
def lease_file_that_is_a_folder_at_restore(w: World) -> list[str]:
    lease_file_that_is_a_folder(w)
    return _restore(w)


@case(2, "Bad_Bucket", "not a valid S3 bucket name")
def bad_bucket_name(w: World) -> list[str]:
    return ["restore", "--store", "s3://Bad_Bucket/deploys"]


@case(2, "longer than 1024")
def store_path_of_5000_characters(w: World) -> list[str]:
    return ["restore", "--store", "file://" + "a" * 5000]


@case(2, "--deploy-id", "control characters")
def deploy_id_with_newline(w: World) -> list[str]:
    return [*_drain(w)[:-1], "abc\n"]


@case(2, "deploy-id", "control characters")
def deploy_id_with_newline_in_config(w: World) -> list[str]:
    return ["drain", "--store", w.store, "--queue", "work", "--config", w.config('deploy-id: "abc\\n"\n')]


@case(2, "GITHUB_RUN_ID")
def run_id_with_newline(w: World) -> list[str]:
    w.monkeypatch.setenv("GITHUB_ACTIONS", "true")
    w.monkeypatch.setenv("GITHUB_RUN_ID", "abc\n")
    return ["drain", "--store", w.store, "--queue", "work"]


@case(2, "--deploy-id", "non-empty")
def empty_deploy_id(w: World) -> list[str]:
    return ["restore", "--store", w.store, "--deploy-id", ""]


@case(2, "deploy-id", "non-empty")
def null_deploy_id_in_config(w: World) -> list[str]:
    return ["restore", "--store", w.store, "--config", w.config("deploy-id:\n")]


@case(2, "name a folder")
def store_file_without_path(w: World) -> list[str]:
    return ["restore", "--store", "file://"]


@case(2, "name a folder")
def store_file_root(w: World) -> list[str]:
    return ["restore", "--store", "file:///"]


@case(2, "--grace")
def grace_nan(w: World) -> list[str]:
    return _drain(w, "--grace", "nan")


@case(2, "grace")
def grace_nan_in_config(w: World) -> list[str]:
    return _with_config("grace: .nan\n")(w)


@case(2, "grace")
def grace_infinite_in_config(w: World) -> list[str]:
    return _with_config("grace: .inf\n")(w)


@case(2, "rate")
def rate_infinite(w: World) -> list[str]:
    return _with_config("rate: .inf\n")(w)


@case(2, "rate")
def rate_nan(w: World) -> list[str]:
    return _with_config("rate: .nan\n")(w)


@case(2, "--lock-timeout")
def lock_timeout_infinite(w: World) -> list[str]:
    return _drain(w, "--lock-timeout", "inf")


@case(2, "--lock-timeout")
def lock_timeout_nan(w: World) -> list[str]:
    return _drain(w, "--lock-timeout", "nan")


@case(2, "lock-timeout")
def lock_timeout_infinite_in_config(w: World) -> list[str]:
    return _with_config("lock-timeout: .inf\n")(w)


# More: the command line ------------------------------------------------------------------------
@case(2, "unrecognized arguments", "--queues")
def unknown_flag(w: World) -> list[str]:
    return ["drain", "--store", w.store, "--queues", "work"]


@case(2, "required")
def no_command(w: World) -> list[str]:
    return []


@case(2, "invalid choice")
def unknown_command(w: World) -> list[str]:
    return ["undo"]


@case(2, "--job-definition", "latest, recorded")
def job_definition_choice(w: World) -> list[str]:
    return _restore(w, "--job-definition", "newest")


@case(2, "--queue", "not a job queue name")
def queue_name_with_a_shell_command(w: World) -> list[str]:
    return ["drain", "--store", w.store, "--queue", "work;rm -rf /", "--deploy-id", "d2"]


@case(2, "--queue", "not a job queue name")
def restore_queue_name_with_spaces(w: World) -> list[str]:
    return _restore(w, "--queue", "my queue")


@case(2, "drain", "--queue")
def drain_without_queues(w: World) -> list[str]:
    return ["drain", "--store", w.store, "--deploy-id", "d2"]


@case(2, "queue nowhere", "does not exist")
def drain_of_a_queue_that_does_not_exist(w: World) -> list[str]:
    return ["drain", "--store", w.store, "--queue", "nowhere", "--deploy-id", "d2"]


@case(2, "deploy id", "../../etc/passwd")
def deploy_id_with_a_path(w: World) -> list[str]:
    return [*_drain(w)[:-1], "../../etc/passwd"]


@case(2, "deploy id", "1-128")
def deploy_id_of_129_characters(w: World) -> list[str]:
    return [*_drain(w)[:-1], "d" * 129]


@case(2, "deploy id", "1-128")
def deploy_id_not_ascii(w: World) -> list[str]:
    return _restore(w, "--deploy-id", "déploiement")


@case(2, "GITHUB_RUN_ID")
def run_id_with_a_path(w: World) -> list[str]:
    w.monkeypatch.setenv("GITHUB_ACTIONS", "true")
    w.monkeypatch.setenv("GITHUB_RUN_ID", "../../etc/passwd")
    return ["drain", "--store", w.store, "--queue", "work"]


@case(2, "GITHUB_RUN_ID (environment)", "non-empty")
def run_id_empty_at_restore(w: World) -> list[str]:
    """Not "no run id": restore would take every open deploy, drain would make up a new one."""
    w.monkeypatch.setenv("GITHUB_ACTIONS", "true")
    w.monkeypatch.setenv("GITHUB_RUN_ID", "")
    return ["restore", "--store", w.store]


@case(2, "GITHUB_RUN_ID")
def run_id_with_a_path_at_status(w: World) -> list[str]:
    run_id_with_a_path(w)
    return ["status", "--store", w.store]


@case(2, "no manifest for deploy nope")
def restore_of_an_unknown_deploy(w: World) -> list[str]:
    return _restore(w, "--deploy-id", "nope")


@case(2, "no manifest for deploy nope")
def status_of_an_unknown_deploy(w: World) -> list[str]:
    return ["status", "--store", w.store, "--deploy-id", "nope"]


@case(2, "unknown scheme ftp://")
def store_of_unknown_scheme(w: World) -> list[str]:
    return [*_restore(w)[:2], "ftp://somewhere"]


@case(2, "DynamoDB store is a table")
def dynamodb_table_too_short(w: World) -> list[str]:
    return ["restore", "--store", "dynamodb://ab"]


@case(2, "DynamoDB store is a table")
def dynamodb_table_with_a_path(w: World) -> list[str]:
    return ["restore", "--store", "dynamodb://table/deploys"]


@case(2, "s3://BUCKET/PREFIX")
def s3_store_with_a_query(w: World) -> list[str]:
    return ["restore", "--store", "s3://bucket/deploys?versionId=1"]


@case(2, "--store", "control characters")
def store_with_an_escape_sequence(w: World) -> list[str]:
    return ["restore", "--store", f"{w.store}\x1b[2J"]


@case(2, "--grace", "duration")
def grace_in_days(w: World) -> list[str]:
    return _drain(w, "--grace", "2d")


@case(2, "--grace", "at most")
def grace_of_a_century(w: World) -> list[str]:
    return _drain(w, "--grace", "876000h")


@case(2, "--stop-timeout")
def stop_timeout_overflowing(w: World) -> list[str]:
    return _drain(w, "--stop-timeout", "1e400")


@case(2, "--interval", "at least 0.1")
def watch_interval_zero(w: World) -> list[str]:
    return ["status", "--store", w.store, "--watch", "--interval", "0"]


@case(2, "--interval", "at least 0.1")
def watch_interval_a_busy_loop(w: World) -> list[str]:
    return ["status", "--store", w.store, "--watch", "--interval", "0.0000001"]


@case(2, "lookup-window", "at least 1")
def config_lookup_window_zero(w: World) -> list[str]:
    return _with_config("lookup-window: 0\n", _restore)(w)  # no time for ListJobs to show a job SubmitJob made


@case(2, "--timeout")
def watch_timeout_negative(w: World) -> list[str]:
    return ["status", "--store", w.store, "--watch", "--timeout=-5"]


@case(2, "--lock-timeout", "expected a number")
def lock_timeout_a_word(w: World) -> list[str]:
    return _drain(w, "--lock-timeout", "forever")


@case(2, "--event-bus", "EventBridge bus")
def event_bus_name(w: World) -> list[str]:
    return _drain(w, "--event-bus", "bus name!")


@case(2, "--events-file", "non-empty")
def events_file_empty(w: World) -> list[str]:
    return _drain(w, "--events-file", "")


@case(2, "--signing-key", "kms:KEY_ID_OR_ARN or file:PATH")
def signing_key_of_unknown_kind(w: World) -> list[str]:
    return _restore(w, "--signing-key", "gpg:0xDEADBEEF")


@case(2, "no such signing key")
def signing_key_file_missing(w: World) -> list[str]:
    return _restore(w, "--signing-key", f"file:{w.workdir}/nowhere.key")


@case(2, "not a jobguard signing key")
def signing_key_file_not_base64(w: World) -> list[str]:
    return _restore(w, "--signing-key", "file:" + w.file("bad.key", "this is not a key!\n"))


@case(2, "shorter than 32 bytes")
def signing_key_file_too_short(w: World) -> list[str]:
    return _restore(w, "--signing-key", "file:" + w.file("short.key", "c2hvcnQ=\n"))


@case(2, "not a regular file")
def signing_key_file_a_folder(w: World) -> list[str]:
    (w.workdir / "key-folder").mkdir()
    return _restore(w, "--signing-key", f"file:{w.workdir}/key-folder")


@case(2, "--notify", "not shown")
def notify_target_without_host(w: World) -> list[str]:
    return _drain(w, "--notify", "https://user:s3cr3t-t0ken@/hooks/x")


@case(2, "--notify", "not shown")
def notify_target_broken_ipv6(w: World) -> list[str]:
    return _drain(w, "--notify", "https://[::1/hooks/s3cr3t-t0ken")


@case(2, "--notify", "not shown")
def notify_target_bad_port(w: World) -> list[str]:
    return _drain(w, "--notify", "https://hooks.example.com:99999/s3cr3t-t0ken")


@case(2, "--notify", "not shown")
def notify_target_of_unknown_kind(w: World) -> list[str]:
    return _drain(w, "--notify", "mailto:ops@example.com?token=s3cr3t-t0ken")


@case(2, "--notify", "not shown")
def notify_sns_arn_of_bad_account(w: World) -> list[str]:
    return _drain(w, "--notify", "sns:arn:aws:sns:us-east-1:1234:s3cr3t-t0ken")


# More: the config file ----------------------------------------------------------------------------
@case(2, "unknown key 'queue'", "did you mean 'queues'")
def config_unknown_key(w: World) -> list[str]:
    return _with_config("queue: work\n")(w)


@case(2, "unknown key None")
def config_null_key(w: World) -> list[str]:
    return _with_config("~: work\n")(w)


@case(2, "mapping")
def config_a_list(w: World) -> list[str]:
    return _drain(w, "--config", w.file("custom.yml", "- store: file://x\n"))


@case(2, "invalid YAML", "line")
def config_invalid_yaml(w: World) -> list[str]:
    return _drain(w, "--config", w.file("custom.yml", "queues: [a\n  b: c\n"))


@case(2, "retry", "mapping")
def config_retry_not_a_mapping(w: World) -> list[str]:
    return _with_config("retry: 5\n")(w)


@case(2, "retry.attempts", "at least 1")
def config_retry_zero_attempts(w: World) -> list[str]:
    return _drain(w, "--config", w.file("custom.yml", "retry:\n  attempts: 0\n"))


@case(2, "retry.max-wait")
def config_retry_waits_reversed(w: World) -> list[str]:
    return _drain(w, "--config", w.file("custom.yml", "retry:\n  initial-wait: 5\n  max-wait: 1\n"))


@case(2, "lease-ttl", "lock-ttl")
def config_lease_shorter_than_hold(w: World) -> list[str]:
    return _with_config("lease-ttl: 1\n")(w)


@case(2, "custom.yml: line 3", "key 'grace' given twice")
def config_key_given_twice(w: World) -> list[str]:
    return _drain(w, "--config", w.file("custom.yml", "grace: 10m\nqueues: [work]\ngrace: 0s\n"))


@case(2, "custom.yml", "key 'attempts' given twice")
def config_retry_key_given_twice(w: World) -> list[str]:
    return _drain(w, "--config", w.file("custom.yml", "retry:\n  attempts: 3\n  attempts: 1\n"))


@case(2, "lock-ttl", "at least 1")
def config_lock_ttl_a_busy_heartbeat(w: World) -> list[str]:
    return _with_config("lock-ttl: 0.000001\n")(w)


@case(2, "workers", "integer")
def config_workers_fraction(w: World) -> list[str]:
    return _with_config("workers: 1.5\n")(w)


@case(2, "max-resubmits", "integer")
def config_max_resubmits_true(w: World) -> list[str]:
    return _with_config("max-resubmits: true\n")(w)


@case(2, "unsigned", "true or false")
def config_unsigned_maybe(w: World) -> list[str]:
    return _with_config("unsigned: maybe\n")(w)


@case(2, "queues", "expected a list")
def config_queues_a_mapping(w: World) -> list[str]:
    return _with_config("queues: {work: yes}\n")(w)


@case(2, "queues[0]", "control characters")
def config_queue_with_newline(w: World) -> list[str]:
    return _with_config('queues: ["work\\n"]\n')(w)


@case(2, "policies[0].action", "nuke")
def config_policy_action(w: World) -> list[str]:
    return _with_config("policies:\n  - action: nuke\n    queue: work\n")(w)


@case(2, "arrays", "whole, unfinished")
def config_arrays_choice(w: World) -> list[str]:
    return _with_config("arrays: some\n")(w)


@case(2, "store", "unknown scheme")
def config_store_a_number(w: World) -> list[str]:
    return ["status", "--config", w.config("store: 5\n")]


@case(2, "queues[0]", "expected a non-empty string")
def config_billion_laughs(w: World) -> list[str]:
    """Nine levels of nine aliases: shown whole, the first queue would be 9**9 strings."""
    levels = ["&a [x, x, x, x, x, x, x, x, x]"]
    levels += [f"&{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(8)]
    return _drain(w, "--config", w.file("custom.yml", f"queues: [[{', '.join(levels)}]]\n"))


@case(2, "custom.yml")
def config_nested_too_deep(w: World) -> list[str]:
    return _drain(w, "--config", w.file("custom.yml", "queues: " + "[" * 100_000 + "]" * 100_000 + "\n"))


@case(2, "bigger than")
def config_bigger_than_a_mebibyte(w: World) -> list[str]:
    return _drain(w, "--config", w.file("custom.yml", "# padding\n" * 120_000))


@case(2, "not a regular file")
def config_a_folder(w: World) -> list[str]:
    (w.workdir / "folder.yml").mkdir()
    return _drain(w, "--config", str(w.workdir / "folder.yml"))


@case(2, "/dev/zero", "not a regular file")
def config_an_endless_device(w: World) -> list[str]:
    return _drain(w, "--config", "/dev/zero")


@case(2, "nowhere.yml")
def config_missing(w: World) -> list[str]:
    return _drain(w, "--config", str(w.workdir / "nowhere.yml"))


# More: the plan ----------------------------------------------------------------------------------
@case(2, "plan.json", "cannot read the plan")
def plan_missing(w: World) -> list[str]:
    return _drain(w, "--plan", str(w.workdir / "plan.json"))


@case(2, "plan.json", "not valid JSON")
def plan_not_json(w: World) -> list[str]:
    return _plan("Terraform will perform the following actions:\n")(w)


@case(2, "plan.json", "format_version")
def plan_not_a_plan(w: World) -> list[str]:
    return _plan({"resources": []})(w)


@case(2, "resource_changes", "expected a list")
def plan_changes_not_a_list(w: World) -> list[str]:
    return _plan({"format_version": "1.2", "resource_changes": {"a": 1}})(w)


@case(2, "resource_changes[0].change.before.name", "job queue's name")
def plan_queue_name_a_number(w: World) -> list[str]:
    return _plan(_change(["delete", "create"], {"name": 5}, {"name": 5}))(w)


@case(2, "resource_changes[0].change.before.compute_resources", "list or null")
def plan_compute_resources_not_a_list(w: World) -> list[str]:
    environment = {"arn": "arn:aws:batch:us-east-1:123456789012:compute-environment/ce", "compute_resources": "c5.large"}
    change = {"actions": ["update"], "before": environment, "after": {**environment, "compute_resources": []}}
    entry = {"address": "aws_batch_compute_environment.ce", "type": "aws_batch_compute_environment", "change": change}
    return _plan({"format_version": "1.2", "resource_changes": [entry]})(w)


@case(2, "--notify", "http:// only to localhost")
def notify_plain_http_elsewhere(w: World) -> list[str]:
    return _drain(w, "--notify", "http://hooks.example.com/services/s3cr3t-t0ken")


@case(2, "change.actions", "list of strings")
def plan_actions_not_a_list(w: World) -> list[str]:
    return _plan(_change("delete", {"name": "work"}))(w)  # type: ignore[arg-type]


@case(2, "plan.json", "nested too deep")
def plan_nested_too_deep(w: World) -> list[str]:
    return _plan(b'{"format_version": "1.2", "x": ' + b"[" * 200_000 + b"]" * 200_000 + b"}")(w)


@case(2, "not a regular file")
def plan_a_folder(w: World) -> list[str]:
    (w.workdir / "plan.json").mkdir()
    return _drain(w, "--plan", str(w.workdir / "plan.json"))


@case(2, "/dev/zero", "not a regular file")
def plan_an_endless_device(w: World) -> list[str]:
    return _drain(w, "--plan", "/dev/zero")


# More: the environment ------------------------------------------------------------------------------
@case(2, "region")
def region_not_a_region(w: World) -> list[str]:
    w.monkeypatch.setenv("AWS_REGION", "mars/../../x")
    return ["status", "--store", w.store]


@case(2, "no AWS credentials found")
def no_credentials(w: World) -> list[str]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        w.monkeypatch.delenv(name)
    w.monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(w.workdir / "none"))
    w.monkeypatch.setenv("AWS_CONFIG_FILE", str(w.workdir / "none"))
    w.monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return ["status", "--store", w.store]


@case(4, "cannot reach AWS")
def aws_unreachable(w: World) -> list[str]:
    w.monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    return _drain(w)


@case(2, "Invalid endpoint")
def aws_endpoint_not_a_url(w: World) -> list[str]:
    w.monkeypatch.setenv("AWS_ENDPOINT_URL", "not a url")
    return ["status", "--store", w.store]


@case(2, "IPv6")
def aws_endpoint_broken_ipv6(w: World) -> list[str]:
    w.monkeypatch.setenv("AWS_ENDPOINT_URL", "http://[::1")
    return ["status", "--store", w.store]


@case(2, "Port out of range")
def aws_endpoint_port_out_of_range(w: World) -> list[str]:
    w.monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:99999")
    return ["status", "--store", w.store]


@case(2, "region", "not a region name")
def region_with_newline(w: World) -> list[str]:
    w.monkeypatch.setenv("AWS_REGION", "us-east-1\n")
    return ["status", "--store", w.store]


@case(2, "sts client", "bogus")
def sts_endpoints_option(w: World) -> list[str]:
    w.monkeypatch.setenv("AWS_STS_REGIONAL_ENDPOINTS", "bogus")
    return ["status", "--store", w.store]


@case(4, "signing key")
def config_home_a_file(w: World) -> list[str]:
    w.monkeypatch.setenv("XDG_CONFIG_HOME", w.file("not-a-folder", "x"))
    return ["drain", "--store", f"file://{w.workdir}/other", "--queue", "work", "--deploy-id", "d2"]


@case(4, "cannot list")
def store_a_regular_file(w: World) -> list[str]:
    return ["restore", "--store", "file://" + w.file("store-file", "{}")]


@case(4, "File name too long")
def store_folder_name_too_long(w: World) -> list[str]:
    return ["drain", "--store", f"file://{w.workdir}/{'x' * 300}", "--queue", "work", "--deploy-id", "d2"]


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(w: World, run, name: str) -> None:
    bad = CASES[name]
    args = bad.prepare(w)
    before = snapshot(w.aws, w.seed, w.store)
    one_error(run(*args), bad.code, *bad.words)
    assert_unchanged(before, w.aws, w.seed)
    assert not (w.workdir / "etc").exists()


def test_secrets_of_bad_notify_targets_are_not_echoed(w: World, run) -> None:
    for name in [n for n in CASES if "notify" in n]:
        result = run(*CASES[name].prepare(w))
        assert "s3cr3t" not in result.out + result.err, name


# -- the store fails under jobguard ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("store", "action", "command"),
    [
        ("s3", "s3:ListBucket", "restore"),  # the S3 list
        ("s3", "s3:PutObject", "drain"),  # the lease put (the first write of a drain)
        ("dynamodb", "dynamodb:PutItem", "drain"),  # the lease put
        ("s3", "s3:GetObject", "restore"),
        ("dynamodb", "dynamodb:Query", "restore"),
        ("dynamodb", "dynamodb:BatchGetItem", "restore"),
        ("dynamodb", "dynamodb:GetItem", "status"),
        ("s3", "kms:VerifyMac", "restore"),
        ("dynamodb", "kms:GenerateMac", "drain"),
        ("s3", "sts:GetCallerIdentity", "status"),
    ],
)
def test_store_connection_dropped(seed: Seeder, aws: SimulatedAWS, workdir: Path, run, store: str, action: str, command: str) -> None:
    world(seed)
    store = aws_store(seed, workdir, store)
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    before = snapshot(aws, seed, store)
    aws.fault = lambda called, n: "drop" if called == action else None
    args = {
        "drain": ["drain", "--store", store, "--queue", "work", "--deploy-id", "d1"],
        "restore": ["restore", "--store", store],
        "status": ["status", "--store", store, "--deploy-id", "d1"],
    }[command]
    one_error(run(*args), 4, "cannot reach AWS")
    aws.fault = None
    assert_unchanged(before, aws, seed)


@pytest.mark.parametrize(("store", "action"), [("s3", "s3:DeleteObject"), ("dynamodb", "dynamodb:DeleteItem")])
def test_lease_delete_dropped_after_the_work_is_done(seed: Seeder, aws: SimulatedAWS, workdir: Path, run, store: str, action: str) -> None:
    """The lease delete, restore's last step, fails after its retries. The work is done, but the queue
    would stay held for lease-ttl: restore exits 4 with one line naming the queue and the command that
    releases it; that command (the next restore of the deploy) releases it and sends nothing twice."""
    first, second = world(seed)
    store = aws_store(seed, workdir, store)
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    aws.fault = lambda called, n: "drop" if called == action else None
    result = run("restore", "--store", store, "--deploy-id", "d1")
    aws.fault = None
    assert "Traceback" not in result.out + result.err
    assert result.code == 4, result.err
    errors = [line for line in result.err.splitlines() if line.startswith("error:")]
    assert errors == ["error: queue work: could not release deploy d1's lease; it blocks the next deploy's drain until released"]
    assert f"hint: run `jobguard restore --store {store} --deploy-id d1`" in result.err
    assert {k: len(v) for k, v in replacements_of(aws).items()} == {first: 1, second: 1}
    again = run("restore", "--store", store, "--deploy-id", "d1")  # the command the hint names
    assert again.code == 0, again.err
    assert {k: len(v) for k, v in replacements_of(aws).items()} == {first: 1, second: 1}
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d2", "--lock-timeout", "1").code == 0  # released


# -- outputs that cannot be written after the work is done -----------------------------------------------
@pytest.mark.parametrize("broken", ["GITHUB_STEP_SUMMARY", "GITHUB_OUTPUT"])
@pytest.mark.parametrize("how", ["missing-folder", "a-folder", "read-only-file"])
def test_unwritable_github_file_after_the_work(
    seed: Seeder, aws: SimulatedAWS, workdir: Path, run, monkeypatch: pytest.MonkeyPatch, webhook: str, broken: str, how: str
) -> None:
    first, second = world(seed)
    files = {"GITHUB_STEP_SUMMARY": workdir / "summary.md", "GITHUB_OUTPUT": workdir / "output.txt"}
    for path in files.values():
        path.write_text("")
    target = files[broken]
    if how == "missing-folder":
        target = workdir / "gone" / target.name
    elif how == "a-folder":
        target.unlink()
        target.mkdir()
    else:
        target.chmod(0o444)
        monkeypatch.setattr("builtins.open", _read_only(str(target)))  # root writes read-only files: refuse as the OS would
    files[broken] = target
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_RUN_ID", "4242")
    for name, path in files.items():
        monkeypatch.setenv(name, str(path))
    store = f"file://{workdir}/m"
    for command in ("drain", "restore"):
        args = [command, "--store", store, "--notify", webhook] + (["--queue", "work"] if command == "drain" else [])
        result = run(*args)
        assert result.code == 0, result.err
        assert "Traceback" not in result.out + result.err
        warnings = [line for line in result.err.splitlines() if line.startswith("::warning::")]
        assert len(warnings) == 1 and "the work itself is done" in warnings[0], result.err
        assert not [line for line in result.err.splitlines() if line.startswith("::error::")]
    assert {k: len(v) for k, v in replacements_of(aws).items()} == {first: 1, second: 1}
    assert len(Hook.received) == 2  # both notifications delivered
    other = next(p for n, p in files.items() if n != broken)
    text = other.read_text()
    assert ("deploy-id<<" in text and "4242" in text) if broken == "GITHUB_STEP_SUMMARY" else "jobguard restore" in text


def _read_only(path: str) -> Callable[..., Any]:
    real = open

    def guarded(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if str(file) == path and any(m in mode for m in "wax+"):
            raise PermissionError(13, "Permission denied", path)
        return real(file, mode, *args, **kwargs)

    return guarded


# -- FIFOs never hang a run ---------------------------------------------------------------------------------
def _fifo(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    os.mkfifo(path)
    return str(path)


FIFOS: dict[str, tuple[Callable[[World], list[str]], int, tuple[str, ...]]] = {
    "manifest": (lambda w: [*_restore(w), "--deploy-id", "d1"] if _fifo(w.manifest) else [], 2, ("d1.json", "not a regular file")),
    "index-entry": (lambda w: _restore(w) if _fifo(w.folder / "open" / "x.json") else [], 2, ("x.json", "not a regular file")),
    "lease": (lambda w: _drain(w) if _fifo(w.lease) else [], 2, ("work.json", "not a regular file")),
    "config": (lambda w: _drain(w, "--config", _fifo(w.workdir / "fifo.yml")), 2, ("fifo.yml", "not a regular file")),
    "plan": (lambda w: _drain(w, "--plan", _fifo(w.workdir / "plan.json")), 2, ("plan.json", "not a regular file")),
    "signing-key": (lambda w: _restore(w, "--signing-key", "file:" + _fifo(w.workdir / "fifo.key")), 2, ("fifo.key", "not a regular file")),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", list(FIFOS))
def test_fifo_is_refused_not_read(w: World, run, name: str) -> None:
    prepare, code, words = FIFOS[name]
    args = prepare(w)
    before = snapshot(w.aws, w.seed, w.store)
    one_error(run(*args), code, *words)
    assert_unchanged(before, w.aws, w.seed)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ["GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY", "events-file"])
def test_fifo_output_is_a_warning_not_a_hang(w: World, run, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    extra: list[str] = []
    if name == "events-file":
        extra = ["--events-file", _fifo(w.workdir / "events.fifo")]
    else:
        monkeypatch.setenv(name, _fifo(w.workdir / "github.fifo"))
    result = run("restore", "--store", w.store, "--deploy-id", "d1", *extra)
    assert result.code == 0, result.err
    assert len([line for line in result.err.splitlines() if line.startswith("::warning::")]) == 1, result.err
    assert set(replacements_of(w.aws)) == {w.first, w.second}


# -- a full disk, an unreadable folder, AWS errors of many lines ------------------------------------------------
@pytest.fixture
def small_disk(workdir: Path) -> Any:
    """A 64 KiB file system (tmpfs, as root); elsewhere None (the test then makes fsync fail)."""
    mount = workdir / "small"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=False).returncode:
        yield None
        return
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_leaves_no_temporary_file(seed: Seeder, aws: SimulatedAWS, workdir: Path, run, monkeypatch, small_disk) -> None:
    seed.queue("work")
    seed.definition("proc")
    jobs = [seed.job(status="RUNNABLE", jobName=f"j{i}", jobQueue="work", jobDefinition="proc") for i in range(120)]
    folder = small_disk / "m" if small_disk else workdir / "m"
    if small_disk is None:
        import errno

        def full(fd: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr("jobguard.adapters.stores.file.os.fsync", full)
    result = run("drain", "--store", f"file://{folder}", "--queue", "work", "--deploy-id", "d1")
    one_error(result, 4, "no space left on the device")
    assert temp_files(f"file://{folder}") == []
    assert aws.stop_calls == 0
    assert all(aws.batch.jobs[j].status == "RUNNABLE" for j in jobs)  # nothing stopped that is not recorded
    for path in folder.rglob("*.json"):
        json.loads(path.read_text())  # what was written is whole


def _without_permission(args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run jobguard as a user the folder's permissions apply to: as root, without the capabilities that bypass them."""
    prefix = []
    if os.geteuid() == 0:
        drop = "-dac_override,-dac_read_search,-fowner"
        prefix = ["setpriv", "--bounding-set", drop, "--inh-caps", drop]
    return subprocess.run([*prefix, sys.executable, "-m", "jobguard", *args], capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("what", ["folder", "manifest"])
def test_unreadable_store_is_an_error_not_nothing_to_restore(w: World, what: str) -> None:
    target = w.folder if what == "folder" else w.manifest
    before = snapshot(w.aws, w.seed, w.store)
    target.chmod(0)
    try:
        args = ["restore", "--store", w.store] + (["--deploy-id", "d1"] if what == "manifest" else [])
        done = _without_permission(args)
    finally:
        target.chmod(0o700 if what == "folder" else 0o600)
    line = one_error(Result(done.returncode, done.stdout, done.stderr), 4, "Permission denied")
    assert "nothing to restore" not in done.stdout
    assert str(w.folder) in line
    assert_unchanged(before, w.aws, w.seed)


INJECTED = "Job name is invalid\n::error::pwned\n##[add-mask]x\r\nsecond line"


def test_many_line_aws_error_of_one_job_is_one_line(w: World, run, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(body: Json) -> Json:
        raise ClientException(INJECTED)

    monkeypatch.setattr(w.aws.batch, "submit_job", refuse)
    result = run("restore", "--store", w.store, "--deploy-id", "d1")
    assert result.code == 1 and "Traceback" not in result.err
    lines = result.err.splitlines()
    assert all(line.startswith(("error:", "warning:", "hint:")) for line in lines), result.err
    (failed,) = [line for line in lines if line.startswith("error: first ")]
    assert "Job name is invalid ::error::pwned ##[add-mask]x second line" in failed
    assert "\n" not in job_named(load_manifest(w.store, w.seed, "d1"), "first")["error"]


def test_many_line_aws_error_of_a_listing_is_one_line(w: World, run, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(body: Json) -> Json:
        raise ClientException(INJECTED)

    before = batch_state(w.aws)
    monkeypatch.setattr(w.aws.batch, "list_jobs", refuse)
    line = one_error(run("drain", "--store", w.store, "--queue", "work", "--deploy-id", "d1"), 4, "ClientException")
    assert "second line" in line
    assert batch_state(w.aws) == before


# -- a bug is one line too -------------------------------------------------------------------------------
@pytest.mark.parametrize("in_actions", [False, True], ids=["terminal", "actions"])
def test_a_bug_is_one_line_and_its_traceback_comes_only_with_debug(
    w: World, run, monkeypatch: pytest.MonkeyPatch, in_actions: bool
) -> None:
    def bug(*args: Any, **kwargs: Any) -> int:
        raise KeyError("reason\n::error::with a second line")

    monkeypatch.setattr("jobguard.commands.status.status", bug)  # the CLI imports a command when it runs
    if in_actions:
        monkeypatch.setenv("GITHUB_ACTIONS", "true")
    line = one_error(run("status", "--store", w.store), 5, "internal error", "KeyError", "--debug")
    assert line.startswith("::error::" if in_actions else "error:")
    if in_actions:
        assert line.count("::") == 2  # only the command's own
    debug = run("--debug", "status", "--store", w.store)
    assert debug.code == 5 and "Traceback" in debug.err and "KeyError" in debug.err


def test_an_empty_github_run_id_does_not_stop_a_run_that_names_its_deploy(w: World, run) -> None:
    """GITHUB_RUN_ID set but empty is refused only where it would be used: --deploy-id wins."""
    w.monkeypatch.setenv("GITHUB_ACTIONS", "true")
    w.monkeypatch.setenv("GITHUB_RUN_ID", "")
    assert run("status", "--store", w.store, "--deploy-id", "d1").code == 0
    restored = run("restore", "--store", w.store, "--deploy-id", "d1")
    assert restored.code == 0, restored.err
    assert {k: len(v) for k, v in replacements_of(w.aws).items()} == {w.first: 1, w.second: 1}
