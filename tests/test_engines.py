"""Jobs a workflow engine tracks (issue 26): recognised from what the engine puts on them, never
resubmitted beside the engine's own retry, head jobs resubmitted as documented, ordinary jobs as before.

The jobs are shaped as each engine submits them (tests/engine_jobs.py, with the source of each).
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobguard.domain.engines import BUILTIN, EngineRule, classify, with_engine
from jobguard.domain.manifest import JobRecord
from jobguard.domain.pages import WHOLE
from jobguard.sim import Seeder, SimulatedAWS
from jobguard.sim.merge import described_definition, merged_detail

from .conftest import configure, load_manifest, overlapping, records, replacements_of
from .engine_jobs import (
    BUILT_IN,
    CONFIGURED,
    EVERY,
    METAFLOW_TASK,
    NEXTFLOW_HEAD,
    NEXTFLOW_TASK,
    ORDINARY,
    SNAKEMAKE_TASK,
    EngineJob,
)
from .hostile import resign, write_document
from .test_deploy_aware import _finish_later
from .test_faults import SWEEP, _finish_round, _killed_after
from .test_window import _replace_compute_environment, _status, _until

QUEUE = "pipelines"
CORPUS = Path(__file__).parent / "corpus"
CONFIG_RULES = {"engines": {"rules": [case.config_rule for case in CONFIGURED]}}


def _detail(case: EngineJob) -> dict[str, Any]:
    """The JobDetail DescribeJobs returns for the case (Batch merges the definition's values in)."""
    arn = f"arn:aws:batch:eu-west-1:123456789012:job-definition/{case.definition['jobDefinitionName']}:1"
    definition = described_definition(case.definition, arn, 1, "ACTIVE")
    request = {**case.submit, "jobQueue": QUEUE, "jobDefinition": arn}
    return merged_detail(definition, request, "0f0f0f0f-1111-4222-8333-444444444444", QUEUE, None)


@pytest.mark.parametrize("case", BUILT_IN, ids=lambda c: c.key)
def test_built_in_rules_recognise_each_engine(case: EngineJob) -> None:
    engine = classify(_detail(case), BUILTIN)
    assert engine is not None and (engine.name, engine.role) == (case.engine, case.role)
    assert engine.action == ("abandon" if case.role == "task" else "resubmit") and engine.why


@pytest.mark.parametrize("case", [*CONFIGURED, ORDINARY], ids=lambda c: c.key)
def test_jobs_without_an_engine_mark_are_ordinary(case: EngineJob) -> None:
    # Airflow's BatchOperator and Step Functions' .sync put nothing of their own on a job; the
    # ordinary job has an nf-token parameter and an nf- name, but not Nextflow's job definition.
    assert classify(_detail(case), BUILTIN) is None


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.json")), ids=lambda p: p.stem)
def test_no_job_of_the_corpus_is_taken_for_an_engine_job(path: Path) -> None:
    assert classify(json.loads(path.read_text())["job"], BUILTIN) is None


def test_parameters_are_also_read_from_the_job_definition() -> None:
    # AWS does not document that DescribeJobs shows a definition's default parameters on the job.
    job = {**_detail(NEXTFLOW_TASK), "parameters": {}}
    assert classify(job, BUILTIN) is None
    engine = classify(job, BUILTIN, NEXTFLOW_TASK.definition)
    assert engine is not None and engine.label == "nextflow task"


@pytest.mark.parametrize(
    ("command", "said"),
    [
        (["nextflow-io/rnaseq-nf", "-resume", "--reads", "s3://x"], "matches '*-resume*': resubmitted, it resumes its run"),
        (["nextflow-io/rnaseq-nf", "--reads", "s3://x"], "does not match '*-resume*': resubmitted, it starts its run over"),
    ],
)
def test_a_head_record_says_whether_it_resumes(command: list[str], said: str) -> None:
    job = _detail(EngineJob(**{**NEXTFLOW_HEAD.__dict__, "submit": {**NEXTFLOW_HEAD.submit, "containerOverrides": {"command": command}}}))
    record = JobRecord("j", "", "rnaseq-head", QUEUE, "nextflow-genomics:1", "RUNNING", {}, "recorded", "drain", {})
    assert with_engine(record, job, BUILTIN).note == f"nextflow head: its command {said}"


def test_a_rule_needs_something_to_match() -> None:
    with pytest.raises(ValueError, match="at least one of"):
        EngineRule("x", "task")


def _world(seed: Seeder, cases: tuple[EngineJob, ...] = EVERY) -> dict[str, str]:
    """The cases' jobs running on one queue; job id by case key."""
    seed.queue(QUEUE)
    jobs = {}
    for case in cases:
        seed.batch.register_job_definition(**case.definition)
        jobs[case.key] = seed.job(jobQueue=QUEUE, **case.submit)
    return jobs


def _config(workdir: Path, settings: dict[str, Any]) -> None:
    configure(workdir, yaml.safe_dump(settings, sort_keys=False))


def test_drain_apply_restore_never_doubles_an_engine_task(seed: Seeder, aws: SimulatedAWS, run: Any, workdir: Path, store: str) -> None:
    jobs = _world(seed)
    events = workdir / "events.jsonl"
    _config(workdir, {**CONFIG_RULES, "events-file": str(events)})
    drained = run("drain", "--queue", QUEUE, "--store", store, "--deploy-id", "d1")
    assert drained.code == 0, drained.err
    stored = records(store, seed, "d1")
    for case in EVERY:
        record = stored[jobs[case.key]]
        engine = case.engine or (case.config_rule or {}).get("engine")
        role = case.role or (case.config_rule or {}).get("role")
        assert (record["engine"], record["engine_role"]) == (engine, role), case.key
        assert aws.batch.jobs[jobs[case.key]].terminated, case.key  # every job was stopped: the apply would kill it
        if role == "task":
            assert record["outcome"] == "skipped" and record["note"].startswith(f"left to {engine}: stopped, not resubmitted"), case.key
            assert record["error"] is None
        else:
            assert record["outcome"] == "terminated", case.key
    assert "nextflow head: its command matches '*-resume*': resubmitted, it resumes its run" in stored[jobs[NEXTFLOW_HEAD.key]]["note"]
    # the plan and summary say what happens to each engine's jobs
    assert "nextflow tasks: 2: left to nextflow: stopped, not resubmitted" in drained.out
    assert "nextflow heads: 1: stopped, resubmitted once after the deploy [1 terminated]" in drained.out
    assert "airflow tasks: 1: left to airflow" in drained.out and "other jobs: 1: stopped, resubmitted once" in drained.out
    assert "left to snakemake" in drained.out

    restored = run("restore", "--store", store, "--deploy-id", "d1")
    assert restored.code == 0, restored.err
    assert "deploy d1: nextflow heads: 1: stopped, resubmitted once after the deploy [1 resubmitted]" in restored.out
    assert "deploy d1: snakemake tasks: 1: left to snakemake: stopped, not resubmitted" in restored.out
    heads_and_ordinary = {jobs[c.key] for c in EVERY if c.role == "head" or (c.engine is None and not c.config_rule)}
    replaced = replacements_of(aws)
    assert set(replaced) == heads_and_ordinary and all(len(replaced[j]) == 1 for j in heads_and_ordinary)
    assert not overlapping(aws)
    assert run("restore", "--store", store, "--deploy-id", "d1").code == 0  # a second restore adds nothing
    assert replacements_of(aws) == replaced

    status = json.loads(run("status", "--store", store, "--deploy-id", "d1", "--json").out)
    by_id = {j["job_id"]: j for j in status["deploys"][0]["jobs"]}
    assert by_id[jobs[NEXTFLOW_TASK.key]]["engine"] == "nextflow" and by_id[jobs[NEXTFLOW_TASK.key]]["engine_role"] == "task"
    assert by_id[jobs[ORDINARY.key]]["engine"] is None
    sent = [json.loads(line) for line in events.read_text().splitlines()]
    skipped = {e["original"]["job_id"]: e for e in sent if e["outcome"] == "skipped"}
    assert skipped[jobs[SNAKEMAKE_TASK.key]]["engine"] == "snakemake"
    assert skipped[jobs[SNAKEMAKE_TASK.key]]["reason"].startswith("left to snakemake")
    resubmitted = {e["original"]["job_id"]: e for e in sent if e["outcome"] == "resubmitted"}
    assert resubmitted[jobs[NEXTFLOW_HEAD.key]]["engine_role"] == "head" and set(resubmitted) == heads_and_ordinary


def test_policies_override_the_engine_defaults(seed: Seeder, aws: SimulatedAWS, run: Any, workdir: Path) -> None:
    jobs = _world(seed, (NEXTFLOW_TASK, NEXTFLOW_HEAD, SNAKEMAKE_TASK, ORDINARY))
    _config(
        workdir,
        {
            "policies": [
                {"engine": "nextflow:task", "action": "resubmit"},  # this team's Nextflow retries nothing itself
                {"engine": "nextflow:head", "action": "abandon"},
                {"job-name": "nf-report", "action": "abandon"},
            ]
        },
    )
    store = f"file://{workdir}/m"
    assert run("drain", "--queue", QUEUE, "--store", store, "--deploy-id", "d1").code == 0
    stored = records(store, seed, "d1")
    assert stored[jobs[NEXTFLOW_TASK.key]]["outcome"] == "terminated"
    assert stored[jobs[NEXTFLOW_HEAD.key]]["outcome"] == "skipped"
    assert stored[jobs[NEXTFLOW_HEAD.key]]["error"] == "policy abandon: stopped, not resubmitted"
    assert stored[jobs[SNAKEMAKE_TASK.key]]["note"].startswith("left to snakemake")
    assert stored[jobs[ORDINARY.key]]["outcome"] == "skipped"
    assert run("restore", "--store", store, "--deploy-id", "d1").code == 0
    assert set(replacements_of(aws)) == {jobs[NEXTFLOW_TASK.key]}


def test_built_in_rules_can_be_turned_off_and_a_rule_can_choose_its_action(
    seed: Seeder, aws: SimulatedAWS, run: Any, workdir: Path
) -> None:
    jobs = _world(seed, (NEXTFLOW_TASK, NEXTFLOW_HEAD, SNAKEMAKE_TASK))
    rule = {"engine": "snakemake", "role": "task", "job-name": "snakejob-*", "action": "resubmit", "why": "our Snakemake runs --retries 0"}
    _config(workdir, {"engines": {"builtin": False, "rules": [rule]}})
    store = f"file://{workdir}/m"
    assert run("drain", "--queue", QUEUE, "--store", store, "--deploy-id", "d1").code == 0
    stored = records(store, seed, "d1")
    assert stored[jobs[NEXTFLOW_TASK.key]]["engine"] is None and stored[jobs[NEXTFLOW_TASK.key]]["outcome"] == "terminated"
    assert stored[jobs[SNAKEMAKE_TASK.key]]["engine"] == "snakemake" and stored[jobs[SNAKEMAKE_TASK.key]]["outcome"] == "terminated"
    assert run("restore", "--store", store, "--deploy-id", "d1").code == 0
    assert set(replacements_of(aws)) == set(jobs.values())


def test_dry_run_plan_groups_jobs_by_engine(seed: Seeder, aws: SimulatedAWS, run: Any, workdir: Path) -> None:
    jobs = _world(seed, (NEXTFLOW_TASK, NEXTFLOW_HEAD, ORDINARY))
    result = run("drain", "--queue", QUEUE, "--dry-run", "--store", f"file://{workdir}/m")
    assert result.code == 0, result.err
    assert "nextflow tasks: 1: left to nextflow: stopped, not resubmitted (nextflow retries or fails its own task)" in result.out
    assert "nextflow heads: 1: stopped, resubmitted once after the deploy" in result.out
    assert "other jobs: 1: stopped, resubmitted once after the deploy" in result.out
    assert not any(aws.batch.jobs[j].terminated for j in jobs.values())


def test_a_plain_deploy_says_nothing_of_engines(seed: Seeder, run: Any, workdir: Path) -> None:
    _world(seed, (ORDINARY,))
    result = run("drain", "--queue", QUEUE, "--store", f"file://{workdir}/m", "--deploy-id", "d1")
    assert result.code == 0 and "other jobs" not in result.out and "left to" not in result.out


@pytest.mark.parametrize(
    ("engines", "words"),
    [
        ({"rule": []}, "engines: unknown key 'rule' (did you mean 'rules'?)"),
        (
            {"rules": [{"engine": "x", "role": "task", "job_name": "a*"}]},
            "engines.rules[0]: unknown key 'job_name' (did you mean 'job-name'?)",
        ),
        ({"rules": [{"engine": "x", "role": "driver", "job-name": "a*"}]}, "engines.rules[0].role: expected one of task, head"),
        ({"rules": [{"role": "task", "job-name": "a*"}]}, "engines.rules[0]: engine is missing"),
        ({"rules": [{"engine": "x", "role": "task"}]}, "engines.rules[0]: give at least one of job-name"),
        ({"rules": [{"engine": "x y", "role": "task", "job-name": "a"}]}, "engines.rules[0].engine: 'x y' is not an engine name"),
        ({"rules": [{"engine": "x", "role": "task", "tags": ["a"]}]}, "engines.rules[0].tags: expected a mapping of NAME: VALUE-PATTERN"),
        ({"rules": [{"engine": "x", "role": "task", "job-name": "a", "action": "retry"}]}, "engines.rules[0].action: expected one of"),
        ({"builtin": "maybe"}, "engines.builtin: expected true or false"),
        # A rule for some of Nextflow's tasks must not change what happens to all of them (the record keeps
        # the engine and role, not the rule): before, every Nextflow task was resubmitted beside its retry.
        (
            {"rules": [{"engine": "nextflow", "role": "task", "job-name": "special-*", "action": "resubmit"}]},
            "engines.rules[0].action: resubmit for nextflow tasks, but the built-in nextflow task rule gives them abandon",
        ),
        (
            {
                "rules": [
                    {"engine": "x", "role": "task", "job-name": "a*"},
                    {"engine": "x", "role": "task", "tags": {"t": "*"}, "action": "wait"},
                ]
            },
            "engines.rules[1].action: wait for x tasks, but rules[0] gives them abandon",
        ),
        # Globs, not regular expressions: a pattern no Batch name can match would silently recognise nothing.
        (
            {"rules": [{"engine": "x", "role": "task", "tags": {"airflow-*": "*"}}]},
            "engines.rules[0].tags: key 'airflow-*': names are matched exactly",
        ),
        ({"rules": [{"engine": "x", "role": "task", "job-name": "^nf-.*$"}]}, "engines.rules[0].job-name: '^nf-.*$' can never match"),
        (
            {"rules": [{"engine": "x", "role": "task", "job-definition": "nf-*:3"}]},
            "engines.rules[0].job-definition: 'nf-*:3' can never match",
        ),
        ([], "engines: expected a mapping with rules"),
    ],
)
def test_bad_engine_config_is_one_clear_line(aws: SimulatedAWS, run: Any, workdir: Path, engines: Any, words: str) -> None:
    _config(workdir, {"engines": engines})
    result = run("drain", "--queue", QUEUE)
    assert result.code == 2 and words in result.err and ".jobguard.yml" in result.err, result.err
    assert len([line for line in result.err.splitlines() if line.startswith("error:")]) == 1


@pytest.mark.slow
def test_at_scale_the_engine_retries_and_jobguard_replaces_only_heads_and_ordinary_jobs(
    seed: Seeder, aws: SimulatedAWS, run: Any, workdir: Path
) -> None:
    """300 Nextflow tasks, 3 heads and 100 ordinary jobs on two queues; during the deploy Nextflow
    submits its own retry of every task it saw fail. After restore: each task has exactly one
    successor (the engine's), each head and ordinary job exactly one replacement (jobguard's)."""
    tasks, heads, ordinary = 300, 3, 100
    seed.batch.register_job_definition(**NEXTFLOW_TASK.definition)
    seed.batch.register_job_definition(**NEXTFLOW_HEAD.definition)
    seed.batch.register_job_definition(**ORDINARY.definition)
    jobs: dict[str, list[str]] = {"task": [], "head": [], "ordinary": []}
    for queue in ("pipelines", "etl"):
        seed.queue(queue)
    for index in range(tasks):
        submit = {**NEXTFLOW_TASK.submit, "jobName": f"RNASEQ_FASTQC_{index}"}
        jobs["task"].append(seed.job(jobQueue="pipelines", **submit))
    for index in range(heads):
        jobs["head"].append(seed.job(jobQueue="pipelines", **{**NEXTFLOW_HEAD.submit, "jobName": f"head-{index}"}))
    for index in range(ordinary):
        jobs["ordinary"].append(seed.job(jobQueue="etl", **{**ORDINARY.submit, "jobName": f"report-{index}"}))
    store = f"file://{workdir}/m"
    drained = run("drain", "--queue", "pipelines", "--queue", "etl", "--store", store, "--deploy-id", "d1")
    assert drained.code == 0, drained.err
    assert f"nextflow tasks: {tasks}: left to nextflow" in drained.out and f"[{tasks} skipped]" in drained.out
    # the deploy: Nextflow sees each task FAILED (exit 143) and submits its retry
    retries = [seed.job(jobQueue="pipelines", **{**NEXTFLOW_TASK.submit, "jobName": f"RNASEQ_FASTQC_{i}"}) for i in range(tasks)]
    restored = run("restore", "--store", store, "--deploy-id", "d1")
    assert restored.code == 0, restored.err
    replaced = replacements_of(aws)
    assert not set(replaced) & set(jobs["task"])  # no task doubled beside the engine's retry
    assert all(len(replaced[j]) == 1 for j in jobs["head"] + jobs["ordinary"])
    assert set(replaced) == set(jobs["head"] + jobs["ordinary"]) and not overlapping(aws)
    names = [aws.batch.jobs[j].name for j in aws.batch.jobs if aws.batch.jobs[j].name.startswith("RNASEQ_FASTQC_")]
    assert len(names) == 2 * tasks and len(set(names)) == tasks  # the original and the engine's retry, nothing else
    assert len(retries) == tasks


def test_the_window_sweep_never_replaces_an_engine_task(seed: Seeder, aws: SimulatedAWS, run: Any, workdir: Path, store: str) -> None:
    """Jobs the engines submit while the deploy runs, killed by the apply (their compute environment
    replaced): restore's sweep replaces the head and the ordinary job once, and leaves every task
    to its engine. A Nextflow task with maxSpotAttempts is retried by Batch itself (Host EC2*)."""
    drained = _world(seed, (NEXTFLOW_TASK, NEXTFLOW_HEAD, SNAKEMAKE_TASK, METAFLOW_TASK, ORDINARY))
    assert run("drain", "--queue", QUEUE, "--store", store, "--deploy-id", "d1").code == 0

    def late(submit: dict[str, Any], **changes: Any) -> str:
        return seed.job(age=0, jobQueue=QUEUE, **{**submit, **changes})

    no_spot_retry = {k: v for k, v in NEXTFLOW_TASK.submit.items() if k != "retryStrategy"}  # aws.batch.maxSpotAttempts = 0
    tasks = {
        "nextflow": late(no_spot_retry, jobName="RNASEQ_QUANT_late"),
        "snakemake": late(SNAKEMAKE_TASK.submit),
        "metaflow": late(METAFLOW_TASK.submit),
    }
    spot_retried = late(NEXTFLOW_TASK.submit, jobName="RNASEQ_FASTQC_late")
    head, ordinary = late(NEXTFLOW_HEAD.submit, jobName="late-head"), late(ORDINARY.submit, jobName="late-report")
    _replace_compute_environment(seed, QUEUE)
    _until(lambda: all(_status(aws, j) == "FAILED" for j in [*tasks.values(), head, ordinary]))
    _until(lambda: _status(aws, spot_retried) == "RUNNABLE")  # Batch retried the Host EC2 attempt itself
    time.sleep(aws.batch.timing.list_lag_seconds)

    restored = run("restore", "--store", store, "--deploy-id", "d1")
    assert restored.code == 0, restored.err
    replaced = replacements_of(aws)
    expected = {drained[NEXTFLOW_HEAD.key], drained[ORDINARY.key], head, ordinary}
    assert set(replaced) == expected and all(len(replaced[j]) == 1 for j in expected)
    assert not overlapping(aws)
    stored = records(store, seed, "d1")
    for engine, job_id in tasks.items():
        record = stored[job_id]
        assert record["outcome"] == "skipped" and record["engine"] == engine and record["engine_role"] == "task", engine
        assert f"left to {engine}: stopped, not resubmitted" in record["note"], record["note"]
    assert stored[head]["engine_role"] == "head" and stored[head]["outcome"] == "resubmitted"
    assert spot_retried not in stored or stored[spot_retried]["outcome"] != "resubmitted"
    again = run("restore", "--store", store, "--deploy-id", "d1")
    assert again.code == 0 and replacements_of(aws) == replaced


@pytest.mark.slow
def test_an_engine_task_still_stopping_after_drain_is_not_resubmitted_by_restore(
    seed: Seeder, aws: SimulatedAWS, run: Any, workdir: Path
) -> None:
    """An engine's task (and an ordinary job beside it) still running past drain's stop-timeout stays
    `terminating`; restore waits for it to end and then leaves the task to its engine."""
    jobs = _world(seed, (NEXTFLOW_TASK, ORDINARY))
    with aws.batch.lock:
        for job_id in jobs.values():
            aws.batch.jobs[job_id].stop_seconds = 2.0  # a long ECS stop timeout
    store = f"file://{workdir}/m"
    drained = run("drain", "--queue", QUEUE, "--store", store, "--deploy-id", "d1", "--stop-timeout", "0.5")
    assert drained.code == 1 and "still running" in drained.err
    assert {r["outcome"] for r in records(store, seed, "d1").values()} == {"terminating"}
    restored = run("restore", "--store", store, "--deploy-id", "d1", "--stop-timeout", "30")
    assert restored.code == 0, restored.err
    stored = records(store, seed, "d1")
    assert stored[jobs[NEXTFLOW_TASK.key]]["outcome"] == "skipped"
    assert stored[jobs[NEXTFLOW_TASK.key]]["note"].startswith("left to nextflow")
    assert set(replacements_of(aws)) == {jobs[ORDINARY.key]} and not overlapping(aws)


@pytest.mark.slow
def test_kill_9_of_drain_at_every_call_never_doubles_an_engine_task(
    seed: Seeder, aws: SimulatedAWS, run: Any, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """drain killed after each of its AWS calls, then restore (as a workflow does): the Nextflow task
    is never replaced, the head and the ordinary job are replaced once when stopped, never lost."""
    configure(workdir, SWEEP)
    monkeypatch.setattr("jobguard.adapters.lease._WAIT_STEP", 0.1)
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    seed.queue("work")
    for case in (NEXTFLOW_TASK, NEXTFLOW_HEAD, ORDINARY):
        seed.batch.register_job_definition(**case.definition)
    kills, k = 0, 1
    while True:
        where, run_id = f"file://{workdir}/m-{k}", f"r{k}"
        task = seed.job(jobQueue="work", **{**NEXTFLOW_TASK.submit, "jobName": f"k{k}_task"})
        others = [
            seed.job(jobQueue="work", **{**NEXTFLOW_HEAD.submit, "jobName": f"k{k}-head"}),
            seed.job(jobQueue="work", **{**ORDINARY.submit, "jobName": f"k{k}-report"}),
        ]
        process = _killed_after(aws, k, every_call=True, command="drain", where=where, run_id=run_id)
        if process.returncode != -signal.SIGKILL:
            assert process.returncode == 0, process.stderr.read()
            break
        kills += 1
        monkeypatch.setenv("GITHUB_RUN_ID", run_id)
        restored = run("restore", "--store", where)
        assert restored.code == 0, f"kill at point {k}: {restored.err}"
        found = replacements_of(aws)
        assert task not in found, f"kill at point {k}: the engine's task was replaced"
        for job in others:
            with aws.batch.lock:
                aws.batch.tick()
                status = aws.batch.jobs[job].status
            assert len(found.get(job, [])) == (1 if status == "FAILED" else 0), f"kill at point {k}: {job} {status} {found.get(job)}"
        assert not overlapping(aws), f"kill at point {k}"
        _finish_round(aws)
        k += 1
    print(f"\nkill -9 of drain with engine jobs: {kills} kill points, no engine task replaced")
    assert kills >= 8


def test_a_policy_naming_an_unknown_engine_is_refused(aws: SimulatedAWS, run: Any, workdir: Path) -> None:
    _config(workdir, {"policies": [{"engine": "nextfow", "action": "resubmit"}]})
    result = run("drain", "--queue", QUEUE)
    assert result.code == 2, result.err
    assert "policies[0].engine: 'nextfow' matches no engine of the rules (known: flyte:task, metaflow:task, nextflow:head" in result.err


def test_the_engines_retry_during_the_drain_is_not_stopped_again(seed: Seeder, aws: SimulatedAWS, run: Any, workdir: Path) -> None:
    """Nextflow submits its retry of a task drain stopped while the deploy's drain is still going (here:
    before the workflow's drain step is run again): stopping it too would spend its last retry."""
    jobs = _world(seed, (NEXTFLOW_TASK, ORDINARY))
    store = f"file://{workdir}/m"
    assert run("drain", "--queue", QUEUE, "--store", store, "--deploy-id", "d1").code == 0
    # Nextflow sees its task FAILED (143), then submits its retry: later on Batch's clock than the drain's
    # start by more than the half second to which the drain knows that clock (from whole-second Dates).
    aws.batch.advance_clock(1.0)
    retry = seed.job(age=0, jobQueue=QUEUE, **NEXTFLOW_TASK.submit)
    late_ordinary = seed.job(age=0, jobQueue=QUEUE, **{**ORDINARY.submit, "jobName": "late-report"})
    time.sleep(aws.batch.timing.list_lag_seconds)  # ListJobs shows a job this long after it was made
    again = run("drain", "--queue", QUEUE, "--store", store, "--deploy-id", "d1")
    assert again.code == 0, again.err
    assert not aws.batch.jobs[retry].terminated and aws.batch.jobs[late_ordinary].terminated
    stored = records(store, seed, "d1")
    assert stored[retry]["outcome"] == "kept" and stored[retry]["error"] is None
    assert stored[retry]["note"].startswith("submitted by nextflow after the drain began")
    assert "nextflow tasks: 2: 1: left to nextflow: stopped, not resubmitted" in again.out and "1: left running, not stopped" in again.out
    assert run("restore", "--store", store, "--deploy-id", "d1").code == 0
    assert set(replacements_of(aws)) == {jobs[ORDINARY.key], late_ordinary}


# The apply under `jobguard run`: the engine and an application submit a job each while it runs,
# then the apply replaces the queue (Batch ends every job of a deleted queue).
ENGINE_APPLY = """\
import json, os, subprocess, sys, time
import boto3

store, queue = sys.argv[1], sys.argv[2]
batch = boto3.client("batch")
ids = [batch.submit_job(jobQueue=queue, **request)["jobId"] for request in json.loads(os.environ["LATE_JOBS"])]
open("late.json", "w").write(json.dumps(ids))
deadline = time.monotonic() + 60
while not all(i in subprocess.run(
    [sys.executable, "-m", "jobguard", "status", "--store", store, "--deploy-id", "d1", "--json"], capture_output=True, text=True
).stdout for i in ids):
    assert time.monotonic() < deadline, "the watcher never recorded the late jobs"
    time.sleep(0.2)
(described,) = batch.describe_job_queues(jobQueues=[queue])["jobQueues"]
batch.update_job_queue(jobQueue=queue, state="DISABLED")
batch.delete_job_queue(jobQueue=queue)
time.sleep(1.5)
batch.create_job_queue(jobQueueName=queue, state="ENABLED", priority=1, computeEnvironmentOrder=described["computeEnvironmentOrder"])
"""


@pytest.mark.slow
def test_jobguard_run_never_replaces_an_engine_task_the_apply_killed(
    seed: Seeder, aws: SimulatedAWS, run: Any, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drained = _world(seed, (NEXTFLOW_TASK, ORDINARY))
    (workdir / "apply.py").write_text(ENGINE_APPLY)
    late = [{**NEXTFLOW_TASK.submit, "jobName": "RNASEQ_QUANT_late"}, {**ORDINARY.submit, "jobName": "late-report"}]
    monkeypatch.setenv("LATE_JOBS", json.dumps(late))
    store = f"file://{workdir}/m"
    result = run(
        "run", "--store", store, "--queue", QUEUE, "--deploy-id", "d1", "--watch-interval", "0.5",
        "--", sys.executable, str(workdir / "apply.py"), store, QUEUE,
    )  # fmt: skip
    assert result.code == 0, result.err
    late_task, late_report = json.loads((workdir / "late.json").read_text())
    replaced = replacements_of(aws)
    assert set(replaced) == {drained[ORDINARY.key], late_report} and all(len(v) == 1 for v in replaced.values())
    stored = records(store, seed, "d1")
    assert stored[late_task]["engine"] == "nextflow" and stored[late_task]["outcome"] == "skipped"
    assert "left to nextflow" in stored[late_task]["note"]
    assert stored[drained[NEXTFLOW_TASK.key]]["note"].startswith("left to nextflow")
    assert not overlapping(aws)


def test_a_manifest_signed_whole_before_engine_fields_still_verifies(seed: Seeder, aws: SimulatedAWS, run: Any, store: str) -> None:
    """A deploy drained by a jobguard from before pages and engines (records without `engine` fields,
    the signature over the whole document) is restored by this one."""
    jobs = _world(seed, (ORDINARY,))
    assert run("drain", "--store", store, "--queue", QUEUE, "--deploy-id", "d1").code == 0
    document = load_manifest(store, seed, "d1")
    document.pop("page_records", None)
    document["signature"]["algorithm"] = WHOLE
    for job in document["jobs"]:
        del job["engine"], job["engine_role"]
    resign(document, seed)
    write_document(store, seed, "d1", document)
    restored = run("restore", "--store", store, "--deploy-id", "d1")
    assert restored.code == 0, restored.err
    assert set(replacements_of(aws)) == {jobs[ORDINARY.key]}


def test_with_a_grace_period_an_engine_task_finishes_and_a_slow_one_is_left_to_its_engine(
    seed: Seeder, aws: SimulatedAWS, run: Any, workdir: Path
) -> None:
    jobs = _world(seed, (NEXTFLOW_TASK, METAFLOW_TASK))
    finisher = _finish_later(aws, jobs[NEXTFLOW_TASK.key], 0.3)
    store = f"file://{workdir}/m"
    drained = run("drain", "--queue", QUEUE, "--grace", "1s", "--store", store, "--deploy-id", "d1")
    finisher.join()
    assert drained.code == 0, drained.err
    assert not aws.batch.jobs[jobs[NEXTFLOW_TASK.key]].terminated and aws.batch.jobs[jobs[NEXTFLOW_TASK.key]].status == "SUCCEEDED"
    stored = records(store, seed, "d1")
    assert jobs[NEXTFLOW_TASK.key] not in stored  # finished within the grace period: never stopped, nothing recorded
    assert stored[jobs[METAFLOW_TASK.key]]["note"].startswith("left to metaflow")
    assert run("restore", "--store", store, "--deploy-id", "d1").code == 0
    assert not replacements_of(aws)
