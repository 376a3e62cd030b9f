"""Fixtures: a simulated AWS on loopback (moto behind jobguard's faithful Batch job model),
a seeder for queues, job definitions and jobs, and a runner for the CLI as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from jobguard.cli import main
from jobguard.simulated_aws import Seeder, SimulatedAWS

FAST_RETRY = "lock-ttl: 1\nretry:\n  initial-wait: 0.001\n  max-wait: 0.01\n  attempts: 10\n"


_FAULT_REPORT: list[dict[str, Any]] = []


def record_faults(**figures: int) -> None:
    """Note one fault test's figures (with the test's name) for the fault report."""
    _FAULT_REPORT.append({"test": os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0], **figures})


def pytest_sessionfinish(session: pytest.Session) -> None:
    """With JOBGUARD_FAULT_REPORT=FILE, write the fault tests' figures there (docs/reliability.md)."""
    path = os.environ.get("JOBGUARD_FAULT_REPORT")
    if path and _FAULT_REPORT:
        Path(path).write_text(json.dumps(_FAULT_REPORT, indent=1))


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory whose .jobguard.yml makes retries fast."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".jobguard.yml").write_text(FAST_RETRY)
    for name in ("GITHUB_ACTIONS", "GITHUB_RUN_ID", "GITHUB_STEP_SUMMARY", "GITHUB_OUTPUT", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.fixture
def aws(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SimulatedAWS]:
    with SimulatedAWS() as sim:
        for key, value in sim.env().items():
            monkeypatch.setenv(key, value)
        yield sim


@pytest.fixture
def seed(aws: SimulatedAWS) -> Seeder:
    return Seeder(aws)


@pytest.fixture(params=["file", "s3", "dynamodb"])
def store(request: pytest.FixtureRequest, seed: Seeder, workdir: Path) -> str:
    """Every store kind: a local folder, an S3 prefix, a DynamoDB table."""
    if request.param == "file":
        return f"file://{workdir}/manifests"
    if request.param == "dynamodb":
        create_table(seed, "jobguard-manifests")
        return "dynamodb://jobguard-manifests"
    seed.client("s3").create_bucket(Bucket="jobguard-manifests")
    return "s3://jobguard-manifests/deploys"


def create_table(seed: Seeder, name: str) -> None:
    """The table the Terraform module creates: pk/sk strings, TTL on expires_at."""
    dynamodb = seed.client("dynamodb")
    dynamodb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.update_time_to_live(TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"})


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Any:
    """Run the CLI in-process as `jobguard ARGS`."""

    def run(*args: str) -> Result:
        code = main(list(args))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def run_process(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start `python -m jobguard ARGS` as a separate process, as a runner does."""
    return subprocess.Popen(
        [sys.executable, "-m", "jobguard", *args],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def load_manifest(store: str, seed: Seeder, deploy_id: str) -> dict[str, Any]:
    """The stored manifest document, read straight from the store."""
    if store.startswith("file://"):
        return dict(json.loads(Path(store[len("file://") :], f"{deploy_id}.json").read_text()))
    if store.startswith("dynamodb://"):
        return dynamodb_document(seed, store[len("dynamodb://") :], deploy_id)
    assert store.startswith("s3://"), store
    bucket, _, prefix = store[len("s3://") :].partition("/")
    body = seed.client("s3").get_object(Bucket=bucket, Key=f"{prefix}/{deploy_id}.json")["Body"].read()
    return dict(json.loads(body))


def jobs_by_original(aws: SimulatedAWS) -> dict[str, list[str]]:
    """Replacement job ids by the original job id they carry in their jobguard tag."""
    found: dict[str, list[str]] = {}
    for job in aws.batch.jobs.values():
        original = (job.request.get("tags") or {}).get("jobguard:original-job-id")
        if original and job.index is None:
            found.setdefault(original, []).append(job.job_id)
    return found


def dynamodb_document(seed: Seeder, table: str, deploy_id: str) -> dict[str, Any]:
    """A manifest as one document, read item by item from the table."""
    dynamodb = seed.client("dynamodb")
    header = dynamodb.get_item(TableName=table, Key={"pk": {"S": "deploys"}, "sk": {"S": deploy_id}})["Item"]
    items = dynamodb.query(
        TableName=table, KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": {"S": f"deploy#{deploy_id}"}}
    )["Items"]
    jobs = [json.loads(i["body"]["S"]) for i in sorted(items, key=lambda i: int(i["seq"]["N"]))]
    return {**json.loads(header["body"]["S"]), "jobs": jobs}


class Hook(BaseHTTPRequestHandler):
    """A webhook receiver on loopback that keeps what it was sent."""

    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        Hook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Any:
    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Hook.received = []
    yield f"http://127.0.0.1:{server.server_port}/services/T000/B000/secret-token"
    server.shutdown()
