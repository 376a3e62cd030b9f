"""The composite action run as a runner runs it: its step's env built from action.yml, bash,
GITHUB_OUTPUT / GITHUB_STEP_SUMMARY / GITHUB_ACTION_PATH / RUNNER_TEMP set, against the
simulated AWS. The first run installs jobguard from this checkout into RUNNER_TEMP for real."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobguard.sim import Seeder, SimulatedAWS

from .conftest import Hook

ROOT = Path(__file__).resolve().parent.parent
ACTION = yaml.safe_load((ROOT / "action.yml").read_text())
SECRET = "hunter2-do-not-print"


# What the runner puts in the action's folder that the step uses (a copy: see _action_path).
ACTION_FILES = ("action.yml", "action", "pyproject.toml", "README.md", "jobguard", "requirements")


@pytest.fixture(scope="module")
def runner_temp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One RUNNER_TEMP for the module: jobguard is installed into it once, as in one job. Beside it,
    the action's folder (_action_path): a copy, under a name with spaces, like a runner's download."""
    job = tmp_path_factory.mktemp("job")
    action = _action_path(job / "runner-temp")
    action.mkdir(parents=True)
    for name in ACTION_FILES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, action / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, action / name)
    (job / "runner-temp").mkdir()
    return job / "runner-temp"


def _action_path(runner_temp: Path) -> Path:
    return runner_temp.parent / "actions dir" / "org" / "jobguard" / "v1"


def _files(folder: Path) -> set[Path]:
    return {path.relative_to(folder) for path in folder.rglob("*") if "__pycache__" not in path.parts}


def _expression(value: str, inputs: dict[str, str]) -> str:
    def evaluate(match: re.Match[str]) -> str:
        expression = match.group(1).strip()
        if expression.startswith("inputs."):
            return inputs[expression[len("inputs.") :]]
        if expression == "steps.python.outputs.python-path":
            return sys.executable
        raise AssertionError(f"unexpected expression in action.yml: {expression}")

    return re.sub(r"\$\{\{(.*?)\}\}", evaluate, value)


def run_step(
    runner_temp: Path, workdir: Path, aws: SimulatedAWS, attempt: int = 1, action: Path | None = None, **given: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, str], str]:
    """Run the action's jobguard step (from `action`, by default the module's copy) with `given`
    inputs; its result, outputs and summary."""
    inputs = {name: spec.get("default", "") for name, spec in ACTION["inputs"].items()}
    inputs.update({k.replace("_", "-"): v for k, v in given.items()})
    (step,) = [s for s in ACTION["runs"]["steps"] if s.get("id") == "jobguard"]
    assert "${{" not in step["run"], "inputs must reach the script through env, never inside run:"
    output, summary = workdir / f"output-{attempt}", workdir / f"summary-{attempt}"
    output.write_text("")
    summary.write_text("")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("JOBGUARD_", "GITHUB_"))},
        **aws.env(),
        **{k: _expression(str(v), inputs) for k, v in step["env"].items()},
        "GITHUB_ACTIONS": "true",
        "GITHUB_ACTION_PATH": str(action or _action_path(runner_temp)),
        "RUNNER_TEMP": str(runner_temp),
        "GITHUB_OUTPUT": str(output),
        "GITHUB_STEP_SUMMARY": str(summary),
        "GITHUB_RUN_ID": "4242",
        "GITHUB_RUN_ATTEMPT": str(attempt),
        "GITHUB_REPOSITORY": "org/pipeline",
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_SHA": "0123abc",
    }
    process = subprocess.run([step["shell"], "-e", "-c", step["run"]], env=env, cwd=workdir, capture_output=True, text=True, timeout=600)
    return process, _outputs(output.read_text()), summary.read_text()


def _outputs(text: str) -> dict[str, str]:
    found = {}
    for match in re.finditer(r"^([\w-]+)<<(\S+)\n(.*?)\n\2$", text, flags=re.M | re.S):
        found[match.group(1)] = match.group(3)
    return found


