"""What a command's start costs: the modules and AWS clients a process loads before (and while) it works.

A drain's start is most of its time at a few hundred jobs (docs/benchmarks.md): it imports only its
own command's code and the store it is given, and makes only the clients it calls. Each test runs a
separate process, as a runner does, and fails if an eager import or client comes back.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from jobguard.sim import Seeder, SimulatedAWS

from .conftest import job_of

# What no drain needs: the other commands, the Terraform plan (only with --plan), the stores it is not
# given, the simulation and the "did you mean" of a config error.
NOT_FOR_DRAIN = {
    "jobguard.commands.restore",
    "jobguard.commands.requests",
    "jobguard.commands.status",
    "jobguard.commands.run",
    "jobguard.commands.child",
    "jobguard.commands.watcher",
    "jobguard.domain.plan",
    "jobguard.demo",
    "jobguard.sim",
    "difflib",
}
STORE_MODULES = {
    "file": "jobguard.adapters.stores.file",
    "s3": "jobguard.adapters.stores.s3",
    "dynamodb": "jobguard.adapters.stores.dynamodb",
}
# Run in the child: the CLI as `python -m jobguard` runs it; then the clients of every Aws it made.
DRAIN = """
import json, sys
from jobguard.adapters.aws import Aws
made = []
init = Aws.__init__
def noted(self, *args, **kwargs):
    init(self, *args, **kwargs)
    made.append(self)
Aws.__init__ = noted
from jobguard.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(sys.modules), "clients": [s for aws in made for s in aws._clients]}))
"""


def _child(code: str, *args: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.splitlines()[-1]))


def test_the_cli_imports_no_command_and_no_store_until_one_runs() -> None:
    started = _child("import json, sys, jobguard.cli; print(json.dumps({'modules': sorted(sys.modules)}))")
    modules = set(started["modules"])
    assert "jobguard.cli" in modules
    commands = {m for m in modules if m.startswith("jobguard.commands.")} - {"jobguard.commands.context", "jobguard.commands.manifests"}
    assert commands == set(), "the CLI imports a command's module before it runs"
    assert modules.isdisjoint({*NOT_FOR_DRAIN, *STORE_MODULES.values(), "yaml"})


def test_a_drain_with_a_folder_store_and_no_config_loads_only_what_it_uses(aws: SimulatedAWS, seed: Seeder, workdir: Path) -> None:
    (workdir / ".jobguard.yml").unlink()  # no config file: YAML is not read, so not imported
    seed.queue("work")
    seed.definition("proc")
    job = job_of(seed, "nightly")
    store = f"file://{workdir}/manifests"
    drained = _child(DRAIN, "drain", "--store", store, "--queue", "work", "--deploy-id", "d1")
    assert drained["code"] == 0
    assert aws.batch.jobs[job].terminated  # the whole drain ran, to its summary
    modules = set(drained["modules"])
    assert STORE_MODULES["file"] in modules
    assert modules & {*NOT_FOR_DRAIN, STORE_MODULES["s3"], STORE_MODULES["dynamodb"], "yaml"} == set()
    # Each client reads its service's model (tens of ms): a drain on a folder store calls STS and Batch only.
    assert sorted(drained["clients"]) == ["batch", "sts"]


def test_a_drain_with_any_store_makes_only_the_clients_it_calls(aws: SimulatedAWS, seed: Seeder, store: str) -> None:
    seed.queue("work")
    seed.definition("proc")
    job = job_of(seed, "nightly")
    drained = _child(DRAIN, "drain", "--store", store, "--queue", "work", "--deploy-id", "d1")
    assert drained["code"] == 0
    assert aws.batch.jobs[job].terminated
    kind = store.split(":", 1)[0]
    modules = set(drained["modules"])
    assert modules & {*NOT_FOR_DRAIN, *STORE_MODULES.values()} == {STORE_MODULES[kind]}
    # The folder store signs with a local key; S3 and DynamoDB stores with KMS (the fixture's signing-key).
    expected = {"file": ["batch", "sts"], "s3": ["batch", "kms", "s3", "sts"], "dynamodb": ["batch", "dynamodb", "kms", "sts"]}
    assert sorted(drained["clients"]) == expected[kind]
