"""A corpus of real-shaped (JobDetail, JobDefinition, expected SubmitJob) cases for every job type.

Each file in tests/corpus/ holds a DescribeJobs JobDetail, the job's own revision as
DescribeJobDefinitions returns it, and the SubmitJob request (without jobQueue/jobDefinition)
that reproduces the job on a new revision; some also hold a new revision and the names
`definition_changes` must report. botocore's service model is the judge of every shape: the
corpus documents must be valid DescribeJobs / DescribeJobDefinitions answers, every request must
pass SubmitJob's parameter validation, and the simulation's merge must round-trip with recovery.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.model import Shape
from botocore.validate import ParamValidator, validate_parameters

from jobguard.domain.submission import (
    definition_changes,
    job_type,
    recover_submission,
    recovery_notes,
    with_environment,
)
from jobguard.sim.merge import described_definition, merged_detail

Json = dict[str, Any]
CORPUS = Path(__file__).parent / "corpus"
CASES: dict[str, Json] = {path.stem: json.loads(path.read_text()) for path in sorted(CORPUS.glob("*.json"))}
MODEL = botocore.session.get_session().get_service_model("batch")


def _shape(operation: str, direction: str, list_member: str | None = None) -> Any:
    """A shape of the batch service model: an operation's input or output, or the items of one of its lists."""
    shape: Any = getattr(MODEL.operation_model(operation), direction)
    return shape.members[list_member].member if list_member else shape


SUBMIT_JOB = _shape("SubmitJob", "input_shape")
REGISTER = _shape("RegisterJobDefinition", "input_shape")
JOB_DETAIL = _shape("DescribeJobs", "output_shape", "jobs")
JOB_DEFINITION = _shape("DescribeJobDefinitions", "output_shape", "jobDefinitions")
LINEAGE = {"JOBGUARD_LINEAGE_ID": "7d1c0e4a-lineage", "JOBGUARD_PREVIOUS_JOB_ID": "6f0f3c3e-previous"}
QUEUE = "arn:aws:batch:eu-west-1:123456789012:job-queue/restored"


def submittable(request: Json, definition: Json) -> Json:
    """`request` as restore sends it, checked by botocore (raises ParamValidationError)."""
    params = {**request, "jobQueue": "restored", "jobDefinition": definition["jobDefinitionArn"]}
    validate_parameters(params, SUBMIT_JOB)
    return params


def assert_shaped(document: Json, shape: Shape) -> None:
    """`document` has only members `shape` knows, of the right types (a job not yet started has no startedAt)."""
    report = ParamValidator().validate(document, shape)
    errors = [e for e in report._errors if not (e[0] == "missing required field" and e[2]["required_name"] == "startedAt")]
    assert not errors, [report._format_error(e) for e in errors]


def registration(definition: Json) -> Json:
    """The RegisterJobDefinition request behind a described revision."""
    request = {name: copy.deepcopy(definition[name]) for name in REGISTER.members if name in definition}
    validate_parameters(request, REGISTER)
    return request


def simulated(definition: Json) -> Json:
    return described_definition(registration(definition), definition["jobDefinitionArn"], definition["revision"], definition["status"])


def containers(detail: Json) -> Iterator[tuple[str, Json, str]]:
    """Every container of a JobDetail: (where, properties, environment field)."""
    scopes = [("job", detail)] + [
        (f"nodes {r['targetNodes']}", r) for r in (detail.get("nodeProperties") or {}).get("nodeRangeProperties") or []
    ]
    for where, scope in scopes:
        if scope.get("container") is not None:
            yield where, scope["container"], "environment"
        for task in (scope.get("ecsProperties") or {}).get("taskProperties") or []:
            for index, container in enumerate(task["containers"]):
                yield f"{where} ecs {container.get('name', index)}", container, "environment"
        pod = (scope.get("eksProperties") or {}).get("podProperties") or {}
        for section in ("containers", "initContainers"):
            for container in pod.get(section) or []:
                yield f"{where} {section} {container.get('name')}", container, "env"


def environment(container: Json, field: str) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get(field) or []}


def expected_type(definition: Json) -> str:
    if definition["type"] == "multinode":
        return "multinode"
    return "ecs" if definition.get("ecsProperties") else "eks" if definition.get("eksProperties") else "container"


def test_the_corpus_has_every_job_type_and_problem() -> None:
    kinds = {expected_type(case["definition"]) for case in CASES.values()}
    assert kinds == {"container", "multinode", "ecs", "eks"}
    platforms = {p for case in CASES.values() for p in case["definition"].get("platformCapabilities", [])}
    assert {"EC2", "FARGATE", "EKS"} <= platforms
    assert len(CASES) >= 17


@pytest.mark.parametrize("name", CASES)
def test_corpus_documents_are_shaped_like_real_answers(name: str) -> None:
    case = CASES[name]
    assert_shaped(case["job"], JOB_DETAIL)
    for field in ("definition", "new_definition"):
        if field in case:
            assert_shaped(case[field], JOB_DEFINITION)
            registration(case[field])


@pytest.mark.parametrize("name", CASES)
def test_recovers_the_submission(name: str) -> None:
    case = CASES[name]
    recovered = recover_submission(case["job"], case["definition"])
    assert recovered == case["expected"]
    submittable(recovered, case["definition"])
    assert job_type(case["job"]) == expected_type(case["definition"])


@pytest.mark.parametrize("name", CASES)
def test_simulated_definition_is_shown_as_aws_shows_it(name: str) -> None:
    definition = CASES[name]["definition"]
    assert simulated(definition) == definition


