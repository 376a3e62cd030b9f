"""The Terraform module's IAM policy, as Terraform renders it for each example, evaluated
(tests/iam_eval.py) against the calls jobguard really makes, as the simulation recorded them
(`jobguard.sim.recording.Call`: action, resource ARN, condition keys, whether a GetObject found no key).

The calls: every call of the session (tests/conftest.py collects them in RECORDED_CALLS, and runs
this file last), plus a representative workload this file runs itself, so that it never depends
on what ran before: drain (--plan, --freeze, --grace, notifications to SNS, events to a bus),
restore and status, on the S3 store and on the DynamoDB store, signed with a KMS HMAC key, the
first drain into an empty store (GetObject of a manifest that does not exist yet) included.

Names: the workload uses the examples' own queue, job definition, bucket, prefix, table, bus and
topic (and the account and region of the simulation are the example's); every other call is
mapped onto them (a queue onto the example's queue, a bucket and prefix onto its store, ...), and
every signing key onto the example's (KMS key ids are random), so that what is checked is the
shape of each call: which action, on which kind of resource, with which condition keys.

Which example a call is checked against: Batch and KMS calls against both (each example's role
does all of jobguard's Batch work); S3, EventBridge and SNS calls against examples/s3 (its store,
its bus, its topic); DynamoDB calls against examples/dynamodb. sts:GetCallerIdentity needs no
permission. A call of any other service fails the test.

Asserted: every call allowed; every GetObject of a missing key would be answered 404, not 403
(ListBucket granted on the bucket with no s3:prefix condition); and nothing granted that no call
needs: each (statement, action, resource) of each policy is exercised by at least one call,
except the grants in WITHOUT_A_CALL, each with the reason it is kept.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from jobguard.sim import Seeder, SimulatedAWS
from jobguard.sim.recording import Call

from . import shared
from . import terraform_support as tf
from .conftest import FAST, RECORDED_CALLS, create_table, replacements_of, signing_key
from .iam_eval import allowed, grants, s3_get_object_allowed_when_missing

TERRAFORM_MISSING = tf.terraform_available()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(TERRAFORM_MISSING is not None, reason=f"Terraform cannot run here: {TERRAFORM_MISSING}"),
    pytest.mark.timeout(1500),  # the first use of the rendered policies applies the examples (a few minutes)
]

EXAMPLES = ("s3", "dynamodb")
DEFINITIONS = {"s3": "rnaseq", "dynamodb": "nightly-load"}  # the examples' job definitions
SERVICES = {"s3": {"batch", "kms", "s3", "events", "sns"}, "dynamodb": {"batch", "kms", "dynamodb"}}
NO_PERMISSION = {"sts:GetCallerIdentity"}  # answered for any credentials: no policy grants it

# Grants kept although no recorded call exercises them: (example, statement id, action) -> why.
WITHOUT_A_CALL = {
    ("dynamodb", "UseTheStoreKey", "kms:Decrypt"): "DynamoDB decrypts the table's items with the customer managed key "
    "on jobguard's behalf, with jobguard's permissions (kms:ViaService = dynamodb): a call DynamoDB makes, which the "
    "simulation (moto encrypts nothing) cannot record",
    ("dynamodb", "UseTheStoreKey", "kms:GenerateDataKey"): "DynamoDB encrypts the items jobguard writes with the customer "
    "managed key on jobguard's behalf (kms:ViaService = dynamodb): a call DynamoDB makes, which the simulation cannot record",
}


@dataclass(frozen=True)
class Example:
    """One example's rendered policy and the names it grants."""

    name: str
    policy: dict[str, Any]
    queue_arn: str
    definition: str
    signing_key_arn: str
    bucket: str = ""
    prefix: str = ""
    table_arn: str = ""
    bus_arn: str = ""
    topic_arn: str = ""

    @property
    def queue(self) -> str:
        return self.queue_arn.rsplit("/", 1)[-1]

    @property
    def store(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.bucket else f"dynamodb://{self.table_arn.rsplit('/', 1)[-1]}"


@pytest.fixture(scope="module")
def examples() -> dict[str, Example]:
    """The examples as tests/terraform_support.py applies them into moto, with their rendered policies."""
    found = {}
    lifecycles = tf.lifecycles()
    for name in EXAMPLES:
        lifecycle = lifecycles[name]
        lifecycle.check()
        outputs = lifecycle.outputs or {}
        prefix = f"arn:aws:batch:{tf.REGION}:{tf.MOTO_ACCOUNT}"
        fields: dict[str, Any] = {
            "queue_arn": f"{prefix}:job-queue/{outputs['queues']}",
            "definition": DEFINITIONS[name],
            "signing_key_arn": str(outputs["signing_key"]).removeprefix("kms:"),
        }
        store = str(outputs["store"])
        if store.startswith("s3://"):
            fields["bucket"], _, fields["prefix"] = store.removeprefix("s3://").partition("/")
            fields["bus_arn"] = outputs["event_bus"]
            (fields["topic_arn"],) = tf.LIFECYCLES[name][1]["notification_topic_arns"]
        else:
            fields["table_arn"] = f"arn:aws:dynamodb:{tf.REGION}:{tf.MOTO_ACCOUNT}:table/{store.removeprefix('dynamodb://')}"
        found[name] = Example(name, lifecycle.policy(), **fields)
    return found


# ---------------------------------------------------------------------------------------------
# The representative workload
# ---------------------------------------------------------------------------------------------
_WORKLOADS: dict[str, list[Call]] = {}


@pytest.fixture
def workload(request: pytest.FixtureRequest, examples: dict[str, Example]) -> dict[str, list[Call]]:
    """The calls of the workload on each example's store (run once, on first use)."""
    for name in EXAMPLES:
        if name not in _WORKLOADS:
            _WORKLOADS[name] = _run_workload(
                examples[name], request.getfixturevalue("aws"), request.getfixturevalue("run"), request.getfixturevalue("workdir")
            )
    return _WORKLOADS


def _run_workload(example: Example, aws: SimulatedAWS, run: Any, workdir: Path) -> list[Call]:
    """drain, a deploy, restore and status with the example's names, as its role would run them."""
    aws.reset()  # an empty account: the first drain meets an empty store
    seed = Seeder(aws)
    queue, definition = example.queue, example.definition
    environment = seed.compute_environment(f"{queue}-ce")
    seed.queue(queue, compute_environment=environment)
    seed.definition(definition)
    running = [seed.job(jobName=f"running-{i}", jobQueue=queue, jobDefinition=f"{definition}:1") for i in range(2)]
    seed.job(status="RUNNABLE", jobName="queued", jobQueue=queue, jobDefinition=f"{definition}:1")
    seed.job(status="PENDING", jobName="dependent", jobQueue=queue, jobDefinition=f"{definition}:1", dependsOn=[{"jobId": running[0]}])
    seed.job(status="RUNNING", jobName="array", jobQueue=queue, jobDefinition=f"{definition}:1", arrayProperties={"size": 2})
    if example.bucket:
        # Created here, without the module's bucket policy: moto refuses every object request on a
        # bucket whose policy has a conditional Deny (the module's TLS-only statement).
        seed.client("s3").create_bucket(Bucket=example.bucket)
    else:
        create_table(seed, example.table_arn.rsplit("/", 1)[-1])
    config = workdir / f"{example.name}.yml"
    config.write_text(f"{FAST}signing-key: kms:{signing_key(seed)}\n")
    extra: list[str] = ["--config", str(config)]
    if example.bus_arn:
        seed.client("events").create_event_bus(Name=example.bus_arn.rsplit("/", 1)[-1])
        extra += ["--event-bus", example.bus_arn.rsplit("/", 1)[-1]]
    if example.topic_arn:
        topic = seed.client("sns").create_topic(Name=example.topic_arn.rsplit(":", 1)[-1])["TopicArn"]
        assert topic == example.topic_arn
        extra += ["--notify", f"sns:{topic}"]
    plan = {
        "format_version": "1.2",
        "resource_changes": [
            {
                "address": "aws_batch_compute_environment.work",
                "type": "aws_batch_compute_environment",
                "change": {
                    "actions": ["create", "delete"],
                    "before": {"arn": environment, "compute_environment_name": f"{queue}-ce"},
                    "after": {"compute_environment_name": f"{queue}-ce"},
                },
            }
        ],
    }
    (workdir / f"{example.name}-plan.json").write_text(json.dumps(plan))
    common = ["--queue", queue, "--store", example.store, "--deploy-id", "1234", *extra]

    drained = run("drain", "--plan", f"{example.name}-plan.json", "--freeze", "--grace", "1s", *common)
    assert drained.code == 0, drained.out + drained.err
    assert f"queue {queue}: at risk" in drained.out and "4 jobs" in drained.out, drained.out  # the queued one stays (precision)
    assert f"queue {queue}: 1 queued jobs left queued" in drained.out, drained.out
    assert any(c.missing_key for c in aws.recorded) or not example.bucket, "the first drain read no missing key"
    seed.definition(definition)  # the deploy: a new revision
    restored = run("restore", *common)
    assert restored.code == 0, restored.out + restored.err
    assert len(replacements_of(aws)) == 4
    for arguments in (["--store", example.store, *extra[:2]], ["--store", example.store, *extra[:2], "--all", "--json"]):
        status = run("status", *arguments)
        assert status.code == 0, status.out + status.err
    services = {c.action.split(":")[0] for c in aws.recorded}
    assert services >= {"batch", "kms", "sts"} | ({"s3", "events", "sns"} if example.bucket else {"dynamodb"}), services
    return list(aws.recorded)


# ---------------------------------------------------------------------------------------------
# Calls onto an example's names
# ---------------------------------------------------------------------------------------------
_KINDS = re.compile(r"(?:(?P<prefix>.*?)/)?(?P<rest>(?:leases|open)/.+)")
_NAMED = re.compile(r"(?:(?P<prefix>.*)/)?(?P<rest>[^/]+)")


def _split_key(key: str) -> tuple[str, str]:
    """An S3 store key into (store prefix, the part jobguard names): PREFIX/ID.json, PREFIX/KIND/NAME.json."""
    match = _KINDS.fullmatch(key) or _NAMED.fullmatch(key)
    assert match is not None, key
    return match["prefix"] or "", match["rest"]


def as_example(call: Call, example: Example) -> Call:
    """The call as the example's role would make it: the same action on the example's resource of that kind."""
    service = call.action.split(":", 1)[0]
    resource, context = call.resource, dict(call.context)
    if service == "batch":
        resource = re.sub(r"(:job-queue/).+$", rf"\g<1>{example.queue}", resource)
        resource = re.sub(r"(:job-definition/)[^:]+", rf"\g<1>{example.definition}", resource)
    elif service == "kms":
        resource = example.signing_key_arn
    elif service == "s3" and resource.startswith("arn:aws:s3:::"):
        _, _, key = resource.removeprefix("arn:aws:s3:::").partition("/")
        if call.action == "s3:ListBucket":
            resource = f"arn:aws:s3:::{example.bucket}"
            if "s3:prefix" in context:
                listed = context["s3:prefix"]
                tail = next((t for t in ("leases/", "open/") if listed.endswith("/" + t) or listed == t), "")
                context["s3:prefix"] = f"{example.prefix}/{tail}"
        else:
            resource = f"arn:aws:s3:::{example.bucket}/{example.prefix}/{_split_key(key)[1]}"
    elif service == "dynamodb":
        resource = example.table_arn
    elif service == "events":
        resource = example.bus_arn
    elif service == "sns":
        resource = example.topic_arn
    return replace(call, resource=resource, context=context)


def calls_for(example: Example, calls: Iterable[Call]) -> list[Call]:
    """The calls checked against this example, on its names; duplicates removed."""
    found = {}
    for call in calls:
        if call.action.split(":", 1)[0] in SERVICES[example.name]:
            mapped = as_example(call, example)
            found[(mapped.action, mapped.resource, json.dumps(mapped.context, sort_keys=True), mapped.missing_key)] = mapped
    return list(found.values())


@functools.lru_cache(maxsize=1)
def _session_calls() -> tuple[Call, ...]:
    """This process's calls and, in a parallel run, every other worker's (this file runs last)."""
    return (*RECORDED_CALLS, *(c for calls in shared.from_other_workers("calls", timeout=1200) for c in calls))


def _every_call(workload: dict[str, list[Call]]) -> list[Call]:
    return [*_session_calls(), *(c for calls in workload.values() for c in calls)]


# ---------------------------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------------------------
def test_every_call_is_of_a_service_an_example_grants(workload: dict[str, list[Call]]) -> None:
    services = set().union(*SERVICES.values())
    stray = sorted({c.action for c in _every_call(workload) if c.action.split(":")[0] not in services and c.action not in NO_PERMISSION})
    assert not stray, f"jobguard calls what neither example's policy can grant: {stray}"


def refused(policy: dict[str, Any], calls: Iterable[Call]) -> list[Call]:
    """The calls the policy does not allow."""
    return [c for c in calls if not allowed([policy], c.action, c.resource, c.context)]


def answered_403(policy: dict[str, Any], bucket: str, calls: Iterable[Call]) -> list[Call]:
    """The GetObject calls of missing keys that real S3 would answer 403 (not 404) under the policy."""
    return [
        c
        for c in calls
        if c.missing_key and not s3_get_object_allowed_when_missing([policy], f"arn:aws:s3:::{bucket}", c.resource, c.context)
    ]


def unused(policy: dict[str, Any], calls: list[Call]) -> dict[tuple[str, str], set[str]]:
    """(statement id, action) -> the resources it is granted on that no call needs (conditions included)."""
    found: dict[tuple[str, str], set[str]] = {}
    for statement in policy["Statement"]:
        if statement.get("Effect") != "Allow":
            continue
        alone = {k: v for k, v in statement.items() if k not in ("Sid", "Action", "Resource")}
        for sid, action, resource in grants([{"Statement": [statement]}]):
            single = {"Statement": [{**alone, "Effect": "Allow", "Action": action, "Resource": resource}]}
            if not any(c.action.lower() == action.lower() and allowed([single], c.action, c.resource, c.context) for c in calls):
                found.setdefault((sid, action), set()).add(resource)
    return found


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_call_is_allowed(name: str, examples: dict[str, Example], workload: dict[str, list[Call]]) -> None:
    example = examples[name]
    calls = calls_for(example, _every_call(workload))
    assert len(calls) >= 10
    denied = refused(example.policy, calls)
    assert not denied, "refused by the rendered policy:\n" + "\n".join(map(str, denied[:30]))


def test_a_missing_manifest_reads_as_absent_on_real_s3(examples: dict[str, Example], workload: dict[str, list[Call]]) -> None:
    """S3 answers GetObject of a missing key with 404 only to a caller that may also ListBucket the
    bucket with no s3:prefix in the request; else 403, and the first drain would fail."""
    example = examples["s3"]
    missing = [c for c in calls_for(example, workload["s3"]) if c.missing_key]
    keys = {c.resource.rsplit(f"{example.prefix}/", 1)[-1] for c in missing}
    assert "1234.json" in keys and "open/1234.json" in keys, keys  # the first drain's manifest and open-deploy index
    calls = calls_for(example, _every_call(workload))
    assert {c.action for c in calls if c.missing_key} == {"s3:GetObject"}
    assert not answered_403(example.policy, example.bucket, calls)


@pytest.mark.parametrize("name", EXAMPLES)
def test_nothing_is_granted_that_no_call_needs(name: str, examples: dict[str, Example], workload: dict[str, list[Call]]) -> None:
    example = examples[name]
    found = unused(example.policy, calls_for(example, _every_call(workload)))
    kept = {(sid, action) for (example_name, sid, action) in WITHOUT_A_CALL if example_name == name}
    assert set(found) == kept, f"granted, but no call needs it: {json.dumps({f'{s} {a}': sorted(r) for (s, a), r in found.items()})}"


def test_the_checks_catch_what_they_are_for(examples: dict[str, Example], workload: dict[str, list[Call]]) -> None:
    """The same checks on altered copies of the s3 example's policy: each alteration is caught."""
    example = examples["s3"]
    calls = calls_for(example, _every_call(workload))

    def altered(sid: str, change: Any) -> dict[str, Any]:
        policy: dict[str, Any] = json.loads(json.dumps(example.policy))
        (statement,) = [s for s in policy["Statement"] if s.get("Sid") == sid]
        change(statement)
        return policy

    # ListBucket under an s3:prefix condition (as the module had it): the first drain's reads answer 403.
    prefixed = altered("ListManifests", lambda s: s.update(Condition={"StringLike": {"s3:prefix": [f"{example.prefix}/*"]}}))
    assert not refused(prefixed, [c for c in calls if c.action == "s3:ListBucket"])  # listing itself still works
    assert answered_403(prefixed, example.bucket, calls)
    # A grant taken away: the calls that need it are refused.
    narrower = altered("SubmitToTheseQueuesAndDefinitions", lambda s: s.update(Resource=[r for r in s["Resource"] if ":job-queue/" in r]))
    assert {c.action for c in refused(narrower, calls)} == {"batch:SubmitJob"}
    # A grant no call needs (the bare job-definition name, DescribeComputeEnvironments): reported.
    bare = f"arn:aws:batch:{tf.REGION}:{tf.MOTO_ACCOUNT}:job-definition/{example.definition}"
    wider = altered("SubmitToTheseQueuesAndDefinitions", lambda s: s.update(Resource=[*s["Resource"], bare]))
    assert unused(wider, calls) == {("SubmitToTheseQueuesAndDefinitions", "batch:SubmitJob"): {bare}}
    extra = altered("ReadBatch", lambda s: s.update(Action=[*s["Action"], "batch:DescribeComputeEnvironments"]))
    assert unused(extra, calls) == {("ReadBatch", "batch:DescribeComputeEnvironments"): {"*"}}
