"""Per-job events: a drain and a restore publish one EventBridge event per job and write one JSON line
per job, each valid against the shipped schema; delivery failures are reported per event and never
fail the deploy; the example rule routes them and the example consumer updates a job table."""

from __future__ import annotations

import importlib.util
import json
import sqlite3
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from jobguard.domain.schema import validate
from jobguard.sim import STOP_ACTIONS, Seeder, SimulatedAWS, Timing

from .conftest import configure, records, replacements_of

Json = dict[str, Any]
BUS = "deploys"
ROOT = Path(__file__).parent.parent
SCHEMA = json.loads((ROOT / "jobguard" / "domain" / "schemas" / "event.schema.json").read_text())
FIELDS = {"deploy_id", "original", "replacement", "lineage_id", "outcome", "reason"}


@pytest.fixture
def store(workdir: Path) -> str:
    return f"file://{workdir}/manifests"


@pytest.fixture
def world(aws: SimulatedAWS, seed: Seeder) -> SimulatedAWS:
    """Instant stops, a queue, a job definition and an event bus."""
    aws.batch.timing = Timing.instant()
    seed.queue("work")
    seed.definition("proc")
    seed.client("events").create_event_bus(Name=BUS)
    return aws


def _jobs(seed: Seeder, count: int) -> list[str]:
    return [seed.job(jobName=f"job-{i}", jobQueue="work", jobDefinition="proc") for i in range(count)]


def _checked(event: Json, where: str) -> Json:
    jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker()).validate(event)
    validate(event, "event", where)  # the product's own validator reads the same schema
    return event


def _published(aws: SimulatedAWS) -> list[Json]:
    for entry in aws.published:
        assert entry["Source"] == "jobguard" and entry["EventBusName"] == BUS
        detail = json.loads(entry["Detail"])
        assert entry["DetailType"] == f"jobguard job {detail['outcome']}" and entry["Resources"] == [detail["original"]["job_arn"]]
    return [_checked(json.loads(e["Detail"]), "published event") for e in aws.published]


def _written(path: Path) -> list[Json]:
    return [_checked(json.loads(line), f"{path} line {n}") for n, line in enumerate(path.read_text().splitlines(), 1)]


