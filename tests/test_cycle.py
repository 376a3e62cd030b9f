"""The whole cycle as a user runs it: drain before the deploy, restore after, status."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import referencing

from jobguard.sim import STOP_ACTIONS, Seeder, SimulatedAWS

from .conftest import configure, load_manifest, overlapping, records, replacements_of

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
    seed.queue("shared", fair_share=True)
    job = seed.job(
        jobName="nightly",
        jobQueue="shared",
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
    result = run("drain", "--store", store, "--queue", "shared", "--deploy-id", "d1")
    assert result.code == 0, result.err
    (record,) = load_manifest(store, seed, "d1")["jobs"]
    assert record["job_id"] == job and record["outcome"] == "terminated" and record["status_at_drain"] == "RUNNING"
    assert record["job_definition"] == "proc:1"
    assert record["submission"] == {
        "jobName": "nightly",
        "parameters": {"input": "s3://bucket/day-1"},
        "containerOverrides": {
            "environment": [{"name": "EXTRA", "value": "1"}, {"name": "MODE", "value": "fast"}],
            "resourceRequirements": [{"type": "MEMORY", "value": "8192"}],
        },
        "retryStrategy": {"attempts": 3},
        "tags": {"team": "science"},
        "shareIdentifier": "blue",
        "schedulingPriorityOverride": 50,
    }
    detail = seed.batch.describe_jobs(jobs=[job])["jobs"][0]  # drain waited for it to end
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
    (replacement,) = replacements_of(aws)[job]
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
        detail["retryStrategy"] == {"attempts": 5, "evaluateOnExit": []}
        and detail["timeout"] == {"attemptDurationSeconds": 900}
        and detail["schedulingPriority"] == 20
    )
    assert detail["tags"]["jobguard"] == f"d=d1 o={job} l={job} n=1"  # one tag: the job keeps 49 of its own
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
        for status in ("SUBMITTED", "RUNNABLE", "STARTING", "RUNNING")
    }
    done = [seed.job(status=s, jobName="done", jobQueue="work", jobDefinition="proc") for s in ("SUCCEEDED", "FAILED")]
    active["PENDING"] = seed.job(
        status="PENDING", jobName="pending", jobQueue="work", jobDefinition="proc", dependsOn=[{"jobId": active["RUNNING"]}]
    )
    result = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1")
    assert result.code == 0, result.err
    stored = records(store, seed, "d1")
    assert set(stored) == set(active.values())
    assert {stored[i]["status_at_drain"] for i in active.values()} == set(active)
    assert {stored[i]["outcome"] for i in active.values()} == {"terminated"}  # drain waited until each had ended
    assert all(aws.batch.jobs[i].status == "FAILED" for i in active.values())
    assert all(aws.batch.jobs[active[s]].terminated for s in ("STARTING", "RUNNING"))
    assert all(aws.batch.jobs[active[s]].cancelled for s in ("SUBMITTED", "RUNNABLE"))
    assert [aws.batch.jobs[i].status for i in done] == ["SUCCEEDED", "FAILED"] and not any(aws.batch.jobs[i].terminated for i in done)
    assert "5 jobs: 5 terminated" in result.out


def test_listing_pages_through_next_token(seed: Seeder, store: str, run, aws: SimulatedAWS, monkeypatch) -> None:
    _definitions(seed)
    monkeypatch.setattr("jobguard.adapters.batch.LIST_PAGE", 7)
    ids = {seed.job(jobName=f"j{i}", jobQueue="work", jobDefinition="proc") for i in range(23)}
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    assert set(records(store, seed, "d1")) == ids
    assert aws.calls["batch:ListJobs"] >= 2 * (4 + 4)  # two passes: 4 pages of RUNNING and one call for each other status


@pytest.mark.slow
def test_describe_is_batched_by_100(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    _definitions(seed)
    for i in range(230):
        seed.job(jobName=f"j{i}", jobQueue="work", jobDefinition="proc")
    result = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1")
    assert result.code == 0, result.err  # the simulation rejects more than 100 ids a call
    assert len(load_manifest(store, seed, "d1")["jobs"]) == 230
    assert aws.calls["batch:DescribeJobs"] >= 6  # 3 to record them, then 3 per look while waiting for them to stop


def test_misspelt_queue_stops_the_drain_before_anything_is_stopped(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    _definitions(seed)
    seed.queue("other")
    mine = seed.job(jobName="mine", jobQueue="work", jobDefinition="proc")
    theirs = seed.job(jobName="theirs", jobQueue="other", jobDefinition="proc")
    result = run("drain", "--store", store, "--queue", "wrok", "--queue", "work", "--deploy-id", "d1")
    assert result.code == 2 and "queue wrok: does not exist" in result.err and "nothing was drained" in result.err
    assert aws.batch.jobs[mine].status == aws.batch.jobs[theirs].status == "RUNNING"
    assert aws.stop_calls == 0
    assert run("status", "--store", store, "--all").out.startswith("no deploys")


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
    (replacement,) = replacements_of(aws)[parent]
    assert len(aws.batch.jobs[replacement].children) == 4


def test_dependencies_are_remapped_dropped_or_held(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    _definitions(seed)
    succeeded = seed.job(status="SUCCEEDED", jobName="prepared", jobQueue="work", jobDefinition="proc")
    first = seed.job(jobName="first", jobQueue="work", jobDefinition="proc", dependsOn=[{"jobId": succeeded}])
    second = seed.job(
        status="PENDING", jobName="second", jobQueue="work", jobDefinition="proc", dependsOn=[{"jobId": first, "type": "SEQUENTIAL"}]
    )
    third = seed.job(
        status="PENDING", jobName="third", jobQueue="work", jobDefinition="proc", dependsOn=[{"jobId": second}, {"jobId": succeeded}]
    )
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    result = run("restore", "--store", store, "--deploy-id", "d1")
    assert result.code == 0, result.err
    replacements = {k: v[0] for k, v in replacements_of(aws).items()}
    assert set(replacements) == {first, second, third}
    assert aws.batch.jobs[replacements[first]].request.get("dependsOn") is None  # the succeeded dependency is dropped
    assert aws.batch.jobs[replacements[second]].request["dependsOn"] == [{"jobId": replacements[first], "type": "SEQUENTIAL"}]
    assert aws.batch.jobs[replacements[third]].request["dependsOn"] == [{"jobId": replacements[second]}]
    assert overlapping(aws) == []


def test_a_failed_dependency_holds_its_dependent(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    _definitions(seed)
    running = seed.job(jobName="upstream", jobQueue="work", jobDefinition="proc")
    seed.queue("other")
    held = seed.job(status="PENDING", jobName="held", jobQueue="work", jobDefinition="proc", dependsOn=[{"jobId": running}])
    configure(Path.cwd(), "policies:\n  - job-name: upstream\n    action: wait\n")
    drained = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1")
    assert drained.code == 1  # policy wait: upstream still running after the (empty) grace period
    assert records(store, seed, "d1")[running]["outcome"] == "kept"
    aws.batch.finish(running, "FAILED")  # the kept job fails on its own
    result = run("restore", "--store", store, "--deploy-id", "d1")
    assert result.code == 1 and f"dependency {running} failed" in result.err
    assert records(store, seed, "d1")[held]["outcome"] == "failed" and replacements_of(aws) == {}


def test_second_restore_submits_nothing(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    _definitions(seed)
    jobs = [seed.job(jobName=f"j{i}", jobQueue="work", jobDefinition="proc") for i in range(3)]
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    assert run("restore", "--store", store, "--deploy-id", "d1").code == 0
    submitted = aws.calls["batch:SubmitJob"]
    again = run("restore", "--store", store)
    assert again.code == 0 and "nothing to restore" in again.out
    assert run("restore", "--store", store, "--deploy-id", "d1").code == 0
    assert aws.calls["batch:SubmitJob"] == submitted
    assert all(len(replacements_of(aws)[j]) == 1 for j in jobs)


def test_restore_leaves_a_deploy_in_its_apply_alone(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    _definitions(seed)
    job = seed.job(jobName="first", jobQueue="work", jobDefinition="proc")
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    someone = run("restore", "--store", store)  # by hand, while d1 is still in its apply
    assert someone.code == 0 and "queue work: left alone: deploy d1 holds it" in someone.out
    assert replacements_of(aws) == {}
    assert run("restore", "--store", store, "--deploy-id", "d1").code == 0
    assert set(replacements_of(aws)) == {job}


@pytest.mark.slow
def test_a_dead_deploy_is_adopted_by_the_next_and_restored_oldest_first(seed: Seeder, store: str, run, aws: SimulatedAWS, workdir) -> None:
    _definitions(seed)
    configure(workdir, "lease-ttl: 2")  # the longest apply expected, for this test
    first = seed.job(jobName="first", jobQueue="work", jobDefinition="proc")
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "b-first").code == 0
    # b-first's pipeline died in its apply: no restore. The next push drains the same queue.
    second = seed.job(jobName="second", jobQueue="work", jobDefinition="proc")
    drained = run("drain", "--store", store, "--queue", "work", "--deploy-id", "a-second")
    assert drained.code == 0, drained.err
    assert "the lease of deploy b-first expired; deploy a-second takes it over" in drained.err
    assert set(records(store, seed, "a-second")) == {second}  # one owner per job: `first` stays b-first's
    result = run("restore", "--store", store, "--deploy-id", "a-second")
    assert result.code == 0, result.err
    assert result.out.index("deploy b-first") < result.out.index("deploy a-second")
    assert {k: len(v) for k, v in replacements_of(aws).items()} == {first: 1, second: 1}


def test_drain_again_with_same_deploy_id_continues(seed: Seeder, store: str, run) -> None:
    _definitions(seed)
    first = seed.job(jobName="first", jobQueue="work", jobDefinition="proc")
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    before = load_manifest(store, seed, "d1")["jobs"][0]
    later = seed.job(jobName="later", jobQueue="work", jobDefinition="proc")
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    stored = records(store, seed, "d1")
    assert set(stored) == {first, later} and stored[first] == before


def test_recorded_revision_policy(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    _definitions(seed)
    job = seed.job(jobName="j", jobQueue="work", jobDefinition="proc")
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    _deploy(seed)
    assert run("restore", "--store", store, "--deploy-id", "d1", "--job-definition", "recorded").code == 0
    (replacement,) = replacements_of(aws)[job]
    assert aws.batch.jobs[replacement].definition_arn.endswith("proc:1")


def test_rejected_submission_is_recorded_and_retried_by_the_next_restore(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    _definitions(seed)
    seed.definition("other", containerProperties=OLD)
    gone = seed.job(jobName="gone", jobQueue="work", jobDefinition="proc")
    fine = seed.job(jobName="fine", jobQueue="work", jobDefinition="other")
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    seed.batch.deregister_job_definition(jobDefinition="proc:1")  # the deploy removed it
    result = run("restore", "--store", store, "--deploy-id", "d1")
    assert result.code == 1 and "job definition proc has no ACTIVE revision" in result.err
    assert set(replacements_of(aws)) == {fine}
    stored = records(store, seed, "d1")
    assert stored[gone]["outcome"] == "failed" and stored[gone]["stage"] == "restore"
    _deploy(seed)  # a later deploy brings it back
    assert run("restore", "--store", store, "--deploy-id", "d1").code == 0
    assert set(replacements_of(aws)) == {fine, gone}


@pytest.mark.slow
def test_job_that_finished_while_stopping_is_finished_not_resubmitted(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    _definitions(seed)
    aws.batch.timing = aws.batch.timing.__class__(stop_seconds=5.0)
    quick = seed.job(jobName="quick", jobQueue="work", jobDefinition="proc")
    slow = seed.job(jobName="slow", jobQueue="work", jobDefinition="proc")

    def finish_quick(action: str, count: int) -> None:
        if action in STOP_ACTIONS and aws.batch.stopping(quick):
            aws.batch.finish(quick)  # its work ended before SIGTERM took effect

    aws.after = finish_quick
    result = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1")
    assert result.code == 0, result.err
    stored = records(store, seed, "d1")
    assert stored[quick]["outcome"] == "finished" and stored[slow]["outcome"] == "terminated"
    assert run("restore", "--store", store, "--deploy-id", "d1").code == 0
    assert set(replacements_of(aws)) == {slow}


def test_dry_run_changes_nothing(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    _definitions(seed)
    job = seed.job(jobName="j", jobQueue="work", jobDefinition="proc")
    result = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1", "--dry-run")
    assert result.code == 0 and "would drain" in result.out and job in result.out
    assert aws.batch.jobs[job].status == "RUNNING" and aws.stop_calls == 0
    assert run("status", "--store", store, "--all").out.startswith("no deploys")


def test_status_shows_replacements_now(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    _definitions(seed)
    job = seed.job(jobName="nightly", jobQueue="work", jobDefinition="proc")
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    _deploy(seed)
    assert run("restore", "--store", store, "--deploy-id", "d1").code == 0
    (replacement,) = replacements_of(aws)[job]
    aws.batch.set_status(replacement, "RUNNING")
    table = run("status", "--store", store, "--deploy-id", "d1")
    assert table.code == 0
    row = next(line for line in table.out.splitlines() if line.startswith("nightly"))
    assert row.split() == ["nightly", "work", "RUNNING", *row.split()[3:5], "proc:1", "->", "proc:2", "resubmitted", replacement, "RUNNING"]
    document = json.loads(run("status", "--store", store, "--deploy-id", "d1", "--json").out)
    assert document["deploys"][0]["jobs"][0]["replacement_status"] == "RUNNING" and document["deploys"][0]["counts"]["resubmitted"] == 1
    assert document["replacements"] == {job: replacement}


def test_manifest_matches_published_schema(seed: Seeder, store: str, run) -> None:
    _definitions(seed)
    seed.job(jobName="j", jobQueue="work", jobDefinition="proc", containerOverrides={"command": ["x"]}, arrayProperties={"size": 2})
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    assert run("restore", "--store", store, "--deploy-id", "d1").code == 0
    folder = Path(__file__).parent.parent / "jobguard" / "domain" / "schemas"
    schemas = {p.name: json.loads(p.read_text()) for p in folder.glob("*.schema.json")}
    registry = referencing.Registry().with_resources((s["$id"], referencing.Resource.from_contents(s)) for s in schemas.values())
    jsonschema.Draft202012Validator(schemas["manifest.schema.json"], registry=registry).validate(load_manifest(store, seed, "d1"))


def test_restore_costs_one_submit_per_job_and_no_lookups(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    _definitions(seed)
    jobs = [seed.job(jobName=f"j{i}", jobQueue="work", jobDefinition="proc") for i in range(5)]
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    before = dict(aws.calls)
    assert run("restore", "--store", store, "--deploy-id", "d1").code == 0
    calls = {k: v - before.get(k, 0) for k, v in aws.calls.items() if v != before.get(k, 0)}
    assert calls["batch:SubmitJob"] == len(jobs)
    # the deploy window's sweep: the queue's jobs created since drain began, and its FAILED jobs (one page each);
    # the lookup by mark is only for jobs an earlier run may have sent
    assert calls["batch:ListJobs"] == 2
    assert calls["batch:DescribeJobs"] == 1  # the originals' status, in one call
