"""Jobs a workflow engine submitted and tracks by id: how to recognise them, and what drain does with them.

An engine (Nextflow, Snakemake, Metaflow, Flyte, ...) polls each of its Batch jobs by id. When
jobguard stops one, the engine sees it FAILED and applies its own error strategy: it retries the
task itself or fails the workflow. A replacement from jobguard would then run beside the engine's
retry (two writers to the same outputs), or for nobody (the engine never learns its id). So by
default an engine's *task* is never resubmitted: drain lets it finish within the grace period,
else stops it and leaves the retry to the engine (abandon, "left to ENGINE"). An engine's *head*
job (the driver, when it runs as a Batch job itself) is resubmitted by default: nothing polls it,
and its engine resumes from what the stopped head left (each rule says why).

Recognition is data, not code per engine: a rule matches a JobDetail by globs on its job name, its
job definition's name, its tags, parameters (the job's, else its job definition's defaults),
container environment and command; every criterion a rule gives must
match. Rules from the config file (`engines.rules`) are tried before the built-in ones
(`BUILTIN`); the first match wins. README's "Workflow engines" table gives the source of each fact.
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from .manifest import KEPT, RECORDED, SKIPPED, JobRecord
from .policies import ABANDON, ACTIONS, APP_RETRIES, NOT_RESUBMITTED, RESUBMIT, WAIT, Policy, chosen_by_policy
from .submission import containers_of

TASK, HEAD = "task", "head"
ROLES = (TASK, HEAD)
DEFAULT_ACTION = {TASK: ABANDON, HEAD: RESUBMIT}
Pairs = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class EngineRule:
    """A job matching every criterion given belongs to `engine`, in `role`; patterns are shell-style globs."""

    engine: str
    role: str
    job_name: str | None = None
    job_definition: str | None = None  # the definition's name, without its revision
    tags: Pairs = ()  # (key, value glob): the tag must be present
    parameters: Pairs = ()
    environment: Pairs = ()
    command: str | None = None  # glob on the command, its words joined by spaces
    action: str | None = None  # None: the role's default (task: abandon, head: resubmit)
    why: str = ""
    resume: str | None = None  # glob on the command of a job that resumes its run when resubmitted (a head's -resume)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role {self.role!r}: expected one of {', '.join(ROLES)}")
        if self.action is not None and self.action not in ACTIONS:
            raise ValueError(f"action {self.action!r}: expected one of {', '.join(ACTIONS)}")
        if not (self.job_name or self.job_definition or self.tags or self.parameters or self.environment or self.command):
            raise ValueError("a rule needs at least one of job-name, job-definition, tags, parameters, environment, command")

    @property
    def chosen_action(self) -> str:
        """What drain does with a matching job unless a policy says otherwise."""
        return self.action or DEFAULT_ACTION[self.role]

    def matches(self, job: Mapping[str, Any], definition: Mapping[str, Any] | None = None) -> bool:
        """True when the JobDetail `job` meets every criterion of the rule; parameters are also looked up in the
        job's `definition` (AWS does not document whether DescribeJobs shows the definition's defaults)."""
        definition_name = str(job.get("jobDefinition", "")).rsplit("/", 1)[-1].rsplit(":", 1)[0]
        return (
            _glob(str(job.get("jobName", "")), self.job_name)
            and _glob(definition_name, self.job_definition)
            and _pairs(job.get("tags") or {}, self.tags)
            and (not self.parameters or _pairs(_parameters(job, definition), self.parameters))
            and (not self.environment or _pairs(_environment(job), self.environment))
            and (self.command is None or any(fnmatch.fnmatchcase(" ".join(c), self.command) for c in _commands(job)))
        )


@dataclass(frozen=True)
class Engine:
    """What a rule says of one job."""

    name: str
    role: str
    action: str
    why: str
    resumes: bool | None = None  # whether its command matches its rule's `resume` pattern; None: the rule has none
    resume: str | None = None

    @property
    def label(self) -> str:
        """nextflow task, nextflow head."""
        return f"{self.name} {self.role}"


def classify(job: Mapping[str, Any], rules: Iterable[EngineRule], definition: Mapping[str, Any] | None = None) -> Engine | None:
    """The engine of a JobDetail (with its job definition when known) by the first matching rule; None for a job no engine tracks."""
    for rule in rules:
        if rule.matches(job, definition):
            resumes = None if rule.resume is None else any(fnmatch.fnmatchcase(" ".join(c), rule.resume) for c in _commands(job))
            return Engine(rule.engine, rule.role, rule.chosen_action, rule.why, resumes, rule.resume)
    return None


@dataclass(frozen=True)
class Decision:
    """What drain does with one job, and whether a policy (rather than the job's engine, or the default) said so."""

    action: str
    by_policy: bool = False


def decide(record: JobRecord, policies: tuple[Policy, ...], rules: Iterable[EngineRule]) -> Decision:
    """The one decision for a job: the first matching policy, else its engine's action, else resubmit.

    Every command that could stop or resubmit a job asks this (drain, and the deploy-window sweep):
    an engine's task is never replaced unless a policy says so.
    """
    chosen = chosen_by_policy(policies, record.queue, record.job_name, record.job_definition, record.engine_key)
    if chosen is not None:
        return Decision(chosen, by_policy=True)
    if record.engine and record.engine_role:
        return Decision(engine_action(rules, record.engine, record.engine_role))
    return Decision(RESUBMIT)


def with_engine(
    record: JobRecord, job: Mapping[str, Any], rules: Iterable[EngineRule], definition: Mapping[str, Any] | None = None
) -> JobRecord:
    """`record` of the JobDetail `job`, naming the engine that tracks it (if any)."""
    engine = classify(job, rules, definition)
    if engine is None:
        return record
    note = record.note
    if engine.resumes is not None and engine.action == RESUBMIT:
        said = "it resumes its run" if engine.resumes else "it starts its run over"
        matches = "matches" if engine.resumes else "does not match"
        note = f"{engine.label}: its command {matches} {engine.resume!r}: resubmitted, {said}"
    return replace(record, engine=engine.name, engine_role=engine.role, note=note)


def engine_action(rules: Iterable[EngineRule], engine: str, role: str) -> str:
    """The action of the first rule for this engine and role (a record keeps the engine, not the rule); else the role's default."""
    return next((r.chosen_action for r in rules if r.engine == engine and r.role == role), DEFAULT_ACTION.get(role, RESUBMIT))


def left_to_engine(record: JobRecord) -> str:
    """The note of an engine's job stopped and left to its engine."""
    return outcome_text(ABANDON, record.engine, record.engine_role)


def engine_retry(record: JobRecord, decision: Decision, opened_ms: int | None) -> str | None:
    """Why drain leaves running an engine's task created after the drain began, else None.

    It is the engine's own retry of a task drain stopped (or new work it submitted meanwhile):
    stopping it too would spend the engine's next retry (nf-core allows one) and end its run.
    Created-at and `opened_ms` are both Batch's clock.
    """
    late = opened_ms is not None and record.created_at is not None and record.created_at >= opened_ms
    if not late or record.engine_role != TASK or decision.action != ABANDON or decision.by_policy:
        return None
    return (
        f"submitted by {record.engine} after the drain began (its retry of a stopped task, or new work): left running, "
        f"not stopped again; it is {record.engine}'s to retry if the deploy kills it"
    )


def not_resubmitted(record: JobRecord, policies: tuple[Policy, ...], rules: Iterable[EngineRule], stage: str) -> JobRecord | None:
    """The `skipped` record of a stopped job jobguard must not bring back (its engine's task, or a policy
    abandon / app-retries), else None. Drain asks when the job ends; restore asks again for a job a drain
    left stopping (killed, or past its stop-timeout), or the engine's retry would run beside a replacement."""
    decision = decide(record, policies, rules)
    if decision.action == ABANDON and record.engine and not decision.by_policy:
        return record.moved_to(SKIPPED, stage, error=None, note=left_to_engine(record))
    if decision.action in NOT_RESUBMITTED:
        return record.moved_to(SKIPPED, stage, error=f"policy {decision.action}: stopped, not resubmitted")
    return None


def outcome_text(action: str, engine: str | None = None, role: str | None = None) -> str:
    """What jobguard does with jobs given `action` (of an engine's `role`), as the plan, the summary and the records say it."""
    if action == ABANDON:
        return (
            f"left to {engine}: stopped, not resubmitted ({engine} retries or fails its own {role})"
            if engine
            else "stopped, not resubmitted (policy abandon)"
        )
    if action == WAIT:
        return "not stopped: left running (policy wait)"
    if action == APP_RETRIES:
        return "stopped, not resubmitted: the application retries its own failed jobs (policy app-retries)"
    return "stopped, resubmitted once after the deploy"


def groups(records: Iterable[JobRecord], policies: tuple[Policy, ...], rules: Iterable[EngineRule]) -> list[str]:
    """One line per engine and role (then one for the other jobs), saying what jobguard does with them.

    Empty when no engine's job is among `records`: the plan and summary of a deploy without
    workflow engines stay as they were.
    """
    rules = tuple(rules)
    found: dict[tuple[str, str], list[JobRecord]] = {}
    for record in records:
        found.setdefault((record.engine or "", record.engine_role or ""), []).append(record)
    if set(found) <= {("", "")}:
        return []
    lines = []
    for (engine, role), members in sorted(found.items(), key=lambda item: item[0] == ("", "")):
        texts = Counter(_said(r, decide(r, policies, rules).action) for r in members)
        done = Counter(r.outcome for r in members if r.outcome != RECORDED)
        said = "; ".join(f"{'' if len(texts) == 1 else f'{count}: '}{text}" for text, count in texts.items())
        who = f"{engine} {role}s" if engine else "other jobs"
        outcomes = f" [{', '.join(f'{n} {o}' for o, n in done.items())}]" if done else ""
        lines.append(f"{who}: {len(members)}: {said}{outcomes}")
    return lines


def _said(record: JobRecord, action: str) -> str:
    if record.outcome == KEPT and action != WAIT:  # not stopped after all: an engine's retry, or a line resubmitted too often
        return "left running, not stopped"
    return outcome_text(action, record.engine, record.engine_role)


def _glob(value: str, pattern: str | None) -> bool:
    return pattern is None or fnmatch.fnmatchcase(value, pattern)


def _parameters(job: Mapping[str, Any], definition: Mapping[str, Any] | None) -> dict[str, Any]:
    return {**((definition or {}).get("parameters") or {}), **(job.get("parameters") or {})}


def _pairs(values: Mapping[str, Any], wanted: Pairs) -> bool:
    return all(key in values and fnmatch.fnmatchcase(str(values[key]), pattern) for key, pattern in wanted)


def _environment(job: Mapping[str, Any]) -> dict[str, str]:
    """Every variable of every container of the job (Batch merges the overrides into the definition's)."""
    found: dict[str, str] = {}
    for container, _flavour in containers_of(dict(job)):
        for variable in container.get("environment") or container.get("env") or []:
            if "name" in variable:
                found.setdefault(str(variable["name"]), str(variable.get("value", "")))
    return found


def _commands(job: Mapping[str, Any]) -> list[list[str]]:
    return [[str(word) for word in container.get("command") or []] for container, _flavour in containers_of(dict(job))]


# -- the built-in rules (README "Workflow engines" gives the source of every fact) --------------
BUILTIN: tuple[EngineRule, ...] = (
    EngineRule(
        "nextflow",
        TASK,
        job_definition="nf-*",
        parameters=(("nf-token", "*"),),
        why="Nextflow registers its task job definitions as nf-IMAGE with an nf-token parameter and polls each job by id; "
        "on a failure its errorStrategy retries the task or stops the run",
    ),
    EngineRule(
        "nextflow",
        HEAD,
        environment=(("NF_JOB_QUEUE", "*"), ("NF_WORKDIR", "*")),
        resume="*-resume*",
        why="a Nextflow head job (NF_JOB_QUEUE and NF_WORKDIR set, as the AWS genomics-workflows head definition does) "
        "syncs its .nextflow cache to S3 when it ends; resubmitted with -resume in its command it reuses the cached "
        "tasks, without -resume it starts the run over. Nothing polls a head job",
    ),
    EngineRule(
        "snakemake",
        HEAD,
        job_name="snakejob-_aws_batch_coordinator_submit-*",
        why="the Snakemake AWS Batch coordinator is submitted fire-and-forget (--immediate-submit: nothing polls it) and "
        "keeps its .snakemake metadata in S3; a new coordinator reruns only the jobs whose outputs are missing",
    ),
    EngineRule(
        "snakemake",
        TASK,
        job_name="snakejob-*",
        job_definition="snakejob-def-*",
        why="the Snakemake AWS Batch executor registers a snakejob-def-RULE-UUID definition per job and polls it by id; "
        "a failed job is retried by Snakemake (--retries) or fails the workflow",
    ),
    EngineRule(
        "metaflow",
        TASK,
        parameters=(("metaflow.flow_name", "*"), ("metaflow.step_name", "*")),
        why="Metaflow passes its task's flow, run, step and task ids as job parameters and waits on the job by id; "
        "@retry launches a new attempt as a new job",
    ),
    EngineRule(
        "flyte",
        TASK,
        environment=(("FLYTE_FAIL_ON_ERROR", "true"),),
        why="Flyte's AWS Batch plugin sets FLYTE_FAIL_ON_ERROR=true on every job it submits and tracks it by id; "
        "a FAILED job is a retryable failure Flyte retries itself",
    ),
)
