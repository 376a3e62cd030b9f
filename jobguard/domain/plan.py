"""Read a Terraform plan (`terraform show -json PLANFILE`) and say which Batch work it puts at risk.

Two kinds of risk, because the apply does two different things to a queue's jobs:

- The queue goes (deleted or replaced; a renamed queue is replaced), or a resource the user lists
  as a trigger changes (then every configured queue, as nobody knows what it does): every active
  job of the queue is at risk.
- The queue stays but instances are taken away from it: a compute environment deleted or
  replaced, removed from the queue's compute_environment_order, or given an *infrastructure
  update* (any change of an EC2/Spot environment's compute resources other than min/max/desired
  vCPUs, which replaces its instances). Only the jobs placed on instances die: STARTING and
  RUNNING jobs (an array parent counts while its children run), and the jobs PENDING on them,
  which Batch fails with them. Queued jobs stay in the queue and run on the new instances. An
  infrastructure update whose update_policy has terminate_jobs_on_update false lets running jobs
  finish for up to job_execution_timeout_minutes (AWS's defaults: false, 30 minutes) before it
  replaces their instances: that is their grace period.

Not at risk: a new job-definition revision (running jobs keep theirs), a scaling-only change, and
any in-place update of a Fargate compute environment (AWS replaces no running task; new jobs get
the new settings).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError
from .documents import parse_json

# Compute-resource fields whose change only scales the environment.
SCALING_FIELDS = frozenset({"desired_vcpus", "max_vcpus", "min_vcpus"})
INFRASTRUCTURE_FIELDS = ("compute_resources", "type", "compute_environment_name", "compute_environment_name_prefix")
MAX_PLAN_BYTES = 512 * 1024 * 1024


# AWS's defaults for a compute environment's update policy (UpdatePolicy, Batch API reference).
DEFAULT_TERMINATE_ON_UPDATE = False
DEFAULT_JOB_EXECUTION_TIMEOUT_MINUTES = 30
MAX_JOB_EXECUTION_TIMEOUT_MINUTES = 7200  # UpdatePolicy.jobExecutionTimeoutMinutes: 1 to 7200 (botocore's Batch model)


@dataclass(frozen=True)
class Risk:
    """One change in the plan that puts queues at risk, and why."""

    address: str
    reason: str
    queue: str | None = None  # a job queue at risk, by name
    compute_environment: str | None = None  # a compute environment at risk, by ARN or name
    every_queue: bool = False  # a trigger: every configured queue is at risk
    successor: str | None = None  # a job queue replaced under a new name: the new name
    instances_only: bool = False  # the queue stays; only the jobs on its instances are at risk
    grace_minutes: int = 0  # instances_only: running jobs may finish for this long first (an update that keeps them)
    update: bool = False  # instances_only by an infrastructure update (Batch ends the jobs; not documented as a lost host)

    @property
    def queue_goes(self) -> bool:
        """The queue itself is deleted or replaced."""
        return self.queue is not None and not self.instances_only


@dataclass(frozen=True)
class Exposure:
    """What a plan does to one queue's jobs, all its risks taken together."""

    reason: str
    every_job: bool = True  # every active job is at risk; False: only those on instances (STARTING, RUNNING)
    grace_minutes: int = 0  # not every_job: running jobs may finish for this long before their instances go
    # not every_job, and no infrastructure update among the risks: the instances are terminated, so a job whose
    # retryStrategy retries a lost host is run again by Batch (domain/host_retry.py). What an update does to the
    # jobs it ends (terminate_jobs_on_update, or at the timeout) is not documented: those jobs are drained.
    hosts_lost: bool = False


def exposure(found: list[Risk]) -> Exposure:
    """The broadest of a queue's risks: a queue that goes wins over instances taken away, and
    instances taken at once over an update that lets running jobs finish (which of the queue's
    environments runs a job cannot be told from the job); of several such updates, the shortest
    grace period."""
    if not found:
        raise ValueError("exposure of no risk")
    whole = [r for r in found if not r.instances_only]
    if whole:
        return Exposure(whole[0].reason)
    at_once = [r for r in found if r.grace_minutes <= 0]
    if at_once:
        return Exposure(at_once[0].reason, every_job=False, hosts_lost=not any(r.update for r in found))
    shortest = min(found, key=lambda r: r.grace_minutes)
    return Exposure(shortest.reason, every_job=False, grace_minutes=shortest.grace_minutes)


