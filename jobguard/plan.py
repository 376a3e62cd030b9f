"""Read a Terraform plan (`terraform show -json PLANFILE`) and say which Batch work it puts at risk.

At risk: a job queue deleted or replaced; a compute environment deleted, replaced, or updated in
a way that replaces its instances (an infrastructure update); any resource the user lists as a
trigger (then every configured queue). A new job-definition revision puts nothing at risk:
running jobs keep theirs.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UsageError

# Compute-resource fields whose change only scales the environment; any other change of
# compute_resources is an infrastructure update that replaces instances.
SCALING_FIELDS = frozenset({"desired_vcpus", "max_vcpus", "min_vcpus"})
INFRASTRUCTURE_FIELDS = ("compute_resources", "type", "compute_environment_name", "compute_environment_name_prefix")


@dataclass(frozen=True)
class Risk:
    """One change in the plan that puts queues at risk, and why."""

    address: str
    reason: str
    queue: str | None = None  # a job queue at risk, by name
    compute_environment: str | None = None  # a compute environment at risk, by ARN or name
    every_queue: bool = False  # a trigger: every configured queue is at risk


def read_plan(path: str) -> list[dict[str, Any]]:
    """The resource changes of a plan file; a file that is not a plan is a usage error."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"{path}: cannot read plan ({exc.strerror})") from None
    except ValueError as exc:
        raise UsageError(f"{path}: not a JSON plan ({exc}); write it with `terraform show -json PLANFILE > {path}`") from None
    if not isinstance(document, dict) or "format_version" not in document:
        raise UsageError(f"{path}: not a Terraform JSON plan (no format_version); write it with `terraform show -json PLANFILE`")
    changes = document.get("resource_changes", [])
    if not isinstance(changes, list):
        raise UsageError(f"{path}: resource_changes is not a list")
    return [c for c in changes if isinstance(c, dict) and isinstance(c.get("change"), dict)]


def risks(changes: list[dict[str, Any]], triggers: tuple[str, ...]) -> list[Risk]:
    """Every change that puts Batch work at risk."""
    found: list[Risk] = []
    for change in changes:
        actions = change["change"].get("actions") or []
        if set(actions) <= {"no-op", "read"}:
            continue
        address = str(change.get("address", ""))
        kind = change.get("type")
        before = change["change"].get("before") or {}
        after = change["change"].get("after") or {}
        verb = _verb(actions)
        if kind == "aws_batch_job_queue" and "delete" in actions:
            found.append(Risk(address, f"{address} will be {verb}", queue=before.get("name")))
        elif kind == "aws_batch_compute_environment" and "delete" in actions:
            found.append(
                Risk(address, f"{address} will be {verb}", compute_environment=before.get("arn") or before.get("compute_environment_name"))
            )
        elif kind == "aws_batch_compute_environment" and "update" in actions and _replaces_instances(before, after):
            terminate = any(p.get("terminate_jobs_on_update") for p in after.get("update_policy") or [])
            how = "terminates running jobs" if terminate else "replaces instances once running jobs end or time out"
            found.append(
                Risk(
                    address,
                    f"{address} gets an infrastructure update that {how}",
                    compute_environment=before.get("arn") or before.get("compute_environment_name"),
                )
            )
        elif any(fnmatch.fnmatchcase(address, pattern) for pattern in triggers):
            found.append(Risk(address, f"{address} will be {verb} and is a trigger", every_queue=True))
    return found


def _verb(actions: list[str]) -> str:
    if "delete" in actions and "create" in actions:
        return "replaced"
    return {"delete": "deleted", "create": "created", "update": "updated"}.get(actions[0], actions[0])


def _replaces_instances(before: dict[str, Any], after: dict[str, Any]) -> bool:
    for field in INFRASTRUCTURE_FIELDS:
        old, new = before.get(field), after.get(field)
        if field == "compute_resources":
            old, new = _without_scaling(old), _without_scaling(new)
        if old != new:
            return True
    return False


def _without_scaling(resources: Any) -> Any:
    if not isinstance(resources, list):
        return resources
    return [{k: v for k, v in r.items() if k not in SCALING_FIELDS} if isinstance(r, dict) else r for r in resources]