def _seed(seed: Seeder) -> list[str]:
    seed.queue("work")
    seed.queue("etl")
    seed.definition("proc")
    secret: dict[str, Any] = {"containerOverrides": {"environment": [{"name": "DB_PASSWORD", "value": SECRET}]}}
    return [
        seed.job(jobName="train", jobQueue="work", jobDefinition="proc", **secret),
        seed.job(jobName="load", jobQueue="etl", jobDefinition="proc"),
        seed.job(status="RUNNABLE", jobName="score", jobQueue="work", jobDefinition="proc"),
    ]


@pytest.mark.slow
def test_drain_then_restore_through_the_action(runner_temp: Path, workdir: Path, aws: SimulatedAWS, seed: Seeder) -> None:
    jobs = _seed(seed)
    store = f"file://{workdir}/manifests"
    drain, drained, drain_summary = run_step(runner_temp, workdir, aws, command="drain", store=store, queues="work,\n etl \n")
    assert drain.returncode == 0, drain.stderr + drain.stdout
    assert drained["deploy-id"] == "4242"  # the run id: shared by both steps and by re-run attempts
    assert (
        drained["manifest"] == f"{store}/4242.json".replace("file://", "file://") and drained["drained"] == "3" and drained["failed"] == "0"
    )
    assert "| job | queue | at drain | ran for | revision | outcome | replacement |" in drain_summary
    assert "| work | RUNNING |" in drain_summary and "| proc:1 | terminated | - |" in drain_summary
    assert "3 jobs: 3 terminated" in drain_summary
    seed.definition("proc")  # the deploy
    restore, restored, restore_summary = run_step(runner_temp, workdir, aws, command="restore", store=store)
    assert restore.returncode == 0, restore.stderr
    replacements = json.loads(restored.pop("replacements"))
    assert restored == {"deploy-id": "4242", "manifest": drained["manifest"], "drained": "3", "resubmitted": "3", "failed": "0"}
    assert set(replacements) == set(jobs) and len(set(replacements.values())) == 3
    assert "3 jobs: 3 resubmitted" in restore_summary and "(proc:2)" in restore.stdout
    assert "| proc:1 → proc:2 | resubmitted |" in restore_summary and "::group::deploy 4242" in restore.stdout
    for text in (drain.stdout, drain.stderr, drain_summary, restore.stdout, restore.stderr, restore_summary, str(drained), str(restored)):
        assert SECRET not in text  # environment overrides may hold secrets


@pytest.mark.slow
def test_rerun_attempt_finds_the_first_attempts_manifest(runner_temp: Path, workdir: Path, aws: SimulatedAWS, seed: Seeder) -> None:
    _seed(seed)
    store = f"file://{workdir}/manifests"
    first, first_out, _ = run_step(runner_temp, workdir, aws, command="drain", store=store, queues="work")
    assert first.returncode == 0 and first_out["drained"] == "2"
    second, second_out, _ = run_step(runner_temp, workdir, aws, attempt=2, command="drain", store=store, queues="work\netl")
    assert second.returncode == 0
    assert second_out["deploy-id"] == first_out["deploy-id"] == "4242" and second_out["drained"] == "3"


