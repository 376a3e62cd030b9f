"""What AWS Batch shows for a registered job definition and a submitted job, for the simulation.

The other direction of `jobguard.domain.submission`: that module recovers a SubmitJob request
from a JobDetail; this one makes the JobDetail from the request. It is written separately, from
the API reference, so that a test can check the two agree (recovering what was merged gives back
the request). Pure functions: no clock, no state, no AWS.

Like real Batch, DescribeJobs shows the *merged* spec with defaults filled in (retryStrategy's
``evaluateOnExit: []``, ``propagateTags: false``, empty container lists, the ``Default`` name of
an unnamed EKS container), environment variables in no particular order (here: by name) and
AWS_BATCH_* variables added to every container.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

Json = dict[str, Any]

_DEFINITION_FIELDS = (
    "parameters",
    "schedulingPriority",
    "retryStrategy",
    "containerProperties",
    "timeout",
    "nodeProperties",
    "tags",
    "propagateTags",
    "platformCapabilities",
    "ecsProperties",
    "eksProperties",
    "consumableResourceProperties",
)
# Lists DescribeJobs shows empty in a container when the definition left them out; a job's own
# container (ContainerDetail) also lists its network interfaces, a node range's does not.
_CONTAINER_LISTS = ("volumes", "environment", "mountPoints", "ulimits", "resourceRequirements", "secrets")
_LEGACY_FIELDS = {"VCPU": "vcpus", "MEMORY": "memory"}
DEFAULT_EKS_CONTAINER = "Default"


def described_definition(request: Json, arn: str, revision: int, status: str) -> Json:
    """A RegisterJobDefinition `request` as DescribeJobDefinitions returns the revision.

    Properties are kept as registered; the only field added is containerOrchestrationType.
    """
    described: Json = {
        "jobDefinitionName": request["jobDefinitionName"],
        "jobDefinitionArn": arn,
        "revision": revision,
        "status": status,
        "type": request["type"],
    }
    described.update({field: copy.deepcopy(request[field]) for field in _DEFINITION_FIELDS if field in request})
    described["containerOrchestrationType"] = "EKS" if _uses_eks(request) else "ECS"
    return described


def merged_detail(definition: Json, request: Json, job_id: str, queue_name: str, array_index: int | None) -> Json:
    """The spec part of the JobDetail DescribeJobs returns for SubmitJob `request` on `definition`.

    `definition` is as DescribeJobDefinitions shows it; `array_index` is set for an array child.
    Returns jobId, jobName, jobDefinition (the ARN) and the merged spec; no jobArn, jobQueue,
    status or times (the simulation adds those). An ECS container override without a name
    applies to the task's only container and is ignored when the task has several; an override
    naming no container of the definition is ignored.
    """
    detail: Json = {
        "jobId": job_id,
        "jobName": request["jobName"],
        "jobDefinition": definition["jobDefinitionArn"],
        "parameters": {**(definition.get("parameters") or {}), **(request.get("parameters") or {})},
        "dependsOn": copy.deepcopy(request.get("dependsOn") or []),
        "propagateTags": _first(request.get("propagateTags"), definition.get("propagateTags"), False),
    }
    _merge_properties(detail, definition, request)
    _merge_job_settings(detail, definition, request)
    if array_index is not None:
        detail["arrayProperties"] = {"index": array_index}
    elif (request.get("arrayProperties") or {}).get("size"):
        detail["arrayProperties"] = {"size": request["arrayProperties"]["size"]}
    variables = {"AWS_BATCH_JOB_ID": job_id, "AWS_BATCH_JQ_NAME": queue_name, "AWS_BATCH_JOB_ATTEMPT": "1"}
    if array_index is not None:
        variables["AWS_BATCH_JOB_ARRAY_INDEX"] = str(array_index)
    for container, field in _containers(detail):
        container[field] = _environment(container.get(field), [{"name": k, "value": v} for k, v in variables.items()])
    return detail


def _merge_properties(detail: Json, definition: Json, request: Json) -> None:
    """container / nodeProperties / ecsProperties / eksProperties / consumableResourceProperties, merged."""
    if definition.get("containerProperties") is not None:
        detail["container"] = {
            "networkInterfaces": [],
            **_container(definition["containerProperties"], request.get("containerOverrides") or {}),
        }
    if definition.get("nodeProperties"):
        detail["nodeProperties"] = _nodes(definition["nodeProperties"], request.get("nodeOverrides") or {})
    if definition.get("ecsProperties"):
        detail["ecsProperties"] = _ecs(definition["ecsProperties"], request.get("ecsPropertiesOverride") or {})
    if definition.get("eksProperties"):
        detail["eksProperties"] = _eks(definition["eksProperties"], request.get("eksPropertiesOverride") or {})
    consumable = _consumable(definition.get("consumableResourceProperties"), request.get("consumableResourcePropertiesOverride"))
    if consumable is not None:
        detail["consumableResourceProperties"] = consumable


def _merge_job_settings(detail: Json, definition: Json, request: Json) -> None:
    """retryStrategy (with evaluateOnExit filled in), timeout, priority, capabilities, share, tags."""
    retry = request.get("retryStrategy") or definition.get("retryStrategy")
    if retry:
        detail["retryStrategy"] = {"evaluateOnExit": [], **copy.deepcopy(retry)}
    timeout = request.get("timeout") or definition.get("timeout")
    if timeout:
        detail["timeout"] = copy.deepcopy(timeout)
    priority = _first(request.get("schedulingPriorityOverride"), definition.get("schedulingPriority"))
    if priority is not None:
        detail["schedulingPriority"] = priority
    for field, value in (
        ("platformCapabilities", definition.get("platformCapabilities")),
        ("shareIdentifier", request.get("shareIdentifier")),
        ("tags", request.get("tags")),  # the job's own: a definition's tags are not the job's
    ):
        if value:
            detail[field] = copy.deepcopy(value)


def _container(base: Json, overrides: Json) -> Json:
    """A container (ContainerProperties) with containerOverrides applied."""
    merged = copy.deepcopy(base)
    for field in _CONTAINER_LISTS:
        merged.setdefault(field, [])
    _apply_container_overrides(merged, overrides, "environment")
    for field in ("vcpus", "memory", "instanceType"):  # vcpus/memory: the deprecated forms
        if overrides.get(field) is not None:
            merged[field] = overrides[field]
    return merged


def _apply_container_overrides(merged: Json, overrides: Json, env_field: str) -> None:
    """command replaced, environment merged by name, resourceRequirements merged by type."""
    if overrides.get("command"):
        merged["command"] = list(overrides["command"])
    if overrides.get(env_field):
        merged[env_field] = _environment(merged.get(env_field), overrides[env_field])
    for requirement in overrides.get("resourceRequirements") or []:
        kind = requirement["type"]
        merged["resourceRequirements"] = [r for r in merged.get("resourceRequirements") or [] if r.get("type") != kind] + [
            dict(requirement)
        ]
        merged.pop(_LEGACY_FIELDS.get(kind, ""), None)  # the override replaces the legacy field too


def _environment(base: list[Json] | None, overrides: list[Json]) -> list[Json]:
    """Variables merged by name, listed by name: DescribeJobs keeps no order of its own."""
    merged = {entry["name"]: entry for entry in base or []}
    merged.update({entry["name"]: dict(entry) for entry in overrides})
    return [merged[name] for name in sorted(merged)]


def _nodes(base: Json, overrides: Json) -> Json:
    """nodeProperties with numNodes and every per-range override applied to the ranges it covers."""
    merged = copy.deepcopy(base)
    if overrides.get("numNodes"):
        merged["numNodes"] = overrides["numNodes"]
    for node_range in merged.get("nodeRangeProperties") or []:
        if node_range.get("container") is not None:
            node_range["container"] = _container(node_range["container"], {})
        for override in overrides.get("nodePropertyOverrides") or []:
            if covers(override["targetNodes"], node_range["targetNodes"], merged["numNodes"]):
                _apply_range_override(node_range, override)
    return merged


def _apply_range_override(node_range: Json, override: Json) -> None:
    if node_range.get("container") is not None:
        node_range["container"] = _container(node_range["container"], override.get("containerOverrides") or {})
    if override.get("instanceTypes"):
        node_range["instanceTypes"] = list(override["instanceTypes"])
    if node_range.get("ecsProperties"):
        node_range["ecsProperties"] = _ecs(node_range["ecsProperties"], override.get("ecsPropertiesOverride") or {})
    if node_range.get("eksProperties"):
        node_range["eksProperties"] = _eks(node_range["eksProperties"], override.get("eksPropertiesOverride") or {})
    consumable = _consumable(node_range.get("consumableResourceProperties"), override.get("consumableResourcePropertiesOverride"))
    if consumable is not None:
        node_range["consumableResourceProperties"] = consumable


def covers(outer: str, inner: str, num_nodes: int) -> bool:
    """Whether node range `outer` ("0:3", "2:", ":1", "4") holds every node of `inner`."""
    (outer_low, outer_high), (inner_low, inner_high) = _bounds(outer, num_nodes), _bounds(inner, num_nodes)
    return outer_low <= inner_low and inner_high <= outer_high


def _bounds(target: str, num_nodes: int) -> tuple[int, int]:
    low, colon, high = target.partition(":")
    if not colon:
        return int(low), int(low)
    return int(low or 0), int(high) if high else num_nodes - 1


def _ecs(base: Json, overrides: Json) -> Json:
    """ecsProperties with ecsPropertiesOverride: tasks by position, containers by name."""
    merged = copy.deepcopy(base)
    tasks = merged.get("taskProperties") or []
    for task, override in zip(tasks, overrides.get("taskProperties") or [], strict=False):
        for container_override in override.get("containers") or []:
            target = _target(task.get("containers") or [], container_override.get("name"))
            if target is not None:
                _apply_container_overrides(target, container_override, "environment")
    return merged


def _eks(base: Json, overrides: Json) -> Json:
    """eksProperties with eksPropertiesOverride: containers and init containers by name, metadata merged."""
    merged = copy.deepcopy(base)
    pod = merged.setdefault("podProperties", {})
    pod_overrides = overrides.get("podProperties") or {}
    for section in ("containers", "initContainers"):
        containers = pod.get(section) or []
        for container in containers:
            container.setdefault("name", DEFAULT_EKS_CONTAINER)  # DescribeJobs names an unnamed container
        for container_override in pod_overrides.get(section) or []:
            target = _target(containers, container_override.get("name"))
            if target is not None:
                _apply_eks_container_overrides(target, container_override)
    metadata_overrides = pod_overrides.get("metadata") or {}
    if metadata_overrides:
        metadata = pod.setdefault("metadata", {})
        for field in ("labels", "annotations"):
            if metadata_overrides.get(field):
                metadata[field] = {**(metadata.get(field) or {}), **metadata_overrides[field]}
        if metadata_overrides.get("namespace"):
            metadata["namespace"] = metadata_overrides["namespace"]
    return merged


def _apply_eks_container_overrides(container: Json, overrides: Json) -> None:
    for field in ("image", "command", "args"):
        if overrides.get(field):
            container[field] = copy.deepcopy(overrides[field])
    if overrides.get("env"):
        container["env"] = _environment(container.get("env"), overrides["env"])
    for field, values in (overrides.get("resources") or {}).items():
        resources = container.setdefault("resources", {})
        resources[field] = {**(resources.get(field) or {}), **values}


def _target(containers: list[Json], name: str | None) -> Json | None:
    """The container an override names; without a name, the only one (or none when there are several)."""
    if name is None:
        return containers[0] if len(containers) == 1 else None
    return next((c for c in containers if c.get("name") == name), None)


def _consumable(base: Json | None, overrides: Json | None) -> Json | None:
    """consumableResourceProperties with the override's quantities, resource by resource."""
    if base is None and not overrides:
        return None
    merged = {_resource_name(r["consumableResource"]): dict(r) for r in (base or {}).get("consumableResourceList") or []}
    merged.update({_resource_name(r["consumableResource"]): dict(r) for r in (overrides or {}).get("consumableResourceList") or []})
    return {"consumableResourceList": list(merged.values())}


def _resource_name(identifier: str) -> str:
    return identifier.rsplit("/", 1)[-1]


def _containers(detail: Json) -> Iterator[tuple[Json, str]]:
    """Every container of a JobDetail with the name of its environment field."""
    scopes = [detail, *((detail.get("nodeProperties") or {}).get("nodeRangeProperties") or [])]
    for scope in scopes:
        if scope.get("container") is not None:
            yield scope["container"], "environment"
        for task in (scope.get("ecsProperties") or {}).get("taskProperties") or []:
            yield from ((c, "environment") for c in task.get("containers") or [])
        pod = (scope.get("eksProperties") or {}).get("podProperties") or {}
        for section in ("containers", "initContainers"):
            yield from ((c, "env") for c in pod.get(section) or [])


def _uses_eks(request: Json) -> bool:
    ranges = (request.get("nodeProperties") or {}).get("nodeRangeProperties") or []
    return bool(request.get("eksProperties")) or any(r.get("eksProperties") for r in ranges)


def _first(*values: Any) -> Any:
    """The first value that is set: a request's override, else the definition's, else a default."""
    return next((v for v in values if v is not None), None)
