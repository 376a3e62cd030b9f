"""Real Terraform for the tests: the `terraform` binary on PATH, the hashicorp/aws provider from
the machine's filesystem mirror (no download), and a provider override that points every AWS
service at a moto server on loopback.

Every terraform subprocess gets the CLI configuration written here (TF_CLI_CONFIG_FILE; the
machine's own may name a file that does not exist): hashicorp/aws from the filesystem mirror and
never from the network, and a plugin cache shared by every `init`. Modules are copied to a
temporary folder before `init`, so nothing is ever written into the repository.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import shared

ROOT = Path(__file__).resolve().parent.parent
MODULE = ROOT / "terraform"
EXAMPLES = MODULE / "examples"

PROVIDER = "registry.terraform.io/hashicorp/aws"
MOTO_ACCOUNT = "123456789012"
REGION = "us-east-1"

# Every service endpoint the provider may call for the module and the examples (and a few more):
# none of them may ever reach a real AWS endpoint from a test.
ENDPOINT_SERVICES = (
    "batch",
    "cloudwatch",
    "dynamodb",
    "ec2",
    "ecs",
    "events",
    "iam",
    "kms",
    "lambda",
    "logs",
    "s3",
    "secretsmanager",
    "sns",
    "sqs",
    "ssm",
    "sts",
)


class TerraformError(RuntimeError):
    """A terraform command failed; the message carries its output."""


def find_mirror() -> Path | None:
    """The provider filesystem mirror holding hashicorp/aws: the folder above registry.terraform.io.

    TF_PROVIDER_MIRROR names it explicitly; else the usual places are looked at, then the filesystem
    (one `find`, the answer cached for the process)."""
    configured = os.environ.get("TF_PROVIDER_MIRROR")
    if configured:
        return Path(configured) if _holds_aws(Path(configured)) else None
    for candidate in (Path("/opt/tf-plugins"), Path("/usr/share/terraform/plugins"), Path.home() / ".terraform.d/plugins"):
        if _holds_aws(candidate):
            return candidate
    return _find_mirror_on_disk()


def _holds_aws(root: Path) -> bool:
    return any((root / PROVIDER).glob("*/*/terraform-provider-aws*"))


@functools.lru_cache(maxsize=1)
def _find_mirror_on_disk() -> Path | None:
    try:
        process = subprocess.run(
            ["find", "/", "-xdev", "-path", f"*{PROVIDER}*", "-name", "terraform-provider-aws*"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in process.stdout.splitlines():
        path = Path(line)
        for parent in path.parents:
            if parent.name == "registry.terraform.io":
                return parent.parent
    return None


def terraform_available() -> str | None:
    """None when Terraform can run here; else the reason it cannot (for pytest.skip)."""
    if shutil.which("terraform") is None:
        return "terraform is not on PATH"
    if find_mirror() is None:
        return f"no filesystem mirror of {PROVIDER} (set TF_PROVIDER_MIRROR; README: Quick start)"
    return None


@functools.lru_cache(maxsize=1)
def cli_config() -> Path:
    """A CLI configuration file (written once per process) that installs hashicorp/aws from the
    mirror only, and caches plugins (symbolic links into the mirror) across `init`s."""
    mirror = find_mirror()
    if mirror is None:
        raise TerraformError(terraform_available() or "no provider mirror")
    folder = Path(tempfile.mkdtemp(prefix="jobguard-tf-cli-"))
    atexit.register(shutil.rmtree, folder, True)
    cache = folder / "plugin-cache"
    cache.mkdir()
    path = folder / "terraform.tfrc"
    path.write_text(
        "provider_installation {\n"
        "  filesystem_mirror {\n"
        f"    path    = {json.dumps(str(mirror))}\n"
        f"    include = [{json.dumps(PROVIDER)}]\n"
        "  }\n"
        "  direct {\n"
        f"    exclude = [{json.dumps(PROVIDER)}]\n"
        "  }\n"
        "}\n"
        f"plugin_cache_dir = {json.dumps(str(cache))}\n"
        "disable_checkpoint = true\n"
    )
    return path


def environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every terraform subprocess: our CLI configuration, no credentials or
    profile of the machine, no automation prompts or colour."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "TF_"))}
    env.update(
        TF_CLI_CONFIG_FILE=str(cli_config()),
        TF_IN_AUTOMATION="1",
        TF_INPUT="0",
        CHECKPOINT_DISABLE="1",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_REGION=REGION,
        AWS_DEFAULT_REGION=REGION,
    )
    env.update(extra or {})
    return env


def terraform(folder: Path, *args: str, timeout: float = 600, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `terraform ARGS` in folder; raise TerraformError with its output when it fails."""
    process = subprocess.run(
        ["terraform", *args, "-no-color"],
        cwd=folder,
        env=environment(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if process.returncode != 0:
        raise TerraformError(f"terraform {' '.join(args)} in {folder} exited {process.returncode}:\n{process.stdout}\n{process.stderr}")
    return process


def copy_module(source: Path, destination: Path) -> Path:
    """Copy a module (or an example with the module it calls by relative path) to a temporary
    folder, so `init` and state never touch the repository. An example under
    terraform/examples/NAME is copied with the whole terraform/ tree, keeping `source = "../.."`.
    Returns the folder to run terraform in."""
    source = source.resolve()
    ignore = shutil.ignore_patterns(".terraform", ".terraform.lock.hcl", "terraform.tfstate*", "*.tfplan", "override.tf", "*_override.tf")
    if source == MODULE or MODULE in source.parents:
        shutil.copytree(MODULE, destination / "terraform", ignore=ignore)
        return destination / "terraform" / source.relative_to(MODULE)
    shutil.copytree(source, destination / source.name, ignore=ignore)
    return destination / source.name


def init(folder: Path) -> None:
    """`terraform init` from the mirror (the plugin cache makes each one cheap)."""
    terraform(folder, "init", "-input=false")


def validate(folder: Path) -> dict[str, Any]:
    """`terraform validate -json`; raises with the diagnostics when the configuration is invalid."""
    process = subprocess.run(
        ["terraform", "validate", "-json", "-no-color"],
        cwd=folder,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    result: dict[str, Any] = json.loads(process.stdout)
    if not result.get("valid"):
        raise TerraformError(f"terraform validate in {folder}:\n{json.dumps(result['diagnostics'], indent=1)}")
    return result


def _var_args(variables: Mapping[str, Any] | None) -> list[str]:
    args = []
    for name, value in (variables or {}).items():
        args += ["-var", f"{name}={value if isinstance(value, str) else json.dumps(value)}"]
    return args


def apply(folder: Path, variables: Mapping[str, Any] | None = None) -> None:
    terraform(folder, "apply", "-input=false", "-auto-approve", "-parallelism=20", *_var_args(variables))


def destroy(folder: Path, variables: Mapping[str, Any] | None = None) -> None:
    terraform(folder, "destroy", "-input=false", "-auto-approve", "-parallelism=20", *_var_args(variables))


def output_json(folder: Path) -> dict[str, Any]:
    """Every root output's value, as `terraform output -json` gives it."""
    outputs = json.loads(terraform(folder, "output", "-json").stdout)
    return {name: spec["value"] for name, spec in outputs.items()}


def plan_json(folder: Path, variables: Mapping[str, Any] | None = None, *args: str) -> dict[str, Any]:
    """`terraform plan -out` then `terraform show -json` of that plan."""
    terraform(folder, "plan", "-input=false", "-out=jobguard.tfplan", *_var_args(variables), *args)
    plan: dict[str, Any] = json.loads(terraform(folder, "show", "-json", "jobguard.tfplan").stdout)
    return plan


def state_pull(folder: Path) -> dict[str, Any]:
    """The raw state (with each instance's recorded `dependencies`)."""
    state: dict[str, Any] = json.loads(terraform(folder, "state", "pull").stdout)
    return state


# ---------------------------------------------------------------------------------------------
# moto
# ---------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def moto_server(*, in_process: bool = False) -> Iterator[str]:
    """A moto server on a free loopback port, Batch without Docker; yields its URL.

    By default moto runs in its own process: moto's backends are global to a process, so two
    configurations applied at once (both examples create a role named jobguard) need one process
    each. in_process=True uses moto.server.ThreadedMotoServer in this process instead (its state
    is then shared with every other in-process moto).

    The separate process serves HTTPS, as AWS does and as the module's bucket policy demands (a
    self-signed certificate: the provider override sets `insecure`, boto3_client does not verify)."""
    port = free_port()
    url = f"{'http' if in_process else 'https'}://127.0.0.1:{port}"
    process: subprocess.Popen[bytes] | None = None
    server: Any = None
    if in_process:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
    else:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port), "--ssl"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    try:
        request = urllib.request.Request(
            f"{url}/moto-api/config", data=json.dumps({"batch": {"use_docker": False}}).encode(), method="POST"
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(request, timeout=5, context=ssl._create_unverified_context()).read()
                break
            except OSError:
                if time.monotonic() > deadline or (process is not None and process.poll() is not None):
                    raise
                time.sleep(0.1)
        yield url
    finally:
        if server is not None:
            server.stop()
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def provider_override(endpoint: str, *, region: str = REGION) -> str:
    """An override file (override.tf) that merges into the configuration's `provider "aws"` block
    and sends every service to the moto server at endpoint."""
    endpoints = "\n".join(f"    {service} = {json.dumps(endpoint)}" for service in ENDPOINT_SERVICES)
    return f"""# Written by the tests into a temporary copy; never committed into an example.
provider "aws" {{
  region                      = {json.dumps(region)}
  access_key                  = "testing"
  secret_key                  = "testing"
  skip_credentials_validation = true
  skip_metadata_api_check     = true
  skip_region_validation      = true
  skip_requesting_account_id  = false
  s3_use_path_style           = true
  insecure                    = {"true" if endpoint.startswith("https:") else "false"}

  endpoints {{
{endpoints}
  }}
}}
"""


def write_override(folder: Path, endpoint: str, extra: str = "") -> Path:
    """Write override.tf (the provider override plus any extra override blocks) into folder, whose
    configuration must have a `provider "aws"` block for it to override."""
    path = folder / "override.tf"
    path.write_text(provider_override(endpoint) + extra)
    return path


def boto3_client(service: str, endpoint: str) -> Any:
    import boto3
    import urllib3

    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

    session: Any = boto3.session.Session()  # a session per client: safe across threads
    return session.client(
        service,
        endpoint_url=endpoint,
        verify=False,  # moto's self-signed certificate
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def rendered_policies(folder: Path, outputs: Sequence[str] = ("policy_json",)) -> list[dict[str, Any]]:
    """The module's IAM policy documents as Terraform renders them, from the outputs of an applied
    configuration (each output a JSON string)."""
    values = output_json(folder)
    return [json.loads(values[name]) for name in outputs]


# ---------------------------------------------------------------------------------------------
# What the examples need in the simulated account, and what moto lacks
# ---------------------------------------------------------------------------------------------
_TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}


def seed_prerequisites(endpoint: str, *, oidc_provider: bool = True) -> dict[str, Any]:
    """Create in moto what the examples take as inputs (network, roles, instance profile, and the
    OIDC provider unless the configuration creates its own) and what moto alone requires (a Batch
    service role). Returns their ids and ARNs."""
    ec2 = boto3_client("ec2", endpoint)
    iam = boto3_client("iam", endpoint)
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.20.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="batch", Description="batch", VpcId=vpc)["GroupId"]
    roles = {}
    for name in ("moto-batch-service", "ecs-instance", "ecs-task-execution"):
        roles[name] = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(_TRUST))["Role"]["Arn"]
    profile = iam.create_instance_profile(InstanceProfileName="ecs-instance")["InstanceProfile"]["Arn"]
    iam.add_role_to_instance_profile(InstanceProfileName="ecs-instance", RoleName="ecs-instance")
    oidc = None
    if oidc_provider:
        oidc = iam.create_open_id_connect_provider(
            Url="https://token.actions.githubusercontent.com", ClientIDList=["sts.amazonaws.com"], ThumbprintList=["a" * 40]
        )["OpenIDConnectProviderArn"]
    return {
        "subnet_ids": [subnet],
        "security_group_ids": [group],
        "execution_role_arn": roles["ecs-task-execution"],
        "instance_profile_arn": profile,
        "oidc_provider_arn": oidc,
        "batch_service_role_arn": roles["moto-batch-service"],
    }


def variable_names(folder: Path) -> set[str]:
    """Names of the variables a configuration declares."""
    return {match for path in folder.glob("*.tf") for match in re.findall(r'^variable\s+"([^"]+)"', path.read_text(), re.M)}


def moto_overrides(folder: Path, service_role_arn: str) -> str:
    """Override blocks for what moto cannot do without: moto refuses a compute environment without
    service_role (real Batch uses its service-linked role), so each compute environment of the
    configuration gets the seeded role — in the override file only, never in the example."""
    pattern = r'^resource\s+"aws_batch_compute_environment"\s+"([^"]+)"'
    names = sorted({m for path in folder.glob("*.tf") for m in re.findall(pattern, path.read_text(), re.M)})
    role = json.dumps(service_role_arn)
    block = (
        "\n# moto: a compute environment needs service_role.\n"
        'resource "aws_batch_compute_environment" "{name}" {{\n  service_role = {role}\n}}\n'
    )
    return "".join(block.format(name=name, role=role) for name in names)


class Stack:
    """A configuration copied to a temporary folder, initialised, with override.tf pointing it at
    a moto server: apply / destroy / outputs / plan against the simulated AWS.

    source is copied (see copy_module) unless prepared=True, when it is a folder made for the
    test and used where it is."""

    def __init__(
        self, source: Path, workdir: Path, endpoint: str, variables: Mapping[str, Any] | None = None, *, prepared: bool = False
    ) -> None:
        self.endpoint = endpoint
        self.folder = source if prepared else copy_module(source, workdir)
        wanted = variable_names(self.folder)
        prerequisites = seed_prerequisites(endpoint, oidc_provider="oidc_provider_arn" in wanted)
        self.variables = {k: v for k, v in prerequisites.items() if k in wanted}
        if "github_repository" in wanted:
            self.variables["github_repository"] = "acme/pipeline"
        self.variables.update(variables or {})
        write_override(self.folder, endpoint, moto_overrides(self.folder, prerequisites["batch_service_role_arn"]))
        init(self.folder)

    def apply(self) -> dict[str, Any]:
        apply(self.folder, self.variables)
        return output_json(self.folder)

    def destroy(self) -> None:
        destroy(self.folder, self.variables)

    def plan(self, *args: str) -> dict[str, Any]:
        return plan_json(self.folder, self.variables, *args)

    def client(self, service: str) -> Any:
        return boto3_client(service, self.endpoint)


# ---------------------------------------------------------------------------------------------
# Whole lifecycles: apply, read back, plan again, destroy — the examples and a consumer config
# ---------------------------------------------------------------------------------------------
# A root configuration that uses only the module's outputs. Terraform records in the state which
# resources each consumer waited for: that is the proof that the outputs carry their resources'
# dependencies (outputs computed from names alone would let the consumers race the store).
CONSUMER_CONFIG = """
provider "aws" {
  region = "us-east-1"
}

module "s3_store" {
  source = "../terraform"

  name                 = "jg-s3"
  store                = "s3"
  force_destroy        = true
  job_queue_arns       = ["arn:aws:batch:us-east-1:123456789012:job-queue/science-queue"]
  job_definition_names = ["rnaseq"]
  create_github_role   = true
  create_oidc_provider = true
  github_oidc_subjects = ["repo:acme/pipeline:environment:production"]
}

module "table_store" {
  source = "../terraform"

  name                 = "jg-ddb"
  store                = "dynamodb"
  force_destroy        = true
  job_queue_arns       = ["arn:aws:batch:us-east-1:123456789012:job-queue/etl-queue"]
  job_definition_names = ["nightly-load"]
  create_github_role   = true
  oidc_provider_arn    = module.s3_store.oidc_provider_arn
  github_oidc_subjects = ["repo:acme/pipeline:ref:refs/heads/main"]
}

# Not an aws_s3_object: moto denies every object request on a bucket whose policy has a
# conditional Deny (the module's TLS-only statement), whatever the condition says.
resource "aws_s3_bucket_notification" "manifests" {
  bucket      = module.s3_store.bucket_name
  eventbridge = true
}

resource "aws_dynamodb_table_item" "marker" {
  table_name = module.table_store.table_name
  hash_key   = "pk"
  range_key  = "sk"
  item       = jsonencode({ pk = { S = "consumer" }, sk = { S = "0" } })
}

resource "aws_iam_role_policy" "extra" {
  name = "whoami"
  role = module.s3_store.role_name
  policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Action = "sts:GetCallerIdentity", Resource = "*" }]
  })
}

resource "aws_kms_alias" "consumer" {
  name          = "alias/consumer-of-signing-key"
  target_key_id = module.table_store.signing_key_arn
}

output "s3_store_uri" {
  value = module.s3_store.store_uri
}

output "table_store_uri" {
  value = module.table_store.store_uri
}
"""

# What each lifecycle applies: the examples (destroyable, one with an event bus so that grant is
# rendered too) and the consumer configuration.
LIFECYCLES: dict[str, tuple[str, dict[str, Any]]] = {
    "s3": (
        "examples/s3",
        {"force_destroy": True, "event_bus_name": "deploys", "notification_topic_arns": [f"arn:aws:sns:{REGION}:{MOTO_ACCOUNT}:deploys"]},
    ),
    "dynamodb": ("examples/dynamodb", {"force_destroy": True}),
    "consumer": ("consumer", {}),
}


@dataclass
class Lifecycle:
    """What happened to one configuration applied into its own moto server."""

    name: str
    variables: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] | None = None
    state: dict[str, Any] | None = None
    drift: list[dict[str, Any]] = field(default_factory=list)  # the plan right after apply
    failed: str | None = None  # the phase that failed
    error: str = ""
    destroyed: bool = False
    seconds: dict[str, float] = field(default_factory=dict)

    def policy(self) -> dict[str, Any]:
        """The jobguard policy as Terraform rendered and applied it."""
        assert self.outputs is not None, f"{self.name} did not apply ({self.failed}): {self.error}"
        document: dict[str, Any] = json.loads(self.outputs["policy_json"])
        return document

    def check(self) -> None:
        """Fail (AssertionError with Terraform's output) if any phase failed."""
        assert self.failed is None, f"{self.name}: terraform {self.failed} failed:\n{self.error[-8000:]}"