@pytest.mark.slow
def test_failures_are_annotated_and_fail_the_step(runner_temp: Path, workdir: Path, aws: SimulatedAWS, seed: Seeder) -> None:
    _seed(seed)
    store = f"file://{workdir}/manifests"
    assert run_step(runner_temp, workdir, aws, command="drain", store=store, queues="work")[0].returncode == 0
    seed.batch.update_job_queue(jobQueue="work", state="DISABLED")
    restore, outputs, summary = run_step(runner_temp, workdir, aws, command="restore", store=store)
    assert restore.returncode == 1
    assert outputs["failed"] == "2" and outputs["resubmitted"] == "0"
    assert "::error::train [" in restore.stderr and "queue work is DISABLED" in restore.stderr
    seed.batch.update_job_queue(jobQueue="work", state="ENABLED")  # fixed: a re-run of the restore brings them back
    again, outputs, _ = run_step(runner_temp, workdir, aws, attempt=2, command="restore", store=store)
    assert again.returncode == 0 and outputs["resubmitted"] == "2" and outputs["failed"] == "0"
    assert "<summary>Errors</summary>" in summary


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"command": "explode"}, "input 'command' must be drain, restore, status or run"),
        ({"command": "drain", "dry_run": "yes"}, "input 'dry-run' must be true or false"),
        ({"command": "run"}, "command: run needs the deploy's command in input 'run'"),
        ({"command": "drain", "run": "terraform apply"}, "input 'run' is only for command: run, not 'drain'"),
        ({"command": "run", "run": "terraform apply tfplan && echo done", "queues": "work"}, "input run: && is shell syntax"),
        ({"command": "run", "run": "echo $(touch pwned)", "queues": "work"}, "input run: ( is shell syntax"),
        ({"command": "run", "run": "terraform apply\nterraform output", "queues": "work"}, "input run: one command on one line"),
        ({"command": "run", "run": "echo 'unclosed", "queues": "work"}, "input run: cannot split it into words"),
    ],
)
def test_bad_inputs_fail_with_an_annotation(
    runner_temp: Path, workdir: Path, aws: SimulatedAWS, inputs: dict[str, Any], message: str
) -> None:
    process, _, _ = run_step(runner_temp, workdir, aws, **inputs)
    assert process.returncode == 2 and f"::error title=jobguard::{message}" in process.stdout


def test_dry_run_and_status(runner_temp: Path, workdir: Path, aws: SimulatedAWS, seed: Seeder) -> None:
    jobs = _seed(seed)
    store = f"file://{workdir}/manifests"
    dry, _, _ = run_step(runner_temp, workdir, aws, command="drain", store=store, queues="work", dry_run="true")
    assert dry.returncode == 0 and "would drain" in dry.stdout and not aws.batch.jobs[jobs[0]].terminated
    assert run_step(runner_temp, workdir, aws, command="drain", store=store, queues="work")[0].returncode == 0
    status, _, summary = run_step(runner_temp, workdir, aws, command="status", store=store)
    assert status.returncode == 0 and "train" in status.stdout and "run: https://github.com/org/pipeline/actions/runs/4242" in status.stdout
    assert "### jobguard status: deploy `4242`" in summary


def test_action_metadata_is_complete() -> None:
    for name, spec in ACTION["inputs"].items():
        assert name == name.lower() and "_" not in name and spec.get("description"), name
    assert set(ACTION["outputs"]) == {"deploy-id", "manifest", "drained", "resubmitted", "failed", "replacements"}
    for step in ACTION["runs"]["steps"]:
        if "uses" in step:
            assert re.fullmatch(r"[\w-]+/[\w-]+@[0-9a-f]{40}", step["uses"]), step["uses"]
        else:
            assert step["shell"] == "bash" and "${{" not in step["run"]


@pytest.mark.slow
def test_plan_grace_and_freeze_inputs(runner_temp: Path, workdir: Path, aws: SimulatedAWS, seed: Seeder) -> None:
    _seed(seed)
    seed.queue("etl-queue")
    at_risk = seed.job(jobName="nightly", jobQueue="etl-queue", jobDefinition="proc")
    plan = Path(__file__).parent / "plans" / "ce-infrastructure-update.json"  # puts etl-queue at risk
    store = f"file://{workdir}/manifests"
    drain, outputs, _ = run_step(
        runner_temp,
        workdir,
        aws,
        command="drain",
        store=store,
        queues="work\netl-queue",
        plan=str(plan),
        grace="1s",
        freeze="true",
        lock_timeout="5",
    )
    assert drain.returncode == 0, drain.stderr
    assert "queue etl-queue: at risk: aws_batch_compute_environment.etl gets an infrastructure update" in drain.stdout
    assert outputs["drained"] == "1" and aws.batch.jobs[at_risk].terminated
    assert not any(aws.batch.jobs[j].terminated for j in aws.batch.jobs if j != at_risk and ":" not in j)
    assert seed.batch.describe_job_queues(jobQueues=["etl-queue"])["jobQueues"][0]["state"] == "DISABLED"
    restore, restored, _ = run_step(runner_temp, workdir, aws, command="restore", store=store, queues="work\netl-queue")
    assert restore.returncode == 0 and restored["resubmitted"] == "1"
    assert seed.batch.describe_job_queues(jobQueues=["etl-queue"])["jobQueues"][0]["state"] == "ENABLED"


