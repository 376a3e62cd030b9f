"""Recover a job *as it was submitted* from what DescribeJobs returns.

DescribeJobs answers with the merged spec: the job definition revision plus the submission's
overrides. Replaying the merged values would pin the old revision's values over a new one, so
every value is compared with the job's own revision and only what differs is kept. Whatever
the job did not override then comes from the revision the deploy put in place.
"""

from __future__ import annotations

from typing import Any

RESERVED_ENV_PREFIX = "AWS_BATCH_"
JOBGUARD_TAG_PREFIX = "jobguard:"
# Legacy top-level container fields that mean the same as resourceRequirements entries.
_LEGACY_RESOURCES = {"vcpus": "VCPU", "memory": "MEMORY"}

Json = dict[str, Any]


def recover_submission(job: Json, definition: Json) -> Json:
    """SubmitJob arguments (without jobDefinition) that reproduce `job` on a new revision."""
    request: Json = {"jobName": job["jobName"]}
    _put(request, "parameters", _changed_entries(job.get("parameters"), definition.get("parameters")))
    if "container" in job and definition.get("containerProperties") is not None:
        _put(request, "containerOverrides", container_overrides(job["container"], definition["containerProperties"]))
    if job.get("nodeProperties") and definition.get("nodeProperties"):
        _put(request, "nodeOverrides", node_overrides(job["nodeProperties"], definition["nodeProperties"]))
    if job.get("ecsProperties") and definition.get("ecsProperties"):
        _put(request, "ecsPropertiesOverride", ecs_overrides(job["ecsProperties"], definition["ecsProperties"]))
    if job.get("eksProperties") and definition.get("eksProperties"):
        _put(request, "eksPropertiesOverride", eks_overrides(job["eksProperties"], definition["eksProperties"]))
    size = (job.get("arrayProperties") or {}).get("size")
    if size:
        request["arrayProperties"] = {"size": size}
    depends_on = [{k: v for k, v in d.items() if k in ("jobId", "type")} for d in job.get("dependsOn") or []]
    _put(request, "dependsOn", depends_on)
    for field in ("retryStrategy", "timeout", "propagateTags"):
        if job.get(field) not in (None, definition.get(field)):
            request[field] = job[field]
    priority = job.get("schedulingPriority")
    if priority is not None and priority != definition.get("schedulingPriority"):
        request["schedulingPriorityOverride"] = priority
    _put(request, "shareIdentifier", job.get("shareIdentifier"))
    tags = {
        k: v
        for k, v in _changed_entries(job.get("tags"), definition.get("tags")).items()
        if not k.startswith(("aws:", JOBGUARD_TAG_PREFIX))
    }
    _put(request, "tags", tags)
    return request


def container_overrides(merged: Json, base: Json) -> Json:
    """containerOverrides (command, environment, resourceRequirements, instanceType) of one container."""
    overrides: Json = {}
    if merged.get("command") is not None and merged.get("command") != base.get("command"):
        overrides["command"] = merged["command"]
    _put(overrides, "environment", _changed_env(merged.get("environment"), base.get("environment")))
    mine, theirs = _resources(merged), _resources(base)
    _put(
        overrides,
        "resourceRequirements",
        [{"type": t, "value": v} for t, v in mine.items() if theirs.get(t) != v],
    )
    if merged.get("instanceType") not in (None, base.get("instanceType")):
        overrides["instanceType"] = merged["instanceType"]
    return overrides


def node_overrides(merged: Json, base: Json) -> Json:
    """nodeOverrides: the node count and the per-range container overrides of a multi-node job."""
    overrides: Json = {}
    if merged.get("numNodes") not in (None, base.get("numNodes")):
        overrides["numNodes"] = merged["numNodes"]
    base_ranges = {r.get("targetNodes"): r for r in base.get("nodeRangeProperties") or []}
    per_range = []
    for node_range in merged.get("nodeRangeProperties") or []:
        target = node_range.get("targetNodes")
        container = container_overrides(node_range.get("container") or {}, (base_ranges.get(target) or {}).get("container") or {})
        if container:
            per_range.append({"targetNodes": target, "containerOverrides": container})
    _put(overrides, "nodePropertyOverrides", per_range)
    return overrides


def ecs_overrides(merged: Json, base: Json) -> Json:
    """ecsPropertiesOverride: per-container overrides of each task, matched by container name."""
    tasks = []
    base_tasks = base.get("taskProperties") or []
    for index, task in enumerate(merged.get("taskProperties") or []):
        base_task = base_tasks[index] if index < len(base_tasks) else {}
        containers = _named_overrides(task.get("containers"), base_task.get("containers"), container_overrides)
        tasks.append({"containers": containers} if containers else {})
    return {"taskProperties": tasks} if any(tasks) else {}


def eks_overrides(merged: Json, base: Json) -> Json:
    """eksPropertiesOverride: command, args, env and resources of each pod container, by name."""
    pod, base_pod = merged.get("podProperties") or {}, base.get("podProperties") or {}
    overrides: Json = {}
    for key in ("containers", "initContainers"):
        _put(overrides, key, _named_overrides(pod.get(key), base_pod.get(key), _eks_container_overrides))
    return {"podProperties": overrides} if overrides else {}


def _eks_container_overrides(merged: Json, base: Json) -> Json:
    overrides: Json = {}
    for field in ("command", "args", "resources"):
        if merged.get(field) not in (None, base.get(field)):
            overrides[field] = merged[field]
    _put(overrides, "env", _changed_env(merged.get("env"), base.get("env")))
    return overrides


def _named_overrides(merged: list[Json] | None, base: list[Json] | None, diff: Any) -> list[Json]:
    by_name = {c.get("name"): c for c in base or []}
    result = []
    for container in merged or []:
        changed = diff(container, by_name.get(container.get("name")) or {})
        if changed:
            result.append({"name": container.get("name"), **changed})
    return result


def _changed_env(merged: list[Json] | None, base: list[Json] | None) -> list[Json]:
    """Entries the submission added or changed; AWS_BATCH_* are set by Batch and may not be passed."""
    base_values = {e["name"]: e.get("value") for e in base or []}
    return [
        {"name": e["name"], "value": e.get("value", "")}
        for e in merged or []
        if not e["name"].startswith(RESERVED_ENV_PREFIX) and base_values.get(e["name"], object()) != e.get("value")
    ]


def _resources(container: Json) -> dict[str, str]:
    resources = {legacy: str(container[field]) for field, legacy in _LEGACY_RESOURCES.items() if container.get(field) is not None}
    resources.update({r["type"]: str(r["value"]) for r in container.get("resourceRequirements") or []})
    return resources


def _changed_entries(merged: dict[str, str] | None, base: dict[str, str] | None) -> dict[str, str]:
    base = base or {}
    return {k: v for k, v in (merged or {}).items() if base.get(k) != v}


def _put(target: Json, key: str, value: Any) -> None:
    """Set `key` only when `value` says something: empty overrides are left out of the request."""
    if value not in (None, "", [], {}):
        target[key] = value