@pytest.mark.parametrize("name", CASES)
def test_round_trip_through_the_simulation(name: str) -> None:
    """What the simulation shows for a submission, recovery turns back into that submission."""
    case = CASES[name]
    definition = simulated(case["definition"])
    request = submittable(case["expected"], definition)
    detail = merged_detail(definition, request, case["job"]["jobId"], "restored", case.get("array_index"))
    assert_shaped({**detail, "jobQueue": QUEUE, "status": "RUNNABLE"}, JOB_DETAIL)
    assert recover_submission(detail, definition) == case["expected"]
    for where, container, field in containers(detail):
        assert environment(container, field)["AWS_BATCH_JOB_ID"] == case["job"]["jobId"], where


@pytest.mark.parametrize("name", CASES)
def test_with_environment_reaches_every_container(name: str) -> None:
    case = CASES[name]
    definition = simulated(case.get("new_definition") or case["definition"])
    before = copy.deepcopy(case["expected"])
    request, note = with_environment(case["expected"], definition, LINEAGE)
    assert case["expected"] == before  # the recorded submission is not touched
    detail = merged_detail(definition, submittable(request, definition), "new-job", "restored", None)
    missing = [where for where, container, field in containers(detail) if not LINEAGE.items() <= environment(container, field).items()]
    if name == "12-ecs-unnamed-among-several":
        assert missing == ["job ecs 1"] and note and "unnamed container #2" in note
    else:
        assert not missing and note is None
    assert with_environment(case["expected"], definition, {}) == (case["expected"], None)


def test_with_environment_replaces_a_variable_of_the_same_name() -> None:
    case = CASES["01-container-overrides"]
    first, _ = with_environment(case["expected"], case["definition"], {"JOBGUARD_LINEAGE_ID": "old", "THREADS": "2"})
    again, _ = with_environment(first, case["definition"], LINEAGE)
    names = [e["name"] for e in again["containerOverrides"]["environment"]]
    assert sorted(names) == sorted(set(names)) == ["JOBGUARD_LINEAGE_ID", "JOBGUARD_PREVIOUS_JOB_ID", "THREADS"]
    assert {e["name"]: e["value"] for e in again["containerOverrides"]["environment"]}["JOBGUARD_LINEAGE_ID"] == LINEAGE[
        "JOBGUARD_LINEAGE_ID"
    ]


def test_with_environment_merges_with_existing_node_range_overrides() -> None:
    case = CASES["07-multinode-container"]
    request, note = with_environment(case["expected"], case["new_definition"], LINEAGE)
    ranges = {r["targetNodes"]: r for r in request["nodeOverrides"]["nodePropertyOverrides"]}
    assert note is None and sorted(ranges) == ["0:0", "1:"]
    assert ranges["0:0"]["containerOverrides"]["command"] == ["mpirun-main", "--case", "/data/wing-12"]
    assert ranges["1:"]["containerOverrides"]["instanceType"] == "c5n.18xlarge"


def test_with_environment_refuses_reserved_names() -> None:
    case = CASES["01-container-overrides"]
    with pytest.raises(ValueError, match="AWS_BATCH_JOB_ID"):
        with_environment(case["expected"], case["definition"], {"AWS_BATCH_JOB_ID": "x"})


def test_with_environment_without_containers_leaves_the_request_alone() -> None:
    definition = {"jobDefinitionName": "odd", "jobDefinitionArn": "arn:aws:batch:eu-west-1:1:job-definition/odd:1", "type": "container"}
    request = {"jobName": "odd"}
    assert with_environment(request, definition, LINEAGE) == (
        request,
        f"{', '.join(LINEAGE)} not set: {definition['jobDefinitionArn']} has no container an override can address",
    )


@pytest.mark.parametrize("name", [name for name, case in CASES.items() if "changes" in case])
def test_definition_changes_names_what_the_new_revision_changes_unasked(name: str) -> None:
    case = CASES[name]
    changes = definition_changes(case["definition"], case["new_definition"], case["expected"])
    assert sorted(changes) == sorted(case["changes"])


def test_definition_changes_is_empty_between_equal_revisions() -> None:
    for case in CASES.values():
        assert definition_changes(case["definition"], copy.deepcopy(case["definition"]), case["expected"]) == []


def test_an_override_equal_to_the_old_value_shows_as_a_change() -> None:
    """MODEL was submitted as grch38-v1, rnaseq:1's own value: rnaseq:2's grch38-v2 wins, and that is said."""
    case = CASES["01-container-overrides"]
    assert "environment MODEL" in definition_changes(case["definition"], case["new_definition"], case["expected"])
    assert "environment THREADS" not in definition_changes(case["definition"], case["new_definition"], case["expected"])


def test_an_override_on_an_unnamed_container_among_several_is_reported_not_sent() -> None:
    case = copy.deepcopy(CASES["12-ecs-unnamed-among-several"])
    assert recovery_notes(case["job"], case["definition"]) == []
    sidecar = case["job"]["ecsProperties"]["taskProperties"][0]["containers"][1]
    sidecar["environment"].append({"name": "FLB_LOG_LEVEL", "value": "debug"})
    assert recover_submission(case["job"], case["definition"]) == case["expected"]
    (note,) = recovery_notes(case["job"], case["definition"])
    assert "unnamed container #2 / environment FLB_LOG_LEVEL" in note


def test_reserved_variables_are_never_recorded() -> None:
    for case in CASES.values():
        assert "AWS_BATCH" not in json.dumps(recover_submission(case["job"], case["definition"]))