@dataclass(frozen=True)
class Change:
    """One resource change of a plan, its shape checked."""

    address: str
    kind: str
    actions: tuple[str, ...]
    before: dict[str, Any]
    after: dict[str, Any]
    where: str = ""  # the change's place in the plan, for errors


def read_plan(body: bytes, where: str) -> list[Change]:
    """The resource changes of a plan document; anything that is not a plan is a UsageError naming the field."""
    if len(body) > MAX_PLAN_BYTES:
        raise UsageError(f"{where}: bigger than {MAX_PLAN_BYTES} bytes: not a Terraform plan")
    try:
        document = parse_json(body, where)
    except UsageError as exc:
        raise UsageError(f"{exc}; write the plan with `terraform show -json PLANFILE > plan.json`") from None
    if not isinstance(document, dict) or "format_version" not in document:
        raise UsageError(f"{where}: not a Terraform JSON plan (no format_version); write it with `terraform show -json PLANFILE`")
    changes = document.get("resource_changes", [])
    if not isinstance(changes, list):
        raise UsageError(f"{where}: resource_changes: expected a list")
    return [_change(c, f"{where}: resource_changes[{i}]") for i, c in enumerate(changes)]


def _change(entry: Any, where: str) -> Change:
    if not isinstance(entry, dict):
        raise UsageError(f"{where}: expected an object")
    change = entry.get("change")
    if not isinstance(change, dict):
        raise UsageError(f"{where}.change: expected an object")
    actions = change.get("actions", [])
    if not isinstance(actions, list) or not all(isinstance(a, str) for a in actions):
        raise UsageError(f"{where}.change.actions: expected a list of strings")
    sides = {}
    for side in ("before", "after"):
        value = change.get(side)
        if value is not None and not isinstance(value, dict):
            raise UsageError(f"{where}.change.{side}: expected an object or null")
        sides[side] = value or {}
    address, kind = entry.get("address", ""), entry.get("type", "")
    if not isinstance(address, str) or not isinstance(kind, str):
        raise UsageError(f"{where}: address and type must be strings")
    return Change(address, kind, tuple(actions), sides["before"], sides["after"], where)


def risks(changes: list[Change], triggers: tuple[str, ...]) -> list[Risk]:
    """Every change that puts Batch work at risk. A trigger puts every job of every configured queue
    at risk, even where the change itself would take only instances away (the user said so)."""
    found: list[Risk] = []
    for change in changes:
        if set(change.actions) <= {"no-op", "read"}:
            continue
        risk = _risk(change)
        if risk is not None:
            found.append(risk)
        if (risk is None or risk.instances_only) and any(fnmatch.fnmatchcase(change.address, p) for p in triggers):
            found.append(Risk(change.address, f"{change.address} will be {_verb(change.actions)} and is a trigger", every_queue=True))
    return found


def _risk(change: Change) -> Risk | None:
    address, before, after, actions = change.address, change.before, change.after, change.actions
    if change.kind == "aws_batch_job_queue" and "delete" in actions:
        name, new = before.get("name"), after.get("name") if "create" in actions else None
        if not isinstance(name, str) or not name:
            raise UsageError(f"{change.where}.change.before.name: expected the job queue's name, got {type(name).__name__}")
        if isinstance(new, str) and new and new != name:
            return Risk(address, f"{address} will be replaced and renamed {new}", queue=name, successor=new)
        return Risk(address, f"{address} will be {_verb(actions)}", queue=name)
    if change.kind == "aws_batch_job_queue" and "update" in actions:
        return _order_risk(change)
    if change.kind != "aws_batch_compute_environment":
        return None
    for side, values in (("before", before), ("after", after)):
        if values.get("compute_resources") is not None and not isinstance(values["compute_resources"], list):
            raise UsageError(f"{change.where}.change.{side}.compute_resources: expected a list or null")
    environment = _identifier(before)
    if environment is None and ("delete" in actions or "update" in actions):
        raise UsageError(f"{change.where}.change.before: no arn or compute_environment_name: cannot tell which compute environment changes")
    if "delete" in actions:
        return Risk(address, f"{address} will be {_verb(actions)}", compute_environment=environment, instances_only=True)
    if "update" in actions and not _fargate(before) and _replaces_instances(before, after):
        terminate, minutes = _update_policy(change)
        if terminate:
            return Risk(
                address,
                f"{address} gets an infrastructure update that terminates running jobs",
                compute_environment=environment,
                instances_only=True,
                update=True,
            )
        return Risk(
            address,
            f"{address} gets an infrastructure update that lets running jobs run up to {minutes} minutes, then replaces their instances",
            compute_environment=environment,
            instances_only=True,
            grace_minutes=minutes,
            update=True,
        )
    return None


