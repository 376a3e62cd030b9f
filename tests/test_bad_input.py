"""Every bad input: one line naming what is wrong and where, exit 2, no traceback, nothing changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobguard.simulated_aws import Seeder, SimulatedAWS

from .conftest import jobs_by_original


@pytest.fixture
def drained(seed: Seeder, workdir: Path, run) -> Path:
    """A local store holding one drained job's manifest."""
    seed.queue("work")
    seed.definition("proc")
    seed.job(jobName="j", jobQueue="work", jobDefinition="proc")
    assert run("drain", "--store", f"file://{workdir}/m", "--queue", "work", "--deploy-id", "d1").code == 0
    return workdir / "m" / "d1.json"


def _one_line_error(result, *words: str) -> None:
    assert result.code == 2, (result.out, result.err)
    lines = [line for line in result.err.splitlines() if not line.startswith("hint:")]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.err
    assert "Traceback" not in result.err
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda text: text[: len(text) // 2], ("damaged manifest", "not valid JSON")),
        (lambda text: text.replace('"schema_version": 1', '"schema_version": 99'), ("unknown manifest schema version 99",)),
        (lambda text: text.replace('"account": "123456789012"', '"account": "999999999999"'), ("account 999999999999", "123456789012")),
        (lambda text: text.replace('"outcome": "terminated"', '"outcome": "lost"'), ("jobs[0]", "unknown outcome 'lost'")),
        (lambda text: text.replace('"job_name": "j"', '"job_name": 7'), ("jobs[0].job_name", "wrong type")),
        (lambda text: "[]", ("expected a JSON object",)),
    ],
    ids=["truncated", "schema-version", "other-account", "bad-outcome", "bad-type", "not-object"],
)
@pytest.mark.parametrize("deploy_id", [None, "d1"], ids=["all", "named"])
def test_damaged_manifest_is_rejected_and_never_overwritten(drained: Path, run, aws: SimulatedAWS, damage, words, deploy_id) -> None:
    damaged = damage(drained.read_text())
    drained.write_text(damaged)
    args = ["restore", "--store", f"file://{drained.parent}"] + (["--deploy-id", deploy_id] if deploy_id else [])
    result = run(*args)
    _one_line_error(result, str(drained), *words)
    assert drained.read_text() == damaged
    assert aws.calls["batch:SubmitJob"] == 1 and jobs_by_original(aws) == {}  # the one seeded job only
    _one_line_error(run("drain", "--store", f"file://{drained.parent}", "--queue", "work", "--deploy-id", "d1"), str(drained))
    assert drained.read_text() == damaged


def test_damaged_s3_manifest_names_its_key(seed: Seeder, run, aws: SimulatedAWS) -> None:
    s3 = seed.client("s3")
    s3.create_bucket(Bucket="broken-manifests")
    s3.put_object(Bucket="broken-manifests", Key="p/d9.json", Body=b'{"schema_version": 1, "deploy')
    _one_line_error(run("restore", "--store", "s3://broken-manifests/p"), "s3://broken-manifests/p/d9.json", "damaged manifest")
    assert s3.get_object(Bucket="broken-manifests", Key="p/d9.json")["Body"].read() == b'{"schema_version": 1, "deploy'


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["restore", "--store", "ftp://somewhere"], ("store 'ftp://somewhere'", "unknown scheme ftp://")),
        (["restore", "--store", "s3://"], ("needs a bucket",)),
        (["drain", "--store", "file://x"], ("name the queues with --queue NAME",)),
        (["drain", "--queue", "q", "--deploy-id", "../../etc"], ("deploy id '../../etc'",)),
        (["restore", "--deploy-id", "nope"], ("no manifest for deploy nope",)),
    ],
)
def test_bad_usage(aws: SimulatedAWS, run, args, words) -> None:
    _one_line_error(run(*args), *words)
    assert aws.calls["batch:TerminateJob"] == aws.calls["batch:SubmitJob"] == 0


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ("queues: [a\n  b: c", ("invalid YAML", "line")),
        ("queue: work\n", ("unknown key 'queue'", "did you mean 'queues'")),
        ("retry:\n  attempt: 3\n", ("retry", "unknown key 'attempt'")),
        ("job-definition: newest\n", ("job-definition", "latest, recorded")),
        ("- a list\n", ("mapping",)),
        ("retry:\n  attempts: -1\n", ("retry.attempts", "non-negative integer")),
    ],
)
def test_bad_config(aws: SimulatedAWS, run, workdir: Path, config: str, words) -> None:
    path = workdir / "custom.yml"
    path.write_text(config)
    _one_line_error(run("drain", "--config", str(path), "--queue", "q"), str(path), *words)


def test_missing_config_file_is_named(aws: SimulatedAWS, run) -> None:
    _one_line_error(run("status", "--config", "nowhere.yml"), "nowhere.yml", "cannot read config file")


def test_config_file_supplies_flags_and_flags_win(seed: Seeder, run, workdir: Path, aws: SimulatedAWS) -> None:
    seed.queue("work")
    seed.queue("other")
    seed.definition("proc")
    job = seed.job(jobName="j", jobQueue="work", jobDefinition="proc")
    untouched = seed.job(jobName="j", jobQueue="other", jobDefinition="proc")
    (workdir / ".jobguard.yml").write_text(
        f"store: file://{workdir}/from-config\nqueues: [other]\ndeploy-id: cfg\nretry:\n  initial-wait: 0\n"
    )
    assert run("drain", "--queue", "work").code == 0
    assert (workdir / "from-config" / "cfg.json").is_file()
    assert aws.batch.jobs[job].terminated and not aws.batch.jobs[untouched].terminated


def test_missing_credentials(aws: SimulatedAWS, run, monkeypatch: pytest.MonkeyPatch, workdir: Path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(workdir / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(workdir / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    _one_line_error(run("drain", "--queue", "q"), "no AWS credentials found")


def test_missing_region(aws: SimulatedAWS, run, monkeypatch: pytest.MonkeyPatch, workdir: Path) -> None:
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(workdir / "none"))
    _one_line_error(run("status"), "no AWS region configured")


def test_rejected_credentials(aws: SimulatedAWS, run, monkeypatch: pytest.MonkeyPatch) -> None:
    aws.fault = lambda action, n: (403, "InvalidClientTokenId") if action.startswith("sts:") else None
    _one_line_error(run("status"), "AWS credentials rejected: InvalidClientTokenId")


def test_manifest_of_other_region_is_refused(drained: Path, run, aws: SimulatedAWS) -> None:
    document = json.loads(drained.read_text())
    document["region"] = "eu-west-1"
    drained.write_text(json.dumps(document))
    _one_line_error(run("restore", "--store", f"file://{drained.parent}"), "eu-west-1", "us-east-1")
    assert aws.calls["batch:SubmitJob"] == 1  # the one seeded job only


def test_aws_region_alone_is_enough(seed: Seeder, run, monkeypatch: pytest.MonkeyPatch, workdir: Path) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(workdir / "none"))
    result = run("status", "--store", f"file://{workdir}/m")
    assert result.code == 0, result.err
