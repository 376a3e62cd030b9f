"""A restore of every job type, through the CLI against the simulation, submits exactly what was recorded.

Each corpus case (tests/corpus/) is submitted to the simulated Batch as its user submitted it,
drained, given a new job-definition revision, and restored. The replacement's SubmitJob must be
one botocore accepts, on the new revision, with exactly the recorded overrides plus jobguard's
mark and the lineage variables, and every container of the replacement must see those variables.
Then the edges: a job with 50 (or 47) tags of its own, a queue that gained or lost a fair-share
policy across the deploy, values that equalled the old revision's, and partial array resubmission.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
from botocore.validate import validate_parameters

from jobguard.checkpoint import Checkpoint, array_index
from jobguard.domain.tags import ARRAY_INDEXES_ENV, DEPLOY_ENV, LINEAGE_ENV, PREVIOUS_ENV, RESUME_ENV
from jobguard.sim import Seeder, SimulatedAWS, Timing

from .conftest import configure, records, replacements_of
from .test_submission_corpus import CASES, SUBMIT_JOB, containers, environment, registration

Json = dict[str, Any]
JOBGUARD_VARIABLES = (LINEAGE_ENV, PREVIOUS_ENV, DEPLOY_ENV, RESUME_ENV)
# Every corpus case is a unit jobguard drains, except an array child (its parent is the unit).
RESTORABLE = [name for name in CASES if name != "04-array-child"]


@pytest.fixture
def store(workdir: Path) -> str:
    """The file store: what these tests check does not depend on the store kind."""
    return f"file://{workdir}/manifests"


@pytest.fixture
def instant(aws: SimulatedAWS) -> SimulatedAWS:
    """Stops take effect at once: these tests look at requests, not at timing."""
    aws.batch.timing = Timing.instant()
    return aws


def drain_and_restore(run: Any, store: str, queue: str = "work", deploy_id: str = "d1") -> tuple[Any, Any]:
    drained = run("drain", "--store", store, "--queue", queue, "--deploy-id", deploy_id)
    assert drained.code == 0, drained.err
    return drained, run("restore", "--store", store, "--deploy-id", deploy_id)


def without_jobguard(request: Json) -> Json:
    """A SubmitJob request without what restore adds: the `jobguard` tag and JOBGUARD_* variables
    (and the container or node-range overrides that held nothing else)."""
    request = copy.deepcopy(request)
    tags = request.get("tags") or {}
    tags.pop("jobguard", None)
    return dict(_pruned(request))


def _pruned(value: Any) -> Any:
    if isinstance(value, dict):
        kept = {}
        for key, member in value.items():
            if key in ("environment", "env") and isinstance(member, list):
                member = [e for e in member if not str(e.get("name", "")).startswith("JOBGUARD_")]
            member = _pruned(member)
            if member not in ([], {}):
                kept[key] = member
        return kept
    if isinstance(value, list):
        items = [_pruned(item) for item in value]
        return [i for i in items if not (isinstance(i, dict) and set(i) <= {"name", "targetNodes"})]
    return value


def replacement_of(aws: SimulatedAWS, original: str) -> str:
    (replacement,) = replacements_of(aws)[original]
    return replacement


def detail_of(aws: SimulatedAWS, job_id: str) -> Json:
    with aws.batch.lock:
        return aws.batch.detail(aws.batch.jobs[job_id])


def _register(seed: Seeder, definition: Json) -> str:
    request = registration(definition)
    return str(seed.batch.register_job_definition(**request)["jobDefinitionArn"])


@pytest.mark.slow
@pytest.mark.parametrize("name", RESTORABLE)
def test_restore_submits_exactly_the_recorded_overrides_on_the_new_revision(
    name: str, seed: Seeder, store: str, run: Any, instant: SimulatedAWS
) -> None:
    aws = instant
    case = CASES[name]
    expected = copy.deepcopy(case["expected"])
    seed.queue("work", fair_share="shareIdentifier" in expected)
    definition_name = case["definition"]["jobDefinitionName"]
    _register(seed, case["definition"])
    status = "RUNNING"
    if expected.get("dependsOn"):  # a dependency still running elsewhere: the replacement waits for it too
        seed.queue("other")
        seed.definition("upstream")
        upstream = seed.job(jobName="upstream", jobQueue="other", jobDefinition="upstream")
        expected["dependsOn"] = [{**d, "jobId": upstream} for d in expected["dependsOn"]]
        status = "PENDING"
    original = seed.job(status=status, **expected, jobQueue="work", jobDefinition=definition_name)

    drained = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1")
    assert drained.code == 0, drained.err
    record = records(store, seed, "d1")[original]
    assert record["submission"] == expected  # recorded as submitted: no default, no merged value
    _register(seed, case.get("new_definition") or case["definition"])  # the deploy
    restored = run("restore", "--store", store, "--deploy-id", "d1")
    assert restored.code == 0, restored.err

    replacement = replacement_of(aws, original)
    request = aws.batch.jobs[replacement].request
    validate_parameters(request, SUBMIT_JOB)  # botocore accepts it (the client checked it on the way too)
    assert request["jobDefinition"] == f"{definition_name}:2" and request["jobQueue"] == "work"
    assert without_jobguard(request) == {**expected, "jobQueue": "work", "jobDefinition": f"{definition_name}:2"}
    assert request["tags"]["jobguard"] == f"d=d1 o={original} l={original} n=1"
    variables = {LINEAGE_ENV: original, PREVIOUS_ENV: original, DEPLOY_ENV: "d1", RESUME_ENV: "1"}
    missing = [
        where for where, c, field in containers(detail_of(aws, replacement)) if not variables.items() <= environment(c, field).items()
    ]
    line = next(line for line in restored.out.splitlines() if f"[{original}]" in line)
    if name == "12-ecs-unnamed-among-several":  # no override can address it: said so in the job's line
        assert missing == ["job ecs 1"] and "not set in unnamed container #2" in line
    else:
        assert missing == []
    assert records(store, seed, "d1")[original]["replacement_job_definition"] == f"{definition_name}:2"


def _proc(seed: Seeder, environment: list[Json] | None = None) -> None:
    seed.definition(
        "rnaseq",
        containerProperties={
            "image": "rnaseq:1",
            "command": ["align"],
            "environment": environment or [{"name": "MODEL", "value": "grch38-v1"}],
            "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "1024"}],
        },
    )


def test_a_job_with_50_tags_keeps_them_and_is_found_again_by_its_variables(
    seed: Seeder, store: str, run: Any, instant: SimulatedAWS
) -> None:
    aws = instant
    seed.queue("work")
    _proc(seed)
    tags = {f"tag{i:02d}": f"value {i}" for i in range(50)}
    original = seed.job(jobName="tagged", jobQueue="work", jobDefinition="rnaseq", tags=tags)
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    _proc(seed)

    before = aws.calls["batch:SubmitJob"]

    def lose_first_reply(action: str, count: int) -> str | None:
        return "lost-reply" if action == "batch:SubmitJob" and count == before + 1 else None

    aws.fault = lose_first_reply
    restored = run("restore", "--store", store, "--deploy-id", "d1")
    assert restored.code == 0, restored.err
    assert aws.faults["batch:SubmitJob"] == 1
    assert aws.calls["batch:SubmitJob"] == before + 1  # the lost reply's job was found by its variables, not sent again
    replacement = replacement_of(aws, original)
    assert records(store, seed, "d1")[original]["replacement_id"] == replacement
    request = aws.batch.jobs[replacement].request
    assert request["tags"] == tags  # all 50 of its own, no room for the mark
    assert environment(request["containerOverrides"], "environment")[PREVIOUS_ENV] == original
    line = next(line for line in restored.out.splitlines() if f"[{original}]" in line)
    assert "has 50 tags of its own, the most SubmitJob allows" in line and "JOBGUARD_* variables only" in line


def test_a_job_with_47_tags_keeps_all_of_them_and_the_mark(seed: Seeder, store: str, run: Any, instant: SimulatedAWS) -> None:
    aws = instant
    seed.queue("work")
    _proc(seed)
    tags = {f"tag{i:02d}": f"value {i}" for i in range(47)}
    original = seed.job(jobName="tagged", jobQueue="work", jobDefinition="rnaseq", tags=tags)
    _, restored = drain_and_restore(run, store)
    assert restored.code == 0, restored.err
    replacement = replacement_of(aws, original)
    assert detail_of(aws, replacement)["tags"] == {**tags, "jobguard": f"d=d1 o={original} l={original} n=1"}


def _recreate_queue(seed: Seeder, name: str, fair_share: bool) -> None:
    """The deploy replaced the queue (same name), with or without a fair-share scheduling policy."""
    (queue,) = seed.batch.describe_job_queues(jobQueues=[name])["jobQueues"]
    seed.batch.update_job_queue(jobQueue=name, state="DISABLED")
    seed.batch.delete_job_queue(jobQueue=name)
    seed.queue(name, fair_share=fair_share, compute_environment=queue["computeEnvironmentOrder"][0]["computeEnvironment"])


def test_a_queue_that_gained_a_fair_share_policy(seed: Seeder, store: str, run: Any, instant: SimulatedAWS, workdir: Path) -> None:
    aws = instant
    seed.queue("work")
    _proc(seed)
    original = seed.job(jobName="plain", jobQueue="work", jobDefinition="rnaseq")
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    _recreate_queue(seed, "work", fair_share=True)
    held = run("restore", "--store", store, "--deploy-id", "d1")
    assert held.code == 1 and "queue work now has a fair-share policy and the job had no share identifier; set share-identifier" in held.err
    assert replacements_of(aws) == {} and records(store, seed, "d1")[original]["outcome"] == "failed"
    configure(workdir, "share-identifier: deploys")
    restored = run("restore", "--store", store, "--deploy-id", "d1")
    assert restored.code == 0, restored.err
    assert aws.batch.jobs[replacement_of(aws, original)].request["shareIdentifier"] == "deploys"
    assert "share identifier deploys (queue work now has a fair-share policy)" in restored.out


def test_a_queue_that_lost_its_fair_share_policy(seed: Seeder, store: str, run: Any, instant: SimulatedAWS) -> None:
    aws = instant
    seed.queue("work", fair_share=True)
    _proc(seed)
    original = seed.job(jobName="shared", jobQueue="work", jobDefinition="rnaseq", shareIdentifier="blue")
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    assert records(store, seed, "d1")[original]["submission"]["shareIdentifier"] == "blue"
    _recreate_queue(seed, "work", fair_share=False)
    restored = run("restore", "--store", store, "--deploy-id", "d1")
    assert restored.code == 0, restored.err
    assert "shareIdentifier" not in aws.batch.jobs[replacement_of(aws, original)].request
    assert "share identifier blue dropped (queue work no longer has a fair-share policy)" in restored.out


def test_a_value_that_equalled_the_old_revisions_is_named_in_the_line_and_the_summary(
    seed: Seeder, store: str, run: Any, instant: SimulatedAWS, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    aws = instant
    seed.queue("work")
    _proc(seed)
    # MODEL given explicitly, with rnaseq:1's own value: it cannot be told from no override at all.
    original = seed.job(
        jobName="align-s1",
        jobQueue="work",
        jobDefinition="rnaseq",
        containerOverrides={"environment": [{"name": "MODEL", "value": "grch38-v1"}, {"name": "SAMPLE", "value": "s1"}]},
    )
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    _proc(seed, environment=[{"name": "MODEL", "value": "grch38-v2"}])
    summary = workdir / "summary.md"
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    restored = run("restore", "--store", store, "--deploy-id", "d1")
    assert restored.code == 0, restored.err
    note = "took rnaseq:2's environment MODEL (the job had rnaseq:1's values)"
    line = next(line for line in restored.out.splitlines() if f"[{original}]" in line)
    assert note in line
    row = next(row for row in summary.read_text().splitlines() if "align-s1" in row)
    assert note in row and "rnaseq:1 → rnaseq:2" in row
    environment_now = environment(detail_of(aws, replacement_of(aws, original))["container"], "environment")
    assert environment_now["MODEL"] == "grch38-v2" and environment_now["SAMPLE"] == "s1"


def _array(seed: Seeder, size: int, succeeded: list[int], aws: SimulatedAWS) -> str:
    seed.queue("work")
    _proc(seed)
    parent = seed.job(jobName="sweep", jobQueue="work", jobDefinition="rnaseq", arrayProperties={"size": size})
    for index in succeeded:
        aws.batch.set_status(f"{parent}:{index}", "SUCCEEDED")
    return parent


def test_arrays_unfinished_resubmits_only_the_children_that_had_not_succeeded(
    seed: Seeder, store: str, run: Any, instant: SimulatedAWS, workdir: Path
) -> None:
    aws = instant
    configure(workdir, "arrays: unfinished")
    parent = _array(seed, 5, [0, 2], aws)
    _, restored = drain_and_restore(run, store)
    assert restored.code == 0, restored.err
    assert records(store, seed, "d1")[parent]["array_succeeded"] == [0, 2]
    replacement = replacement_of(aws, parent)
    request = aws.batch.jobs[replacement].request
    assert request["arrayProperties"] == {"size": 3} and len(aws.batch.jobs[replacement].children) == 3
    assert environment(request["containerOverrides"], "environment")[ARRAY_INDEXES_ENV] == "1,3,4"
    child = environment(detail_of(aws, f"{replacement}:1")["container"], "environment")
    assert child[ARRAY_INDEXES_ENV] == "1,3,4" and child["AWS_BATCH_JOB_ARRAY_INDEX"] == "1" and child[LINEAGE_ENV] == parent
    assert "3 of 5 array children resubmitted (2 had succeeded)" in restored.out


def test_arrays_unfinished_with_one_child_left_submits_a_single_job(
    seed: Seeder, store: str, run: Any, instant: SimulatedAWS, workdir: Path
) -> None:
    aws = instant
    configure(workdir, "arrays: unfinished")
    parent = _array(seed, 3, [0, 1], aws)
    _, restored = drain_and_restore(run, store)
    assert restored.code == 0, restored.err
    request = aws.batch.jobs[replacement_of(aws, parent)].request
    assert "arrayProperties" not in request  # Batch takes no array of one
    assert environment(request["containerOverrides"], "environment")[ARRAY_INDEXES_ENV] == "2"


def test_arrays_paired_by_n_to_n_are_resubmitted_whole(seed: Seeder, store: str, run: Any, instant: SimulatedAWS, workdir: Path) -> None:
    aws = instant
    configure(workdir, "arrays: unfinished")
    parent = _array(seed, 4, [1], aws)
    paired = seed.job(
        status="PENDING",
        jobName="pairs",
        jobQueue="work",
        jobDefinition="rnaseq",
        arrayProperties={"size": 4},
        dependsOn=[{"jobId": parent, "type": "N_TO_N"}],
    )
    _, restored = drain_and_restore(run, store)
    assert restored.code == 0, restored.err
    for job in (parent, paired):  # child i of one must still pair with child i of the other
        request = aws.batch.jobs[replacement_of(aws, job)].request
        assert request["arrayProperties"] == {"size": 4} and ARRAY_INDEXES_ENV not in str(request)
    assert "whole array resubmitted: an N_TO_N dependency pairs its children" in restored.out


def test_arrays_whole_by_default_resubmits_every_child(seed: Seeder, store: str, run: Any, instant: SimulatedAWS) -> None:
    aws = instant
    parent = _array(seed, 4, [1], aws)
    _, restored = drain_and_restore(run, store)
    assert restored.code == 0, restored.err
    request = aws.batch.jobs[replacement_of(aws, parent)].request
    assert request["arrayProperties"] == {"size": 4} and ARRAY_INDEXES_ENV not in str(request)


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({}, None),
        ({"AWS_BATCH_JOB_ARRAY_INDEX": "3"}, 3),  # an original child
        ({"AWS_BATCH_JOB_ARRAY_INDEX": "1", ARRAY_INDEXES_ENV: "1,3,4"}, 3),  # a child of a partial resubmission
        ({ARRAY_INDEXES_ENV: "4"}, 4),  # the only child left, resubmitted as a single job
    ],
)
def test_checkpoint_maps_array_indexes_back_to_the_original_ones(
    variables: dict[str, str], expected: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_BATCH_JOB_ARRAY_INDEX", ARRAY_INDEXES_ENV):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert array_index() == expected


def test_a_resubmitted_child_resumes_its_original_childs_checkpoint(
    seed: Seeder, aws: SimulatedAWS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Original child 3 of array P saves; the replacement array's child 1 (indexes 1,3,4) loads it."""
    s3 = seed.client("s3")
    s3.create_bucket(Bucket="checkpoints")
    for name in ("AWS_BATCH_JOB_ARRAY_INDEX", ARRAY_INDEXES_ENV, LINEAGE_ENV, "AWS_BATCH_JOB_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_BATCH_JOB_ID", "P:3")
    monkeypatch.setenv("AWS_BATCH_JOB_ARRAY_INDEX", "3")
    Checkpoint(bucket="checkpoints", client=s3, install=False).save({"next": 42})
    monkeypatch.setenv("AWS_BATCH_JOB_ID", "R:1")
    monkeypatch.setenv("AWS_BATCH_JOB_ARRAY_INDEX", "1")
    monkeypatch.setenv(ARRAY_INDEXES_ENV, "1,3,4")
    monkeypatch.setenv(LINEAGE_ENV, "P")
    resumed = Checkpoint(bucket="checkpoints", client=s3, install=False)
    assert resumed.key == "checkpoints/P/index-3/checkpoint" and resumed.load() == {"next": 42}
    assert os.environ[ARRAY_INDEXES_ENV] == "1,3,4"