def _order_risk(change: Change) -> Risk | None:
    """A queue kept, with compute environments taken out of its order: their instances are no longer its."""
    name = change.before.get("name")
    if not isinstance(name, str) or not name:
        raise UsageError(f"{change.where}.change.before.name: expected the job queue's name, got {type(name).__name__}")
    removed = sorted(_environments(change.before, change.where, "before") - _environments(change.after, change.where, "after"))
    if not removed:
        return None
    names = ", ".join(e.rsplit("/", 1)[-1] for e in removed)
    return Risk(change.address, f"{change.address} will lose compute environment {names} from its order", queue=name, instances_only=True)


def _environments(queue: dict[str, Any], where: str, side: str) -> set[str]:
    """The compute environments of a queue's order (compute_environment_order, or the provider's
    older compute_environments list), by name: the order names ARNs, a plan may name either."""
    found: set[str] = set()
    for entry in _list(queue.get("compute_environment_order")):
        value = entry.get("compute_environment") if isinstance(entry, dict) else None
        if value is not None and not isinstance(value, str):
            raise UsageError(f"{where}.change.{side}.compute_environment_order: expected compute_environment strings")
        if value:
            found.add(value.rsplit("/", 1)[-1])
    for value in _list(queue.get("compute_environments")):
        if isinstance(value, str) and value:
            found.add(value.rsplit("/", 1)[-1])
    return found


def _update_policy(change: Change) -> tuple[bool, int]:
    """(terminate_jobs_on_update, job_execution_timeout_minutes) the update runs under: the plan's
    new update_policy; else the one the environment has; else AWS's defaults."""
    for side, values in (("after", change.after), ("before", change.before)):
        policies = [p for p in _list(values.get("update_policy")) if isinstance(p, dict)]
        if not policies:
            continue
        terminate, minutes = policies[0].get("terminate_jobs_on_update"), policies[0].get("job_execution_timeout_minutes")
        if terminate is not None and not isinstance(terminate, bool):
            raise UsageError(f"{change.where}.change.{side}.update_policy[0].terminate_jobs_on_update: expected true or false")
        if minutes is not None and (
            isinstance(minutes, bool) or not isinstance(minutes, int) or not 1 <= minutes <= MAX_JOB_EXECUTION_TIMEOUT_MINUTES
        ):  # drain waits that long: a value Batch would refuse must not hold the pipeline for days
            raise UsageError(
                f"{change.where}.change.{side}.update_policy[0].job_execution_timeout_minutes: expected a whole number of minutes "
                f"from 1 to {MAX_JOB_EXECUTION_TIMEOUT_MINUTES}, got {minutes!r}"[:400]
            )
        return (
            DEFAULT_TERMINATE_ON_UPDATE if terminate is None else terminate,
            DEFAULT_JOB_EXECUTION_TIMEOUT_MINUTES if minutes is None else minutes,
        )
    return DEFAULT_TERMINATE_ON_UPDATE, DEFAULT_JOB_EXECUTION_TIMEOUT_MINUTES


def _identifier(before: dict[str, Any]) -> str | None:
    for key in ("arn", "compute_environment_name", "name"):
        value = before.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _fargate(before: dict[str, Any]) -> bool:
    return any(isinstance(r, dict) and str(r.get("type", "")).startswith("FARGATE") for r in _list(before.get("compute_resources")))


def _verb(actions: tuple[str, ...]) -> str:
    if "delete" in actions and "create" in actions:
        return "replaced"
    return {"delete": "deleted", "create": "created", "update": "updated"}.get(actions[0], actions[0]) if actions else "changed"


def _replaces_instances(before: dict[str, Any], after: dict[str, Any]) -> bool:
    for field in INFRASTRUCTURE_FIELDS:
        old, new = before.get(field), after.get(field)
        if field == "compute_resources":
            old, new = _without_scaling(old), _without_scaling(new)
        if old != new:
            return True
    return False


def _without_scaling(resources: Any) -> Any:
    return [{k: v for k, v in r.items() if k not in SCALING_FIELDS} if isinstance(r, dict) else r for r in _list(resources)]


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