def _consumer() -> Any:
    """examples/events/update_job_table.py, loaded as a Lambda runtime would."""
    spec = importlib.util.spec_from_file_location("update_job_table", ROOT / "examples" / "events" / "update_job_table.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _events(store: str, path: Path) -> tuple[str, ...]:
    return ("--store", store, "--deploy-id", "d1", "--event-bus", BUS, "--events-file", str(path))


def test_drain_and_restore_publish_and_write_one_event_per_job(
    world: SimulatedAWS, seed: Seeder, store: str, run: Any, workdir: Path
) -> None:
    aws = world
    jobs = _jobs(seed, 23)
    lines = workdir / "events.jsonl"
    drained = run("drain", "--queue", "work", *_events(store, lines))
    assert drained.code == 0, drained.err
    assert aws.calls["events:PutEvents"] == 3  # 23 events, in batches of 10
    published = _published(aws)
    assert sorted(e["original"]["job_id"] for e in published) == sorted(jobs)  # one event per job
    assert _written(lines) == published  # the same events, as JSON lines
    first = next(e for e in published if e["original"]["job_id"] == jobs[0])
    assert set(first) >= FIELDS
    assert first["outcome"] == "terminated" and first["stage"] == "drain" and first["deploy_id"] == "d1"
    assert first["original"] == {
        "job_id": jobs[0],
        "job_arn": f"arn:aws:batch:us-east-1:123456789012:job/{jobs[0]}",
        "job_name": "job-0",
        "queue": "work",
        "job_definition": "proc:1",
    }
    assert first["replacement"] is None and first["lineage_id"] == jobs[0] and first["reason"] == "configured"

    seed.definition("proc")  # the deploy
    aws.published.clear()
    restored = run("restore", *_events(store, lines))
    assert restored.code == 0, restored.err
    assert aws.calls["events:PutEvents"] == 6
    resubmitted = _published(aws)
    replacements = {k: v[0] for k, v in replacements_of(aws).items()}
    assert {e["original"]["job_id"]: e["replacement"] for e in resubmitted} == {
        job: {"job_id": replacements[job], "job_definition": "proc:2"} for job in jobs
    }
    assert all(
        e["outcome"] == "resubmitted" and e["stage"] == "restore" and e["lineage_id"] == e["original"]["job_id"] for e in resubmitted
    )
    assert _written(lines)[23:] == resubmitted and len(_written(lines)) == 46


def test_every_outcome_is_an_event_with_its_reason(world: SimulatedAWS, seed: Seeder, store: str, run: Any, workdir: Path) -> None:
    aws = world
    seed.definition("gone")
    finished, moved, lost = [*_jobs(seed, 2), seed.job(jobName="lost", jobQueue="work", jobDefinition="gone")]
    aws.batch.timing = Timing(stop_seconds=5.0, cancel_seconds=0.0, list_lag_seconds=0.0)

    def finish_first(action: str, count: int) -> None:
        if action in STOP_ACTIONS and aws.batch.stopping(finished):
            aws.batch.finish(finished)
        if action in STOP_ACTIONS and aws.batch.stopping(moved):
            aws.batch.finish(moved, "FAILED")  # stopped at once
        if action in STOP_ACTIONS and aws.batch.stopping(lost):
            aws.batch.finish(lost, "FAILED")

    aws.after = finish_first
    lines = workdir / "events.jsonl"
    assert run("drain", "--queue", "work", *_events(store, lines)).code == 0
    seed.batch.deregister_job_definition(jobDefinition="gone:1")  # the deploy removed it
    assert run("restore", *_events(store, lines)).code == 1
    by_job: dict[str, list[Json]] = {}
    for event in _written(lines):
        by_job.setdefault(event["original"]["job_id"], []).append(event)
    assert [(e["outcome"], e["stage"]) for e in by_job[finished]] == [("finished", "drain")]
    assert "finished on its own" in by_job[finished][0]["reason"]
    assert [(e["outcome"], e["stage"]) for e in by_job[moved]] == [("terminated", "drain"), ("resubmitted", "restore")]
    assert [(e["outcome"], e["stage"]) for e in by_job[lost]] == [("terminated", "drain"), ("failed", "restore")]
    assert by_job[lost][1]["reason"] == "job definition gone has no ACTIVE revision" and by_job[lost][1]["replacement"] is None
    assert sorted(json.loads(e["Detail"])["outcome"] for e in aws.published) == sorted(
        e["outcome"] for events in by_job.values() for e in events
    )


def test_settings_come_from_the_config_file_too(world: SimulatedAWS, seed: Seeder, store: str, run: Any, workdir: Path) -> None:
    _jobs(seed, 2)
    configure(workdir, f"event-bus: {BUS}\nevents-file: {workdir / 'from-config.jsonl'}")
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    assert len(_published(world)) == 2 and len(_written(workdir / "from-config.jsonl")) == 2


def test_no_bus_and_no_file_publish_nothing(world: SimulatedAWS, seed: Seeder, store: str, run: Any) -> None:
    _jobs(seed, 2)
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    assert world.calls["events:PutEvents"] == 0


def test_eventbridge_down_is_reported_per_event_and_never_fails_the_deploy(
    world: SimulatedAWS, seed: Seeder, store: str, run: Any, workdir: Path
) -> None:
    aws = world
    jobs = _jobs(seed, 3)
    aws.fault = lambda action, count: (500, "InternalFailure") if action == "events:PutEvents" else None
    lines = workdir / "events.jsonl"
    drained = run("drain", "--queue", "work", *_events(store, lines))
    assert drained.code == 0, drained.err
    assert aws.published == [] and aws.calls["events:PutEvents"] == 10  # retried to the configured bound
    for job in jobs:
        assert (
            f"warning: event for job {job} (terminated) not published: publish jobguard events to EventBridge: InternalFailure"
            in drained.err
        )
    assert len(_written(lines)) == 3  # the file does not depend on EventBridge
    assert all(r["outcome"] == "terminated" for r in records(store, seed, "d1").values())


def test_a_failure_then_success_publishes_every_event(world: SimulatedAWS, seed: Seeder, store: str, run: Any, workdir: Path) -> None:
    aws = world
    _jobs(seed, 12)
    aws.fault = lambda action, count: (500, "InternalFailure") if action == "events:PutEvents" and count == 1 else None
    drained = run("drain", "--queue", "work", *_events(store, workdir / "events.jsonl"))
    assert drained.code == 0 and "not published" not in drained.err
    assert len(_published(aws)) == 12 and aws.calls["events:PutEvents"] == 3  # 2 batches, the first sent twice


def test_refused_entries_are_reported_one_by_one(world: SimulatedAWS, seed: Seeder, store: str, run: Any, workdir: Path) -> None:
    aws = world
    jobs = _jobs(seed, 4)
    bad = jobs[1]
    aws.refuse_event = lambda entry: ("AccessDeniedException", "not authorized for this bus") if bad in entry["Detail"] else None
    drained = run("drain", "--queue", "work", *_events(store, workdir / "events.jsonl"))
    assert drained.code == 0, drained.err
    assert f"event for job {bad} (terminated) not published: AccessDeniedException: not authorized for this bus" in drained.err
    assert drained.err.count("not published") == 1
    assert sorted(e["original"]["job_id"] for e in _published(aws)) == sorted(set(jobs) - {bad})
    assert aws.calls["events:PutEvents"] == 1  # a refusal that says "never" is not sent again


def test_throttled_entries_are_sent_again_after_a_backoff(world: SimulatedAWS, seed: Seeder, store: str, run: Any, workdir: Path) -> None:
    aws = world
    jobs = _jobs(seed, 5)
    refused: set[str] = set()

    def throttle_once(entry: Json) -> tuple[str, str] | None:
        job = json.loads(entry["Detail"])["original"]["job_id"]
        if job in jobs[:2] and job not in refused:
            refused.add(job)
            return ("ThrottlingException", "Rate exceeded")
        return None

    aws.refuse_event = throttle_once
    drained = run("drain", "--queue", "work", *_events(store, workdir / "events.jsonl"))
    assert drained.code == 0 and "not published" not in drained.err
    assert "PutEvents: ThrottlingException; backing off" in drained.err
    assert aws.calls["events:PutEvents"] == 2 and refused == set(jobs[:2])
    assert sorted(e["original"]["job_id"] for e in _published(aws)) == sorted(jobs)  # each once


def test_throttled_on_every_attempt_is_reported(world: SimulatedAWS, seed: Seeder, store: str, run: Any, workdir: Path) -> None:
    aws = world
    jobs = _jobs(seed, 2)
    aws.refuse_event = lambda entry: ("ThrottlingException", "Rate exceeded") if jobs[0] in entry["Detail"] else None
    drained = run("drain", "--queue", "work", *_events(store, workdir / "events.jsonl"))
    assert drained.code == 0
    assert f"event for job {jobs[0]} (terminated) not published" in drained.err and "ThrottlingException" in drained.err
    assert [e["original"]["job_id"] for e in _published(aws)] == [jobs[1]]


def test_an_unwritable_events_file_is_a_warning(world: SimulatedAWS, seed: Seeder, store: str, run: Any, workdir: Path) -> None:
    _jobs(seed, 1)
    drained = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1", "--events-file", str(workdir / "missing" / "e.jsonl"))
    assert drained.code == 0 and "warning: could not write 1 events to" in drained.err


def test_the_example_rule_routes_events_and_the_consumer_updates_the_job_table(
    world: SimulatedAWS, seed: Seeder, store: str, run: Any, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """examples/events: rule.json on the bus, an SQS queue as its target, update_job_table.handler on what arrives."""
    update_job_table = _consumer()
    events, sqs = seed.client("events"), seed.client("sqs")
    queue_url = sqs.create_queue(QueueName="job-events")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="jobguard-jobs", EventBusName=BUS, EventPattern=(ROOT / "examples" / "events" / "rule.json").read_text())
    events.put_targets(Rule="jobguard-jobs", EventBusName=BUS, Targets=[{"Id": "table", "Arn": queue_arn}])
    table = workdir / "jobs.sqlite3"
    jobs = _jobs(seed, 3)
    with sqlite3.connect(table) as db:
        db.execute("CREATE TABLE batch_jobs (job_id TEXT PRIMARY KEY, status TEXT NOT NULL, note TEXT, lineage_id TEXT)")
        db.executemany("INSERT INTO batch_jobs VALUES (?, 'RUNNING', NULL, NULL)", [(j,) for j in jobs])
    monkeypatch.setenv("JOB_TABLE", str(table))

    def deliver() -> int:
        received = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        answer = update_job_table.handler({"Records": [{"body": m["Body"]} for m in received]})
        assert answer["events"] == len(received)
        return int(answer["rows_changed"])

    assert run("drain", "--queue", "work", *_events(store, workdir / "e.jsonl")).code == 0
    assert deliver() == 3
    with sqlite3.connect(table) as db:
        assert {row[0] for row in db.execute("SELECT status FROM batch_jobs")} == {"INTERRUPTED"}
    seed.definition("proc")
    assert run("restore", *_events(store, workdir / "e.jsonl")).code == 0
    assert deliver() == 3
    replacements = {k: v[0] for k, v in replacements_of(world).items()}
    with sqlite3.connect(table) as db:
        rows = {row[0]: row[1:] for row in db.execute("SELECT job_id, status, lineage_id, note FROM batch_jobs")}
    assert set(rows) == {replacements[j] for j in jobs}
    for job in jobs:
        status, lineage, note = rows[replacements[job]]
        assert status == "SUBMITTED" and lineage == job and f"(was {job})" in note and "proc:2" in note


def test_the_consumer_applies_a_recorded_event_once_and_ignores_what_it_does_not_know(
    world: SimulatedAWS, seed: Seeder, store: str, run: Any, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    update_job_table = _consumer()
    (job,) = _jobs(seed, 1)
    lines = workdir / "e.jsonl"
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1", "--events-file", str(lines)).code == 0
    seed.definition("proc")
    assert run("restore", "--store", store, "--deploy-id", "d1", "--events-file", str(lines)).code == 0
    wrapped: list[Json] = [{"source": "jobguard", "detail-type": f"jobguard job {e['outcome']}", "detail": e} for e in _written(lines)]
    terminated, resubmitted = wrapped
    table = workdir / "jobs.sqlite3"
    with sqlite3.connect(table) as db:
        db.execute("CREATE TABLE batch_jobs (job_id TEXT PRIMARY KEY, status TEXT NOT NULL, note TEXT, lineage_id TEXT)")
        db.execute("INSERT INTO batch_jobs VALUES (?, 'RUNNING', NULL, NULL)", (job,))
    monkeypatch.setenv("JOB_TABLE", str(table))
    assert update_job_table.handler(resubmitted)["rows_changed"] == 1
    assert update_job_table.handler(resubmitted)["rows_changed"] == 0  # delivered twice: applied once
    assert update_job_table.handler(terminated)["rows_changed"] == 0  # late, out of order: the row has moved on
    future = {**resubmitted, "detail": {**resubmitted["detail"], "version": 2}}
    assert update_job_table.handler(future)["rows_changed"] == 0
    with sqlite3.connect(table) as db:
        ((job_id, status),) = db.execute("SELECT job_id, status FROM batch_jobs").fetchall()
    assert job_id == resubmitted["detail"]["replacement"]["job_id"] and status == "SUBMITTED"