def _prepare(name: str, workdir: Path) -> tuple[Path, bool]:
    if name == "consumer":
        shutil.copytree(MODULE, workdir / "terraform", ignore=shutil.ignore_patterns("examples", ".terraform*", "*.tfstate*"))
        folder = workdir / "consumer"
        folder.mkdir()
        (folder / "main.tf").write_text(CONSUMER_CONFIG)
        return folder, True
    return MODULE / LIFECYCLES[name][0], False


def run_lifecycle(name: str, workdir: Path) -> Lifecycle:
    """Apply one configuration into a fresh moto server, read outputs and state, plan again (what
    the provider would still change: moto's gaps), destroy. Never raises for Terraform errors:
    the phase and output are recorded."""
    result = Lifecycle(name)
    with moto_server() as endpoint:
        phase = "init"
        try:
            started = time.monotonic()
            source, prepared = _prepare(name, workdir)
            stack = Stack(source, workdir, endpoint, LIFECYCLES[name][1], prepared=prepared)
            result.variables = dict(stack.variables)
            result.seconds["init"] = time.monotonic() - started
            for phase in ("apply", "plan", "destroy"):
                started = time.monotonic()
                if phase == "apply":
                    result.outputs = stack.apply()
                    result.state = state_pull(stack.folder)
                elif phase == "plan":
                    result.drift = drift(stack.plan())
                else:
                    stack.destroy()
                    result.destroyed = True
                result.seconds[phase] = time.monotonic() - started
        except (TerraformError, subprocess.TimeoutExpired) as error:
            result.failed, result.error = phase, str(error)
    return result


