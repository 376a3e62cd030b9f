"""End to end on real Terraform plans: a small Batch stack (tests/e2e/stack) applied by the real
`terraform` and hashicorp/aws provider into the simulated AWS, running jobs seeded on its queues,
then one deploy per kind of change, as the workflow runs it:

    terraform plan -out + terraform show -json  ->  jobguard drain --plan  ->  terraform apply PLANFILE  ->  jobguard restore

Each case asserts which queues were drained (exactly those, and why, in drain's output) and that
every drained job came back exactly once, on the same queue, on the job definition's newest
revision, never beside its original. One stack evolves through the cases in order (one `init`,
one first apply); a case whose predecessor broke the stack is skipped, saying so.

The provider's own calls are answered by the simulation as Batch answers them (the service-linked
role when no service_role is given, updatePolicy, in-place compute environment updates: see
jobguard/sim/batch.py), so the override written here only points endpoints at it.

Slow; skipped, saying why, only when terraform or the provider mirror is missing.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from jobguard.sim import Seeder, SimulatedAWS, Timing

from . import terraform_support as tf
from .conftest import RECORDED_CALLS, configure, overlapping, records, replacements_of

STACK = Path(__file__).parent / "e2e" / "stack"
TERRAFORM_MISSING = tf.terraform_available()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(TERRAFORM_MISSING is not None, reason=f"Terraform cannot run here: {TERRAFORM_MISSING}"),
]

BUCKET = "jobguard-e2e"
DEFINITIONS = {"ec2": "e2e-ec2-work", "fargate": "e2e-fargate-work"}


@dataclass(frozen=True)
class Case:
    """One kind of change: the variables it sets, the queues it must drain and why."""

    name: str
    change: dict[str, Any]
    drained: dict[str, str]  # queue -> what drain must say of it ("queue Q: at risk: ...")
    gone: frozenset[str] = frozenset()  # drained queues the apply deletes: their jobs cannot come back
    moved: dict[str, str] = field(default_factory=dict)  # drained queue -> its new name: its jobs come back there
    started_only: frozenset[str] = frozenset()  # drained queues that only lose instances: their queued job stays


# In this order, one stack evolving: the new revisions first, so every later restore must take them.
CASES = [
    Case("new-job-definition-revision", {"release": "2"}, {}),
    Case("unrelated-resources-only", {"unrelated_value": "2"}, {}),
    Case("scaling-only", {"ec2_max_vcpus": 32}, {}),
    Case("fargate-subnet-change", {"fargate_subnet_ids": "SECOND_SUBNET"}, {}),  # AWS replaces no running task
    Case(
        "in-place-infrastructure-update",
        {"ec2_instance_types": ["m5.large", "c5.large"]},
        {"e2e-ec2": "aws_batch_compute_environment.ec2 gets an infrastructure update that terminates running jobs"},
        started_only=frozenset({"e2e-ec2"}),
    ),
    Case(
        "compute-environment-replaced",
        {"replaceable_instance_types": ["c5.large"]},  # BEST_FIT cannot update in place: create_before_destroy replacement
        {"e2e-replaceable": "aws_batch_compute_environment.replaceable will be replaced"},
        started_only=frozenset({"e2e-replaceable"}),
    ),
    Case(
        "queue-renamed",
        {"renamed_queue_name": "e2e-new-name"},
        {"e2e-old-name": "aws_batch_job_queue.renamed will be replaced and renamed e2e-new-name"},
        moved={"e2e-old-name": "e2e-new-name"},
    ),
    Case(
        "queue-deleted",
        {"keep_doomed_queue": False},
        {"e2e-doomed": "aws_batch_job_queue.doomed[0] will be deleted"},
        gone=frozenset({"e2e-doomed"}),
    ),
]


@dataclass
class World:
    """The stack as it is now, the seeded jobs, and what each case took."""

    aws: SimulatedAWS
    folder: Path
    variables: dict[str, Any]
    signing_key: str
    jobs: dict[str, list[str]] = field(default_factory=dict)  # queue -> seeded job ids
    drained: set[str] = field(default_factory=set)  # seeded jobs drained by the cases so far
    broken: str | None = None  # the case after which the stack can no longer be trusted
    seconds: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def queues(self) -> list[str]:
        """The stack's queues now (what the module's queue_names would list)."""
        names = ["e2e-replaceable", "e2e-ec2", "e2e-fargate", str(self.variables["renamed_queue_name"])]
        return names + (["e2e-doomed"] if self.variables["keep_doomed_queue"] else [])

    def timed(self, case: str, phase: str, started: float) -> None:
        self.seconds.setdefault(case, {})[phase] = round(time.monotonic() - started, 1)


@pytest.fixture(scope="module")
def world(simulation: SimulatedAWS, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[World]:
    """The stack applied into the session's simulated AWS, with running and queued jobs on every queue."""
    simulation.reset(Timing())
    with pytest.MonkeyPatch.context() as patch:
        for key, value in simulation.env().items():
            patch.setenv(key, value)
        started = time.monotonic()
        folder = tmp_path_factory.mktemp("e2e") / "stack"
        shutil.copytree(STACK, folder, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*", "override.tf"))
        prerequisites = tf.seed_prerequisites(simulation.endpoint, oidc_provider=False)
        ec2 = tf.boto3_client("ec2", simulation.endpoint)
        (subnet,) = prerequisites["subnet_ids"]
        vpc = ec2.describe_subnets(SubnetIds=[subnet])["Subnets"][0]["VpcId"]
        second = ec2.create_subnet(VpcId=vpc, CidrBlock="10.20.2.0/24")["Subnet"]["SubnetId"]
        variables: dict[str, Any] = {
            "subnet_ids": [subnet],
            "fargate_subnet_ids": [subnet],
            "security_group_ids": prerequisites["security_group_ids"],
            "instance_profile_arn": prerequisites["instance_profile_arn"],
            "execution_role_arn": prerequisites["execution_role_arn"],
            "renamed_queue_name": "e2e-old-name",
            "keep_doomed_queue": True,
        }
        tf.write_override(folder, simulation.endpoint)  # endpoints only: no moto workaround left in it
        tf.init(folder)
        seed = Seeder(simulation)
        seed.client("s3").create_bucket(Bucket=BUCKET)
        key = seed.client("kms").create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["Arn"]
        world = World(simulation, folder, variables, key)
        world.timed("setup", "init", started)
        started = time.monotonic()
        tf.apply(folder, variables)
        world.timed("setup", "apply", started)
        world.variables["second_subnet"] = second
        for queue in world.queues:
            kind = "ec2" if queue in ("e2e-replaceable", "e2e-ec2") else "fargate"
            world.jobs[queue] = [
                seed.job(
                    status=status,
                    jobName=f"{queue}-{index}",
                    jobQueue=queue,
                    jobDefinition=f"{DEFINITIONS[kind]}:1",
                    containerOverrides={"environment": [{"name": "SAMPLE", "value": f"{queue}-{index}"}]},
                )
                for index, status in enumerate(("RUNNING", "RUNNING", "RUNNABLE"))
            ]
        yield world
        RECORDED_CALLS.extend(simulation.recorded)  # for tests/test_policy.py, as the aws fixture does
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        if reporter is not None and capture is not None:
            with capture.global_and_fixture_disabled():  # past the output capture, onto the terminal
                reporter.write_line("")
                reporter.write_line("test_deploy_e2e seconds per case: " + json.dumps(world.seconds))


def _stack_variables(world: World) -> dict[str, Any]:
    return {k: v for k, v in world.variables.items() if k != "second_subnet"}


@pytest.mark.timeout(900)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_deploy(case: Case, world: World, workdir: Path, run: Any) -> None:
    if world.broken:
        pytest.skip(f"the stack broke in case {world.broken}")
    aws = world.aws
    store = f"s3://{BUCKET}/e2e"
    deploy = f"e2e-{case.name}"
    configure(workdir, f"signing-key: kms:{world.signing_key}")
    change = {k: ([world.variables["second_subnet"]] if v == "SECOND_SUBNET" else v) for k, v in case.change.items()}
    configured = world.queues
    queue_flags = [arg for queue in configured for arg in ("--queue", queue)]
    before = replacements_of(aws)
    active_before = {j.job_id for j in aws.batch.active_jobs()}

    world.broken = case.name  # until the apply below has gone through
    started = time.monotonic()
    plan = tf.plan_json(world.folder, {**_stack_variables(world), **change})
    (workdir / "plan.json").write_text(json.dumps(plan))
    world.timed(case.name, "plan", started)
    _check_plan_is_the_case(case, plan)

    started = time.monotonic()
    drained = run("drain", "--plan", "plan.json", *queue_flags, "--store", store, "--deploy-id", deploy)
    world.timed(case.name, "drain", started)
    print(f"$ jobguard drain --plan plan.json {' '.join(queue_flags)}\n{drained.out}{drained.err}")
    assert drained.code == 0, drained.out + drained.err
    for queue, why in case.drained.items():
        assert f"queue {queue}: at risk: {why}" in drained.out, drained.out
    for queue in set(configured) - set(case.drained):
        assert f"queue {queue}: not at risk" in drained.out, drained.out
    if not case.drained:
        assert "the plan puts none of the configured queues at risk: nothing to drain" in drained.out
    stored = records(store, Seeder(aws), deploy) if case.drained else {}
    assert {r["queue"] for r in stored.values()} == set(case.drained)
    # Seeded RUNNING, RUNNING, RUNNABLE: where only instances go, the queued one stays in the queue.
    expected = {job for queue in case.drained for job in world.jobs[queue][: 2 if queue in case.started_only else 3]}
    assert set(stored) == expected, "drain recorded other jobs than the seeded jobs of the queues at risk"
    terminated = {j for j in active_before if aws.batch.jobs[j].stop_kind}
    assert terminated == expected, f"jobs stopped: {sorted(terminated)}"

    started = time.monotonic()
    tf.terraform(world.folder, "apply", "-input=false", "-auto-approve", "jobguard.tfplan")
    world.timed(case.name, "apply", started)
    world.variables.update(change)
    world.broken = None

    started = time.monotonic()
    restored = run("restore", *queue_flags, "--store", store, "--deploy-id", deploy)
    world.timed(case.name, "restore", started)
    print(f"$ jobguard restore {' '.join(queue_flags)}\n{restored.out}{restored.err}")

    after = replacements_of(aws)
    new = {original: ids for original, ids in after.items() if original not in before}
    comeback = expected - {j for q in case.gone for j in world.jobs[q]}
    assert set(new) == comeback, f"replaced: {sorted(new)}; expected {sorted(comeback)}"
    for original, ids in new.items():
        assert len(ids) == 1, f"{original} came back {len(ids)} times: {ids}"
        _check_replacement(world, original, ids[0], case.moved)
    assert overlapping(aws) == []
    if case.gone:
        assert restored.code == 1, restored.out + restored.err
        for queue in case.gone:
            for job in world.jobs[queue]:
                assert f"[{job}]: queue {queue} does not exist" in restored.err, restored.err
    else:
        assert restored.code == 0, restored.out + restored.err
    # Nothing else was touched: the seeded jobs of the queues not at risk run on (unless an earlier case drained them).
    world.drained |= expected
    for queue in set(configured) - set(case.drained):
        for job in set(world.jobs.get(queue, [])) - world.drained:
            assert aws.batch.jobs[job].status in ("RUNNING", "RUNNABLE") and not aws.batch.jobs[job].stop_kind, (queue, job)


def _check_plan_is_the_case(case: Case, plan: dict[str, Any]) -> None:
    """The real plan changes what the case says, and nothing else (no drift the simulation causes)."""
    changed = {
        c["address"]: c["change"]["actions"] for c in plan["resource_changes"] if c["change"]["actions"] not in (["no-op"], ["read"])
    }
    expected = {
        "new-job-definition-revision": {"aws_batch_job_definition.ec2": ["update"], "aws_batch_job_definition.fargate": ["update"]},
        "unrelated-resources-only": {"aws_ssm_parameter.unrelated": ["update"]},
        "scaling-only": {"aws_batch_compute_environment.ec2": ["update"]},
        "fargate-subnet-change": {"aws_batch_compute_environment.fargate": ["update"]},
        "in-place-infrastructure-update": {"aws_batch_compute_environment.ec2": ["update"]},
        "compute-environment-replaced": {
            "aws_batch_compute_environment.replaceable": ["create", "delete"],
            "aws_batch_job_queue.replaceable": ["update"],
        },
        "queue-renamed": {"aws_batch_job_queue.renamed": ["delete", "create"]},
        "queue-deleted": {"aws_batch_job_queue.doomed[0]": ["delete"]},
    }[case.name]
    assert changed == expected, json.dumps(changed)


def _check_replacement(world: World, original: str, replacement: str, moved: dict[str, str]) -> None:
    """On the same queue (or the name the deploy gave it), on the newest revision (its image and RELEASE), its own override kept."""
    batch = world.aws.batch
    job, old = batch.jobs[replacement], batch.jobs[original]
    queue = old.queue_arn.rsplit("/", 1)[-1]
    assert job.queue_arn.rsplit("/", 1)[-1] == moved.get(queue, queue)
    name = old.definition_arn.rsplit("/", 1)[-1].split(":")[0]
    newest = max(d.revision for d in batch.definitions.values() if d.name == name and d.status == "ACTIVE")
    assert job.definition_arn.endswith(f"job-definition/{name}:{newest}") and newest == int(world.variables["release"])
    detail = batch.detail(job)
    environment = {e["name"]: e["value"] for e in detail["container"]["environment"]}
    assert environment["RELEASE"] == str(world.variables["release"])
    assert environment["SAMPLE"] == old.name  # the job's own override, kept
    assert detail["container"]["image"].endswith(f":{world.variables['release']}")
