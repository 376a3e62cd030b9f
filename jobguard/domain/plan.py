"""Read a Terraform plan (`terraform show -json PLANFILE`) and say which Batch work it puts at risk.

At risk: a job queue deleted or replaced (a renamed queue is replaced); a compute environment
deleted or replaced; an EC2/Spot compute environment given an *infrastructure update* (any change
of its compute resources other than min/max/desired vCPUs, which replaces its instances); any
resource the user lists as a trigger (then every configured queue). Not at risk: a new
job-definition revision (running jobs keep theirs), a scaling-only change, and any in-place update
of a Fargate compute environment (AWS replaces no running task; new jobs get the new settings).
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


@dataclass(frozen=True)
class Risk:
    """One change in the plan that puts queues at risk, and why."""

    address: str
    reason: str
    queue: str | None = None  # a job queue at risk, by name
    compute_environment: str | None = None  # a compute environment at risk, by ARN or name
    every_queue: bool = False  # a trigger: every configured queue is at risk
    successor: str | None = None  # a job queue replaced under a new name: the new name


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
    """Every change that puts Batch work at risk."""
    found: list[Risk] = []
    for change in changes:
        if set(change.actions) <= {"no-op", "read"}:
            continue
        risk = _risk(change)
        if risk is None and any(fnmatch.fnmatchcase(change.address, p) for p in triggers):
            risk = Risk(change.address, f"{change.address} will be {_verb(change.actions)} and is a trigger", every_queue=True)
        if risk is not None:
            found.append(risk)
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
    if change.kind != "aws_batch_compute_environment":
        return None
    for side, values in (("before", before), ("after", after)):
        if values.get("compute_resources") is not None and not isinstance(values["compute_resources"], list):
            raise UsageError(f"{change.where}.change.{side}.compute_resources: expected a list or null")
    environment = _identifier(before)
    if environment is None and ("delete" in actions or "update" in actions):
        raise UsageError(f"{change.where}.change.before: no arn or compute_environment_name: cannot tell which compute environment changes")
    if "delete" in actions:
        return Risk(address, f"{address} will be {_verb(actions)}", compute_environment=environment)
    if "update" in actions and not _fargate(before) and _replaces_instances(before, after):
        terminate = any(isinstance(p, dict) and p.get("terminate_jobs_on_update") for p in _list(after.get("update_policy")))
        how = "terminates running jobs" if terminate else "replaces instances once running jobs end or time out"
        return Risk(address, f"{address} gets an infrastructure update that {how}", compute_environment=environment)
    return None


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