def test_the_example_job_resumes_through_the_checkpoint_helper(
    seed: Seeder, aws: SimulatedAWS, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """examples/jobs/checkpointed_sum.py, run as a replacement child: it starts where original child 3 stopped."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "checkpointed_sum", Path(__file__).parent.parent / "examples" / "jobs" / "checkpointed_sum.py"
    )
    assert spec and spec.loader
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    seed.client("s3").create_bucket(Bucket="checkpoints")
    monkeypatch.setenv("JOBGUARD_CHECKPOINT_BUCKET", "checkpoints")
    monkeypatch.setenv(LINEAGE_ENV, "P")
    monkeypatch.setenv("AWS_BATCH_JOB_ARRAY_INDEX", "3")
    monkeypatch.delenv(ARRAY_INDEXES_ENV, raising=False)
    Checkpoint(install=False).save({"next": 4, "sum": sum(example.f(i) for i in range(4))})
    monkeypatch.setenv("AWS_BATCH_JOB_ARRAY_INDEX", "1")
    monkeypatch.setenv(ARRAY_INDEXES_ENV, "1,3,4")
    assert example.main(6, 0) == 0
    out = capsys.readouterr().out
    assert "starting at step 4" in out and f"result {sum(example.f(i) for i in range(6))}" in out


# -- the simulation rejects container overrides real Batch rejects -----------------------------------


def _ecs_definition(seed: Seeder, names: list[str | None]) -> None:
    containers_ = [{"image": "app", "essential": True, **({"name": n} if n else {})} for n in names]
    for container in containers_:
        container["resourceRequirements"] = [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "512"}]
    seed.definition("task", ecsProperties={"taskProperties": [{"containers": containers_}]})


@pytest.mark.parametrize(
    ("names", "override", "problem"),
    [
        (["app", "sidecar"], {"command": ["x"]}, "without a name needs exactly one container"),
        (["app", None], {"command": ["x"]}, "without a name needs exactly one container"),
        (["app", "sidecar"], {"name": "nope", "command": ["x"]}, "container nope is not a container of the job definition"),
    ],
)
def test_the_simulation_rejects_an_ecs_override_no_container_takes(
    names: list[str | None], override: Json, problem: str, seed: Seeder
) -> None:
    seed.queue("work")
    _ecs_definition(seed, names)
    with pytest.raises(seed.batch.exceptions.ClientException, match=problem):
        seed.batch.submit_job(
            jobName="j", jobQueue="work", jobDefinition="task", ecsPropertiesOverride={"taskProperties": [{"containers": [override]}]}
        )


def test_the_simulation_accepts_an_unnamed_override_of_an_only_container_and_rejects_unknown_eks_names(seed: Seeder) -> None:
    seed.queue("work")
    _ecs_definition(seed, [None])
    seed.batch.submit_job(
        jobName="j", jobQueue="work", jobDefinition="task", ecsPropertiesOverride={"taskProperties": [{"containers": [{"command": ["x"]}]}]}
    )
    seed.definition("pod", eksProperties={"podProperties": {"containers": [{"name": "main", "image": "app"}]}})
    with pytest.raises(seed.batch.exceptions.ClientException, match="container init is not a container"):
        seed.batch.submit_job(
            jobName="j",
            jobQueue="work",
            jobDefinition="pod",
            eksPropertiesOverride={"podProperties": {"initContainers": [{"name": "init", "image": "x"}]}},
        )
