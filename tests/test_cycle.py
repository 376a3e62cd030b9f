"""The whole cycle as a user runs it: drain before the deploy, restore after, status."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from jobguard.simulated_aws import Seeder, SimulatedAWS

from .conftest import jobs_by_original, load_manifest

OLD = {
    "image": "app:1",
    "command": ["python", "process.py", "Ref::input"],
    "environment": [{"name": "MODE", "value": "old"}, {"name": "SHARED", "value": "v1"}],
    "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "1024"}],
}
NEW = {
    "image": "app:2",
    "command": ["python", "process_v2.py", "Ref::input"],
    "environment": [{"name": "MODE", "value": "new"}, {"name": "SHARED", "value": "v2"}],
    "resourceRequirements": [{"type": "VCPU", "value": "2"}, {"type": "MEMORY", "value": "4096"}],
}


def _definitions(seed: Seeder) -> None:
    seed.queue("work")
    seed.definition(
        "proc",
        containerProperties=OLD,
        parameters={"input": "default"},
        retryStrategy={"attempts": 2},
        timeout={"attemptDurationSeconds": 600},
        schedulingPriority=10,
    )


def _deploy(seed: Seeder) -> None:
    seed.definition(
        "proc",
        containerProperties=NEW,
        parameters={"input": "default2"},
        retryStrategy={"attempts": 5},
        timeout={"attemptDurationSeconds": 900},
        schedulingPriority=20,
    )


def test_overrides_are_recovered_exactly(seed: Seeder, store: str, run) -> None:
    _definitions(seed)
    job = seed.job(
        jobName="nightly",
        jobQueue="work",
        jobDefinition="proc",
        parameters={"input": "s3://bucket/day-1"},
        containerOverrides={
            "environment": [{"name": "MODE", "value": "fast"}, {"name": "EXTRA", "value": "1"}],
            "resourceRequirements": [{"type": "MEMORY", "value": "8192"}],
        },
        retryStrategy={"attempts": 3},
        tags={"team": "science"},
        shareIdentifier="blue",
        schedulingPriorityOverride=50,
    )
    result = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1")
    assert result.code == 0, result.err
    (record,) = load_manifest(store, seed, "d1")["jobs"]
    assert record["job_id"] == job and record["outcome"] == "terminated" and record["status_at_drain"] == "RUNNING"
    assert record["job_definition"] == "proc:1"
    assert record["submission"] == {
        "jobName": "nightly",
        "parameters": {"input": "s3://bucket/day-1"},
        "containerOverrides": {
            "environment": [{"name": "MODE", "value": "fast"}, {"name": "EXTRA", "value": "1"}],
            "resourceRequirements": [{"type": "MEMORY", "value": "8192"}],
        },
        "retryStrategy": {"attempts": 3},
        "tags": {"team": "science"},
        "shareIdentifier": "blue",
        "schedulingPriorityOverride": 50,
    }
    detail = seed.batch.describe_jobs(jobs=[job])["jobs"][0]
    assert (
        detail["status"] == "FAILED" and detail["isTerminated"] and "jobguard" in detail["statusReason"] and "d1" in detail["statusReason"]
    )


def test_new_revision_takes_effect_for_every_value_not_overridden(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    _definitions(seed)
    job = seed.job(
        jobName="nightly",
        jobQueue="work",
        jobDefinition="proc",
        containerOverrides={
            "environment": [{"name": "MODE", "value": "fast"}],
            "resourceRequirements": [{"type": "MEMORY", "value": "8192"}],
        },
    )
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    _deploy(seed)
    result = run("restore", "--store", store, "--deploy-id", "d1")
    assert result.code == 0, result.err
    (replacement,) = jobs_by_original(aws)[job]
    detail = seed.batch.describe_jobs(jobs=[replacement])["jobs"][0]
    environment = {e["name"]: e["value"] for e in detail["container"]["environment"]}
    resources = {r["type"]: r["value"] for r in detail["container"]["resourceRequirements"]}
    assert detail["jobDefinition"].endswith("proc:2")
    assert environment["MODE"] == "fast" and environment["SHARED"] == "v2"  # override kept, the rest is new
    assert environment["AWS_BATCH_JOB_ID"] == replacement  # set by Batch, never replayed
    assert resources == {"VCPU": "2", "MEMORY": "8192"}
    assert detail["container"]["command"] == NEW["command"] and detail["container"]["image"] == "app:2"
    assert detail["parameters"] == {"input": "default2"}
    assert (
        detail["retryStrategy"] == {"attempts": 5}
        and detail["timeout"] == {"attemptDurationSeconds": 900}
        and detail["schedulingPriority"] == 20
    )
    assert detail["tags"]["jobguard:deploy-id"] == "d1" and detail["tags"]["jobguard:original-job-id"] == job
    assert detail["jobQueue"].endswith("/work")


def test_reserved_variables_are_never_recorded(seed: Seeder, store: str, run) -> None:
    _definitions(seed)
    seed.job(jobName="j", jobQueue="work", jobDefinition="proc")
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    document = json.dumps(load_manifest(store, seed, "d1"))
    assert "AWS_BATCH_" not in document


def test_every_active_status_is_drained_and_finished_jobs_are_left(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    _definitions(seed)
    active = {
        status: seed.job(status=status, jobName=status.lower(), jobQueue="work", jobDefinition="proc")
        for status in ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING")
    }
    done = [seed.job(status=s, jobName="done", jobQueue="work", jobDefinition="proc") for s in ("SUCCEEDED", "FAILED")]
    result = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1")
    assert result.code == 0, result.err
    records = {r["job_id"]: r for r in load_manifest(store, seed, "d1")["jobs"]}
    assert set(records) == set(active.values())
    assert {records[i]["status_at_drain"] for i in active.values()} == set(active)
    assert all(aws.batch.jobs[i].status == "FAILED" and aws.batch.jobs[i].terminated for i in active.values())
    assert [aws.batch.jobs[i].status for i in done] == ["SUCCEEDED", "FAILED"] and not any(aws.batch.jobs[i].terminated for i in done)
    assert result.out.count("terminated") >= 5 and "5 jobs: 5 terminated" in result.out


def test_listing_pages_through_next_token(seed: Seeder, store: str, run, aws: SimulatedAWS, monkeypatch) -> None:
    _definitions(seed)
    monkeypatch.setattr("jobguard.adapters.batch.LIST_PAGE", 7)
    ids = {seed.job(jobName=f"j{i}", jobQueue="work", jobDefinition="proc") for i in range(23)}
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    assert {r["job_id"] for r in load_manifest(store, seed, "d1")["jobs"]} == ids
    assert aws.calls["batch:ListJobs"] >= 4 + 4  # 4 pages of RUNNING, one call for each other status


def test_describe_is_batched_by_100(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    _definitions(seed)
    for i in range(230):
        seed.job(jobName=f"j{i}", jobQueue="work", jobDefinition="proc")
    result = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1")
    assert result.code == 0, result.err  # the simulation rejects more than 100 ids a call
    assert len(load_manifest(store, seed, "d1")["jobs"]) == 230
    assert aws.calls["batch:DescribeJobs"] == 3


def test_missing_queue_is_skipped_and_other_queues_untouched(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    _definitions(seed)
    seed.queue("other")
    mine = seed.job(jobName="mine", jobQueue="work", jobDefinition="proc")
    theirs = seed.job(jobName="theirs", jobQueue="other", jobDefinition="proc")
    result = run("drain", "--store", store, "--queue", "not-yet-created", "--queue", "work", "--deploy-id", "d1")
    assert result.code == 0
    assert "queue not-yet-created: does not exist, skipped" in result.err
    assert aws.batch.jobs[mine].terminated and aws.batch.jobs[theirs].status == "RUNNING"


def test_queue_given_by_arn(seed: Seeder, store: str, run) -> None:
    _definitions(seed)
    arn = seed.batch.describe_job_queues(jobQueues=["work"])["jobQueues"][0]["jobQueueArn"]
    seed.job(jobName="j", jobQueue="work", jobDefinition="proc")
    assert run("drain", "--store", store, "--queue", arn, "--deploy-id", "d1").code == 0
    assert load_manifest(store, seed, "d1")["jobs"][0]["queue"] == "work"


def test_array_parent_is_the_unit(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    _definitions(seed)
    parent = seed.job(jobName="sweep", jobQueue="work", jobDefinition="proc", arrayProperties={"size": 4})
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    (record,) = load_manifest(store, seed, "d1")["jobs"]
    assert record["job_id"] == parent and record["submission"]["arrayProperties"] == {"size": 4}
    assert all(aws.batch.jobs[f"{parent}:{i}"].status == "FAILED" for i in range(4))
    assert run("restore", "--store", store, "--deploy-id", "d1").code == 0
    (replacement,) = jobs_by_original(aws)[parent]
    assert len(aws.batch.jobs[replacement].children) == 4


def test_dependencies_are_remapped_dropped_or_held(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    _definitions(seed)
    succeeded = seed.job(status="SUCCEEDED", jobName="prepared", jobQueue="work", jobDefinition="proc")
    failed = seed.job(status="FAILED", jobName="broken", jobQueue="work", jobDefinition="proc")
    first = seed.job(jobName="first", jobQueue="work", jobDefinition="proc", dependsOn=[{"jobId": succeeded}])
    second = seed.job(
        status="PENDING", jobName="second", jobQueue="work", jobDefinition="proc", dependsOn=[{"jobId": first, "type": "SEQUENTIAL"}]
    )
    third = seed.job(
        status="PENDING", jobName="third", jobQueue="work", jobDefinition="proc", dependsOn=[{"jobId": second}, {"jobId": succeeded}]
    )
    held = seed.job(status="PENDING", jobName="held", jobQueue="work", jobDefinition="proc", dependsOn=[{"jobId": failed}])
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    result = run("restore", "--store", store, "--deploy-id", "d1")
    assert result.code == 1  # the held job could not be resubmitted
    replacements = {k: v[0] for k, v in jobs_by_original(aws).items()}
    assert set(replacements) == {first, second, third}
    assert aws.batch.jobs[replacements[first]].request.get("dependsOn") is None  # the succeeded dependency is dropped
    assert aws.batch.jobs[replacements[second]].request["dependsOn"] == [{"jobId": replacements[first], "type": "SEQUENTIAL"}]
    assert aws.batch.jobs[replacements[third]].request["dependsOn"] == [{"jobId": replacements[second]}]
    records = {r["job_id"]: r for r in load_manifest(store, seed, "d1")["jobs"]}
    assert records[held]["outcome"] == "failed" and records[held]["error"] == f"dependency {failed} failed"
    assert f"dependency {failed} failed" in result.err


def test_second_restore_submits_nothing(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    _definitions(seed)
    jobs = [seed.job(jobName=f"j{i}", jobQueue="work", jobDefinition="proc") for i in range(3)]
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    assert run("restore", "--store", store).code == 0
    submitted = aws.calls["batch:SubmitJob"]
    again = run("restore", "--store", store)
    assert again.code == 0 and "nothing to restore" in again.out
    assert run("restore", "--store", store, "--deploy-id", "d1").code == 0
    assert aws.calls["batch:SubmitJob"] == submitted
    assert all(len(jobs_by_original(aws)[j]) == 1 for j in jobs)


def test_restore_without_deploy_id_picks_up_every_manifest_oldest_first(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    _definitions(seed)
    first = seed.job(jobName="first", jobQueue="work", jobDefinition="proc")
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "b-first").code == 0
    second = seed.job(jobName="second", jobQueue="work", jobDefinition="proc")
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "a-second").code == 0
    result = run("restore", "--store", store)
    assert result.code == 0
    assert result.out.index("deploy b-first") < result.out.index("deploy a-second")
    assert set(jobs_by_original(aws)) == {first, second}


def test_drain_again_with_same_deploy_id_continues(seed: Seeder, store: str, run) -> None:
    _definitions(seed)
    first = seed.job(jobName="first", jobQueue="work", jobDefinition="proc")
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    before = load_manifest(store, seed, "d1")["jobs"][0]
    later = seed.job(jobName="later", jobQueue="work", jobDefinition="proc")
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    records = {r["job_id"]: r for r in load_manifest(store, seed, "d1")["jobs"]}
    assert set(records) == {first, later} and records[first] == before


def test_recorded_revision_policy(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    _definitions(seed)
    job = seed.job(jobName="j", jobQueue="work", jobDefinition="proc")
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    _deploy(seed)
    assert run("restore", "--store", store, "--job-definition", "recorded").code == 0
    (replacement,) = jobs_by_original(aws)[job]
    assert aws.batch.jobs[replacement].definition["jobDefinitionArn"].endswith("proc:1")


def test_rejected_submission_is_recorded_and_retried_by_the_next_restore(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    _definitions(seed)
    seed.definition("other", containerProperties=OLD)
    gone = seed.job(jobName="gone", jobQueue="work", jobDefinition="proc")
    fine = seed.job(jobName="fine", jobQueue="work", jobDefinition="other")
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    seed.batch.deregister_job_definition(jobDefinition="proc:1")  # the deploy removed it
    result = run("restore", "--store", store)
    assert result.code == 1 and "job definition proc has no ACTIVE revision" in result.err
    assert set(jobs_by_original(aws)) == {fine}
    records = {r["job_id"]: r for r in load_manifest(store, seed, "d1")["jobs"]}
    assert records[gone]["outcome"] == "failed" and records[gone]["stage"] == "restore"
    _deploy(seed)  # a later deploy brings it back
    assert run("restore", "--store", store).code == 0
    assert set(jobs_by_original(aws)) == {fine, gone}


def test_job_that_finished_before_it_was_stopped_is_not_resubmitted(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    _definitions(seed)
    job = seed.job(jobName="quick", jobQueue="work", jobDefinition="proc")
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1", "--dry-run").code == 0
    aws.batch.set_status(job, "SUCCEEDED")
    # recorded but the terminate never happened: a drain killed in between
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    assert load_manifest(store, seed, "d1")["jobs"] == []


def test_dry_run_changes_nothing(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    _definitions(seed)
    job = seed.job(jobName="j", jobQueue="work", jobDefinition="proc")
    result = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1", "--dry-run")
    assert result.code == 0 and "would drain" in result.out and "j [" in result.out
    assert aws.batch.jobs[job].status == "RUNNING" and aws.calls["batch:TerminateJob"] == 0
    assert run("status", "--store", store).out.startswith("no manifests")


def test_status_shows_replacements_now(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    _definitions(seed)
    job = seed.job(jobName="nightly", jobQueue="work", jobDefinition="proc")
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    assert run("restore", "--store", store).code == 0
    (replacement,) = jobs_by_original(aws)[job]
    aws.batch.set_status(replacement, "RUNNING")
    table = run("status", "--store", store, "--deploy-id", "d1")
    assert table.code == 0
    row = next(line for line in table.out.splitlines() if line.startswith("nightly"))
    assert row.split() == ["nightly", "work", "RUNNING", "resubmitted", replacement, "RUNNING"]
    document = json.loads(run("status", "--store", store, "--json").out)
    assert document[0]["jobs"][0]["replacement_status"] == "RUNNING" and document[0]["counts"]["resubmitted"] == 1


def test_manifest_matches_published_schema(seed: Seeder, store: str, run) -> None:
    _definitions(seed)
    seed.job(jobName="j", jobQueue="work", jobDefinition="proc", containerOverrides={"command": ["x"]}, arrayProperties={"size": 2})
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    assert run("restore", "--store", store).code == 0
    schema = json.loads((Path(__file__).parent.parent / "jobguard" / "manifest.schema.json").read_text())
    jsonschema.validate(load_manifest(store, seed, "d1"), schema)


def test_restore_costs_one_submit_per_job_and_no_lookups(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    _definitions(seed)
    jobs = [seed.job(jobName=f"j{i}", jobQueue="work", jobDefinition="proc") for i in range(5)]
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    before = dict(aws.calls)
    assert run("restore", "--store", store).code == 0
    calls = {k: v - before.get(k, 0) for k, v in aws.calls.items() if v != before.get(k, 0)}
    assert calls["batch:SubmitJob"] == len(jobs)
    assert "batch:ListJobs" not in calls  # the find-by-tag lookup is only for jobs an earlier run may have sent
    assert calls["batch:DescribeJobs"] == 1  # the originals' status, in one call
