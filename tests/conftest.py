"""Fixtures: one simulated AWS per test session (moto on loopback behind jobguard's real-world
Batch model), reset before each test; a seeder; every store kind with its signing key; and the
CLI run as a user runs it, in-process or as a separate process.

The simulated Batch is not instant: a stopped running job keeps running for `Timing().stop_seconds`
(QUICK_TIMING's in the tests not marked slow), ListJobs lags, dependencies fail their dependents. A
test that needs the instant world says so.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from jobguard.adapters.aws import Aws, AwsSettings
from jobguard.adapters.batch import Batch
from jobguard.adapters.stores import Store, open_store
from jobguard.cli import main
from jobguard.domain.elision import elided
from jobguard.domain.manifest import JobRecord
from jobguard.domain.tags import mark_of
from jobguard.sim import Seeder, SimulatedAWS, Timing
from jobguard.sim.recording import Call

from . import shared

# Fast retries and short waits; every bound still real (tests of the bounds set their own).
FAST = """\
lock-ttl: 2
lease-ttl: 30
lock-timeout: 20
stop-timeout: 20
lookup-window: 1.5
retry:
  initial-wait: 0.001
  max-wait: 0.01
  attempts: 10
"""
TABLE = "jobguard-manifests"
BUCKET = "jobguard-manifests"

_FAULT_REPORT: list[dict[str, Any]] = []
RECORDED_CALLS: list[Call] = []


STORES = ("file", "s3", "dynamodb")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--stores", default=",".join(STORES), help="store kinds the store-parametrised tests run on (quick runs: --stores file)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """--stores: leave out the other store kinds' variants of every store-parametrised test."""
    wanted = set(str(config.getoption("--stores")).split(","))
    unknown = wanted - set(STORES)
    if unknown:
        raise pytest.UsageError(f"--stores: unknown store kinds {sorted(unknown)}; known: {', '.join(STORES)}")
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        kind = getattr(getattr(item, "callspec", None), "params", {}).get("store")
        (dropped if kind is not None and kind not in wanted else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


# --- Order, and what the processes of a parallel run (pytest -n 2) share ------------------------
# Each module of GROUPED runs whole on one worker: its tests share minutes of set-up (one jobguard
# installation into RUNNER_TEMP, one deployed stack, one runner repository, one set of Terraform
# lifecycles), or, for tests/test_policy.py, one worker evaluates every worker's calls. Every other
# test goes to whichever worker is free. The groups start first so that they overlap everything
# else; tests/test_policy.py runs last, after every test whose calls it evaluates (tests/shared.py
# gives it the other workers' calls once they finish).
FIRST = ("test_action.py", "test_deploy_e2e.py", "test_runner.py", "test_terraform.py")
LAST = ("test_policy.py",)
GROUPED = (*FIRST, *LAST)


class _Order:
    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        def rank(item: pytest.Item) -> int:
            return 0 if item.path.name in FIRST else 2 if item.path.name in LAST else 1

        items.sort(key=rank)  # stable: within a rank every test keeps its place


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """With -n (and xdist's default --dist load): GROUPED modules whole, other tests one by one, in
    the order above. (xdist's own `xdist_group` marks with `--dist loadgroup` did not keep a group
    on one worker with pytest 9.2 and xdist 3.8: tried on a two-module example.)"""
    if config.getvalue("dist") != "load":
        return None  # another --dist asked for: xdist's own scheduler
    from xdist.scheduler import LoadScopeScheduling  # type: ignore[import-untyped]

    class Groups(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if Path(module).name in GROUPED else nodeid

    config.option.loadscopereorder = False  # keep the order: groups first, the policy last
    return Groups(config, log)


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_Order(), "jobguard-order")
    shared.start()


def pytest_unconfigure(config: pytest.Config) -> None:
    shared.finish()


def record_faults(**figures: int) -> None:
    """Note one fault test's figures (with the test's name) for the fault report."""
    _FAULT_REPORT.append({"test": os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0], **figures})


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A worker publishes its calls and fault figures; the controlling process (or a run without
    workers) writes every fault figure to JOBGUARD_FAULT_REPORT=FILE (docs/reliability.md)."""
    if shared.worker() is not None:
        shared.publish("calls", RECORDED_CALLS)
        shared.publish("faults", _FAULT_REPORT)
        return
    figures = [*_FAULT_REPORT, *(row for rows in shared.published("faults") for row in rows)]
    path = os.environ.get("JOBGUARD_FAULT_REPORT")
    if path and figures:
        Path(path).write_text(json.dumps(figures, indent=1))


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture(scope="session")
def simulation() -> Iterator[SimulatedAWS]:
    """The session's simulated AWS."""
    with SimulatedAWS() as sim:
        yield sim


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory whose .jobguard.yml makes retries fast; signing keys live in it too."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".jobguard.yml").write_text(FAST)
    for name in ("GITHUB_ACTIONS", "GITHUB_RUN_ID", "GITHUB_STEP_SUMMARY", "GITHUB_OUTPUT", "AWS_PROFILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path


# A stopped job runs on for 0.2 s in the quick tests: still running when the drain first looks, ended
# by its first poll (0.25 s later), so every drain of the quick suite waits once and no longer. The
# slow sweeps (faults, kills, overlapping deploys) keep Timing()'s 0.4 s: a wider window for a race to show.
QUICK_TIMING = Timing(stop_seconds=0.2)


@pytest.fixture
def aws(simulation: SimulatedAWS, workdir: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[SimulatedAWS]:
    """The simulated AWS, emptied, with this process's boto3 pointed at it."""
    simulation.reset(Timing() if request.node.get_closest_marker("slow") else QUICK_TIMING)
    for key, value in simulation.env().items():
        monkeypatch.setenv(key, value)
    yield simulation
    RECORDED_CALLS.extend(simulation.recorded)
    simulation.fault = simulation.after = None


@pytest.fixture
def seed(aws: SimulatedAWS) -> Seeder:
    return Seeder(aws)


def configure(workdir: Path, text: str) -> None:
    """Put settings into the test's .jobguard.yml."""
    path = workdir / ".jobguard.yml"
    path.write_text(merged_config(path.read_text(encoding="utf-8"), text), encoding="utf-8")


def merged_config(base: str, text: str) -> str:
    """`base` with the settings of `text` put in: a key of both takes text's value (`retry:` key by key),
    as jobguard refuses a key given twice. Text that is not a YAML mapping (a test of a bad config
    file) is appended as it is."""
    text = text if text.endswith("\n") else text + "\n"
    try:
        old, new = yaml.safe_load(base) or {}, yaml.safe_load(text)
    except yaml.YAMLError:
        return base + text
    if not isinstance(old, dict) or not isinstance(new, dict):
        return base + text
    if isinstance(old.get("retry"), dict) and isinstance(new.get("retry"), dict):
        new = {**new, "retry": {**old["retry"], **new["retry"]}}
    return str(yaml.safe_dump({**old, **new}, sort_keys=False))


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, seed: Seeder, workdir: Path) -> str:
    """Every store kind: a local folder (local key), an S3 prefix or a DynamoDB table (KMS HMAC key)."""
    if request.param == "file":
        return f"file://{workdir}/manifests"
    configure(workdir, f"signing-key: kms:{signing_key(seed)}")
    if request.param == "dynamodb":
        create_table(seed, TABLE)
        return f"dynamodb://{TABLE}"
    seed.client("s3").create_bucket(Bucket=BUCKET)
    return f"s3://{BUCKET}/deploys"


def signing_key(seed: Seeder) -> str:
    """A KMS HMAC key like the Terraform module's; its ARN."""
    key = seed.client("kms").create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC", Description="jobguard manifests")
    return str(key["KeyMetadata"]["Arn"])


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
    """The stored manifest document, read straight from the store (a paged head with its pages' records as `jobs`)."""
    if store.startswith("dynamodb://"):
        return dynamodb_document(seed, store[len("dynamodb://") :], deploy_id)
    if store.startswith("file://"):
        folder = Path(store[len("file://") :])

        def read(name: str) -> bytes:
            return (folder / name).read_bytes()

    else:
        bucket, _, prefix = store[len("s3://") :].partition("/")

        def read(name: str) -> bytes:
            return bytes(seed.client("s3").get_object(Bucket=bucket, Key=f"{prefix}/{name}")["Body"].read())

    document = dict(json.loads(read(f"{deploy_id}.json")))
    if "pages" in document:
        pages = [json.loads(read(f"pages/{deploy_id}/{i:06d}-{d}.json")) for i, d in enumerate(document.pop("pages"))]
        document["jobs"] = [job for page in pages for job in page["jobs"]]
    return document


def race_listings(
    aws: SimulatedAWS,
    monkeypatch: pytest.MonkeyPatch,
    held: Callable[[dict[str, Any]], bool],
    first: Callable[[dict[str, Any]], bool],
    move: Callable[[], None],
) -> list[bool]:
    """Batch moves a job on between two ListJobs answers: the listing `held` picks waits (up to 1 s) until the
    one `first` picks has been answered, then `move()` runs, then it is answered. Listed side by side, the
    job is in neither; listed one after the other in lifecycle order, the wait runs out and the job is seen
    in one of them. The list returned holds True once the job has moved."""
    answered = threading.Event()
    moved: list[bool] = []
    list_jobs = aws.batch.list_jobs

    def racing(body: dict[str, Any]) -> dict[str, Any]:
        if held(body) and not moved:
            answered.wait(1.0)
            moved.append(True)
            move()
        answer = list_jobs(body)
        if first(body):
            answered.set()
        return answer

    monkeypatch.setattr(aws.batch, "list_jobs", racing)
    return moved


def asked_to_stop(aws: SimulatedAWS, job_id: str) -> bool:
    """True once Batch received a stop call for the job (whatever it did with it since)."""
    with aws.batch.lock:
        return bool(aws.batch.jobs[job_id].stop_kind)


def records(store: str, seed: Seeder, deploy_id: str) -> dict[str, dict[str, Any]]:
    """The stored records of a manifest, by original job id."""
    return {r["job_id"]: r for r in load_manifest(store, seed, deploy_id)["jobs"]}


def dynamodb_document(seed: Seeder, table: str, deploy_id: str) -> dict[str, Any]:
    """A manifest as one document, read item by item from the table."""
    dynamodb = seed.client("dynamodb")
    header = dynamodb.get_item(TableName=table, Key={"pk": {"S": "deploys"}, "sk": {"S": deploy_id}})["Item"]
    pages = dynamodb.get_paginator("query").paginate(
        TableName=table, KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": {"S": f"deploy#{deploy_id}"}}
    )
    items = [item for page in pages for item in page["Items"]]  # a query answers at most 1 MB
    jobs = [json.loads(i["body"]["S"]) for i in sorted(items, key=lambda i: int(i["seq"]["N"]))]
    return {**json.loads(header["body"]["S"]), "jobs": jobs}


def replacements_of(aws: SimulatedAWS) -> dict[str, list[str]]:
    """Replacement job ids by the original job id their jobguard mark names."""
    found: dict[str, list[str]] = {}
    with aws.batch.lock:
        jobs = [j for j in aws.batch.jobs.values() if j.index is None]
        details = [aws.batch.detail(j) for j in jobs]
    for job, detail in zip(jobs, details, strict=True):
        mark = mark_of(detail)
        if mark:
            found.setdefault(mark.original_id, []).append(job.job_id)
    return found


def overlapping(aws: SimulatedAWS) -> list[str]:
    """Originals whose replacement was created while the original could still run: two writers, two bills."""
    found = []
    with aws.batch.lock:
        aws.batch.tick()
        for job in [j for j in aws.batch.jobs.values() if j.index is None]:
            mark = mark_of(aws.batch.detail(job))
            original = aws.batch.jobs.get(mark.original_id) if mark else None
            if original is None or original.started_at is None:
                continue  # forgotten long ago, or never started (a PENDING job asked to stop never starts)
            if original.status not in ("SUCCEEDED", "FAILED") or (original.stopped_at or 0) > job.created_at:
                found.append(original.job_id)
    return found


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
def webhook() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Hook.received = []
    yield f"http://user:hunter2@127.0.0.1:{server.server_port}/services/T000/B000/secret-token?sig=abc"
    server.shutdown()


def job_of(seed: Seeder, name: str, status: str = "RUNNING", queue: str = "work", after: str | None = None) -> str:
    """A job of definition `proc` in `status` on `queue`, depending on `after` if given."""
    depends: dict[str, Any] = {"dependsOn": [{"jobId": after}]} if after else {}
    return seed.job(status=status, jobName=name, jobQueue=queue, jobDefinition="proc", **depends)


def exactly_once(aws: SimulatedAWS, jobs: list[str]) -> dict[str, str]:
    """Each job has one replacement, created once its original could no longer run; original -> replacement."""
    found = replacements_of(aws)
    assert {j: len(found.get(j, [])) for j in jobs} == dict.fromkeys(jobs, 1)
    assert overlapping(aws) == []
    return {j: found[j][0] for j in jobs}


@pytest.fixture
def lagging(aws: SimulatedAWS) -> None:
    """ListJobs shows a job only 1 s after it was submitted (lookup-window is 1.5 s in FAST)."""
    aws.batch.timing = replace(aws.batch.timing, list_lag_seconds=1.0)


def store_at(uri: str) -> Store:
    """The store `uri` names, opened as jobguard opens it (default AWS settings), to read or write it behind jobguard's back."""
    return open_store(uri, Aws(AwsSettings()))


def work_queue(seed: Seeder, queue: str = "work") -> None:
    """Queue `queue` and job definition `proc`."""
    seed.queue(queue)
    seed.definition("proc")


def one_job(seed: Seeder) -> str:
    """Queue `work`, definition `proc` and job `job` running on it: its id."""
    work_queue(seed)
    return job_of(seed, "job")


def drained_then_restored(seed: Seeder, store: str, run: Any, resubmit: bool = True) -> str:
    """Queue `work` with job `job` running on it, drained by deploy d1 and restored: resubmitted, or with `resubmit`
    False nothing submitted (max-resubmits 0). The job's id."""
    job = one_job(seed)
    drained = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1")
    assert drained.code == 0, drained.err
    if not resubmit:
        configure(Path.cwd(), "max-resubmits: 0\n")
    restored = run("restore", "--store", store, "--deploy-id", "d1")
    assert restored.code == 0, restored.err
    return job


def restored_exactly_once(run: Any, store: str, aws: SimulatedAWS, jobs: list[str]) -> dict[str, str]:
    """A restore of deploy d1 that succeeds and brings back each of `jobs` exactly once (`exactly_once`)."""
    restored = run("restore", "--store", store, "--deploy-id", "d1")
    assert restored.code == 0, restored.err
    return exactly_once(aws, jobs)


def killed_at_call(aws: SimulatedAWS, process: subprocess.Popen[str], action: str, count: int, timeout: float = 120) -> None:
    """kill -9 `process` right after AWS carried out the `count`-th `action` call (counted over the test): its
    answer never reaches the process. Returns once the process has ended, killed."""

    def kill(called: str, n: int) -> None:
        if called == action and n == count:
            os.kill(process.pid, signal.SIGKILL)

    aws.after = kill
    try:
        process.communicate(timeout=timeout)
    finally:
        aws.after = None
    assert process.returncode == -signal.SIGKILL


def whole_records() -> int:
    """JobRecords alive in this process that hold their submission. Garbage is collected first: the drain run in
    this process before may have left its records in cycles not yet collected (CI counted 44 of 36 once)."""
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, JobRecord) and not elided(o))


def whole_records_at_each_submit(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list that gets `whole_records()` as each SubmitJob of this process is sent (restore run in-process)."""
    held: list[int] = []
    submit = Batch.submit

    def counted(self: Batch, request: dict[str, Any]) -> str:
        held.append(whole_records())
        return submit(self, request)

    monkeypatch.setattr(Batch, "submit", counted)
    return held


def rename_plan(workdir: Path, old: str = "work", new: str = "work-v2") -> Path:
    """A Terraform plan (`workdir`/plan.json) that replaces queue `old` under the name `new`."""
    change = {"actions": ["delete", "create"], "before": {"name": old}, "after": {"name": new}}
    resource = {"address": "aws_batch_job_queue.q", "type": "aws_batch_job_queue", "change": change}
    plan = workdir / "plan.json"
    plan.write_text(json.dumps({"format_version": "1.2", "resource_changes": [resource]}))
    return plan


def apply_rename(seed: Seeder, old: str = "work", new: str = "work-v2") -> None:
    """The apply of `rename_plan`: queue `new` made, `old` disabled and deleted."""
    seed.queue(new)
    seed.batch.update_job_queue(jobQueue=old, state="DISABLED")
    seed.batch.delete_job_queue(jobQueue=old)