def drift(plan: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The changes a plan still proposes: address, actions, and the top-level attributes that differ."""
    changes = []
    for change in plan.get("resource_changes", []):
        actions = change["change"]["actions"]
        if actions in (["no-op"], ["read"]):
            continue
        before = change["change"].get("before") or {}
        after = change["change"].get("after") or {}
        unknown = change["change"].get("after_unknown") or {}
        attributes = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k) and not unknown.get(k))
        changes.append({"address": change["address"], "actions": actions, "attributes": attributes, "before": before, "after": after})
    return changes


@functools.lru_cache(maxsize=1)
def lifecycles() -> dict[str, Lifecycle]:
    """Every configuration of LIFECYCLES through its whole lifecycle, once per test run: in a
    parallel run the first worker to ask runs them and the others wait for its result."""
    return shared.once("terraform-lifecycles", _run_lifecycles)


def _run_lifecycles() -> dict[str, Lifecycle]:
    """The lifecycles in parallel (Terraform spends most of one waiting on the provider's pollers)."""
    from concurrent.futures import ThreadPoolExecutor

    root = Path(tempfile.mkdtemp(prefix="jobguard-tf-"))
    atexit.register(shutil.rmtree, root, True)
    folders = {name: root / name for name in LIFECYCLES}
    for folder in folders.values():
        folder.mkdir()
    with ThreadPoolExecutor(max_workers=len(LIFECYCLES)) as pool:
        futures = {name: pool.submit(run_lifecycle, name, folder) for name, folder in folders.items()}
        return {name: future.result() for name, future in futures.items()}


def rendered_policy(example: str) -> dict[str, Any]:
    """The jobguard policy of examples/<example> ("s3" or "dynamodb") as Terraform renders it once
    applied into moto (account 123456789012, us-east-1; the s3 example with event_bus_name =
    "deploys" and notification_topic_arns = [the SNS topic "deploys"]). Runs the lifecycles on first use (a few minutes), then cached."""
    return lifecycles()[example].policy()