def test_notify_input_masks_webhooks(runner_temp: Path, workdir: Path, aws: SimulatedAWS, seed: Seeder, webhook: str) -> None:
    _seed(seed)
    drain, _, _ = run_step(runner_temp, workdir, aws, command="drain", store=f"file://{workdir}/m", queues="work", notify=f"{webhook}\n")
    assert drain.returncode == 0, drain.stderr
    assert f"::add-mask::{webhook}" in drain.stdout
    assert [h["text"] for h in Hook.received] == [
        "jobguard drain, deploy 4242: 2 jobs: 2 terminated\n  run: https://github.com/org/pipeline/actions/runs/4242"
    ]


@pytest.mark.slow
def test_run_through_the_action(runner_temp: Path, workdir: Path, aws: SimulatedAWS, seed: Seeder) -> None:
    jobs = _seed(seed)
    apply = workdir / "apply.py"
    apply.write_text("import sys\nprint('applying', sys.argv[1:])\nsys.exit(3)\n")
    store = f"file://{workdir}/manifests"
    line = f"{sys.executable} '{apply}' -input=false tfplan \"a b\" $GITHUB_RUN_ID '$(id)'"  # words, never a shell's
    process, outputs, summary = run_step(runner_temp, workdir, aws, command="run", store=store, queues="work\netl", run=line)
    assert process.returncode == 3, process.stderr  # the command's
    assert "applying ['-input=false', 'tfplan', 'a b', '$GITHUB_RUN_ID', '$(id)']" in process.stdout
    assert outputs["deploy-id"] == "4242" and outputs["resubmitted"] == "3" and outputs["failed"] == "0"
    assert set(json.loads(outputs["replacements"])) == set(jobs)
    assert "3 jobs: 3 terminated" in summary and "3 jobs: 3 resubmitted" in summary


def test_the_install_leaves_the_actions_folder_as_it_was(runner_temp: Path, workdir: Path, aws: SimulatedAWS) -> None:
    """The action's folder may be read-only, or kept between jobs: a build/ or *.egg-info left there
    would be installed, stale, by a later job (build/lib keeps modules that a newer version removed)."""
    action = _action_path(runner_temp)
    before = _files(action)
    status, _, _ = run_step(runner_temp, workdir, aws, command="status", store=f"file://{workdir}/m")
    assert [venv.name for venv in runner_temp.glob("jobguard-venv-*/bin/jobguard")], status.stdout + status.stderr
    assert _files(action) == before
    assert not (runner_temp / "jobguard-source").exists()


@pytest.mark.slow
def test_a_step_using_another_version_of_the_action_gets_that_version(runner_temp: Path, workdir: Path, aws: SimulatedAWS) -> None:
    """A later step of the job reuses the install of its own action folder; a step using another
    version (another GITHUB_ACTION_PATH, as `org/jobguard@v2`) installs and runs that one."""
    v1 = _action_path(runner_temp)
    assert run_step(runner_temp, workdir, aws, command="status", store=f"file://{workdir}/m")[0].returncode == 0
    v2 = v1.parent / "v2"
    shutil.copytree(v1, v2)
    (v2 / "jobguard" / "only_in_v2.py").write_text("")
    status, _, _ = run_step(runner_temp, workdir, aws, action=v2, command="status", store=f"file://{workdir}/m")
    assert status.returncode == 0, status.stdout + status.stderr
    venvs = sorted(runner_temp.glob("jobguard-venv-*"))
    installed = [bool(list(venv.glob("lib/python*/site-packages/jobguard/only_in_v2.py"))) for venv in venvs]
    assert sorted(installed) == [False, True], venvs  # two venvs, v2's module in one only
