"""Recover a job *as it was submitted* from what DescribeJobs returns, for every kind of Batch job.

DescribeJobs answers with the merged spec: the job definition revision plus the submission's
overrides, with defaults filled in. Replaying the merged values would pin the old revision's
values over the new one, so every value is compared, normalised, with the job's own revision and
only what differs is kept. Whatever the job did not override then comes from the revision the
deploy put in place.

How it works: a JobDetail and a JobDefinition are both flattened into a *view*, a dict from a key
to a leaf. A key is the path of the value inside a SubmitJob request (for example
``("containerOverrides", "environment", ("name", "MODEL"))``), so the overrides are simply the
job's leaves that differ from the definition's, placed at their keys. The same keys name what a
submission overrides (`definition_changes`) and where lineage variables go (`with_environment`).

Assumptions about AWS Batch that are not documented, and what follows from each:

- An override with no ``name`` applies to the task's or pod's only container. An unnamed ECS
  container among several cannot be addressed at all: its overrides are left out of the
  request (never ``{"name": null}``, which botocore rejects) and `recovery_notes` says so.
- An EKS container without a name is called ``Default`` (documented), and DescribeJobs may show
  either form.
- Overrides merge into the definition by key: environment by name, resourceRequirements by
  type, EKS resource limits/requests, labels, annotations and consumable resources by name,
  node-range overrides by ``targetNodes``; everything else (command, args, image,
  instanceTypes, retryStrategy, ...) replaces the definition's value whole.

Normalised before comparing: environment order; AWS_BATCH_* variables (never recorded); a missing
retryStrategy (one attempt), evaluateOnExit (none) and propagateTags (false); action case;
resource values ("2" = "2.0" = 2) and the legacy vcpus/memory fields; Kubernetes quantities
("1" = "1000m") and requests copied from limits; consumable resources by name or ARN; a command
shown with its Ref:: parameters filled in. What is never recovered, and why:
`unrecoverable_members()`.
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

Json = dict[str, Any]

RESERVED_ENV_PREFIX = "AWS_BATCH"  # Batch sets these and rejects them in overrides
JOBGUARD_TAG = "jobguard"
JOBGUARD_TAG_PREFIX = "jobguard:"
AWS_TAG_PREFIX = "aws:"
DEFAULT_EKS_CONTAINER = "Default"  # the name Batch gives an unnamed EKS container

# A list item of a SubmitJob request, by the field that identifies it: ("name", "MODEL"),
# ("targetNodes", "1:"), ("name", None) for the only container when it has no name, or
# ("#", "2") for an unnamed container among several, which no override can address.
Selector = tuple[str, str | None]
Step = str | int | Selector
Key = tuple[Step, ...]

# Legacy top-level container fields that mean the same as resourceRequirements entries.
_LEGACY_RESOURCES = {"vcpus": "VCPU", "memory": "MEMORY"}
# SubmitJob members that override the definition, as opposed to naming or placing the job.
_OVERRIDE_FIELDS = frozenset(
    {
        "parameters",
        "containerOverrides",
        "nodeOverrides",
        "ecsPropertiesOverride",
        "eksPropertiesOverride",
        "consumableResourcePropertiesOverride",
        "retryStrategy",
        "timeout",
        "propagateTags",
        "schedulingPriorityOverride",
    }
)
# Overrides a job may carry whatever its definition declares (the others need their section).
_ALWAYS_ALLOWED = frozenset(
    {"parameters", "consumableResourcePropertiesOverride", "retryStrategy", "timeout", "propagateTags", "schedulingPriorityOverride"}
)
_ATOMIC = frozenset(
    {
        "command",
        "args",
        "image",
        "instanceType",
        "instanceTypes",
        "retryStrategy",
        "timeout",
        "propagateTags",
        "schedulingPriorityOverride",
        "numNodes",
        "namespace",
    }
)
_MAPS = {"parameters": "parameter", "labels": "label", "annotations": "annotation", "limits": "limits", "requests": "requests"}
# Keyed lists whose items are leaves, and keyed lists whose items hold further overrides.
_ITEM_LISTS = {"environment": "name", "env": "name", "resourceRequirements": "type", "consumableResourceList": "consumableResource"}
_NESTED_LISTS = {"containers": "name", "initContainers": "name", "nodePropertyOverrides": "targetNodes"}
_SELECTOR_LABELS = {
    "containers": "container {}",
    "initContainers": "init container {}",
    "nodePropertyOverrides": "nodes {}",
    "environment": "environment {}",
    "env": "environment {}",
    "resourceRequirements": "{}",
    "consumableResourceList": "consumable resource {}",
}
_LABELS = {"schedulingPriorityOverride": "schedulingPriority"}
# Structure that says nothing a reader needs in a value's name.
_SILENT = frozenset(
    {
        "containerOverrides",
        "ecsPropertiesOverride",
        "eksPropertiesOverride",
        "consumableResourcePropertiesOverride",
        "nodeOverrides",
        "podProperties",
        "taskProperties",
        "metadata",
        "resources",
        *_MAPS,
        *_ITEM_LISTS,
        *_NESTED_LISTS,
    }
)
_REF = re.compile(r"Ref::([A-Za-z0-9_-]+)")
_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$")
_QUANTITY_SUFFIXES = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    **{s: Decimal(1000) ** (i + 1) for i, s in enumerate("kMGTPE")},
    **{f"{s}i": Decimal(1024) ** (i + 1) for i, s in enumerate("KMGTPE")},
}


@dataclass(frozen=True)
class Leaf:
    """One overridable value: `norm` to compare, `raw` to replay (None: shown but not replayable)."""

    norm: Any
    raw: Any


View = dict[Key, Leaf]


def job_type(job: Json) -> str:
    """The kind of a JobDetail, which says where its overrides go: "container", "multinode", "ecs" or "eks"."""
    if job.get("nodeProperties") or job.get("nodeDetails"):
        return "multinode"
    if job.get("ecsProperties"):
        return "ecs"
    if job.get("eksProperties"):
        return "eks"
    return "container"


def recover_submission(job: Json, definition: Json) -> Json:
    """SubmitJob arguments, without jobQueue and jobDefinition, that reproduce `job` on a new revision.

    `job` is a DescribeJobs JobDetail; `definition` is the job's own revision as
    DescribeJobDefinitions returns it. Overrides are the values that differ from the definition
    once both are normalised; lists of named entries come out sorted by name.
    """
    request: Json = {"jobName": job["jobName"], **_recovered_overrides(job, definition)[0]}
    array = job.get("arrayProperties") or {}
    if array.get("size") and array.get("index") is None:  # the parent: children are resubmitted through it
        request["arrayProperties"] = {"size": array["size"]}
    depends_on = [{k: d[k] for k in ("jobId", "type") if d.get(k) is not None} for d in job.get("dependsOn") or []]
    _put(request, "dependsOn", [d for d in depends_on if d])
    _put(request, "shareIdentifier", job.get("shareIdentifier"))
    _put(request, "tags", own_tags(job.get("tags")))
    return request


def recovery_notes(job: Json, definition: Json) -> list[str]:
    """What `recover_submission` saw overridden but could not put in the request, one line each."""
    return [
        f"{describe(key)} was overridden on a container without a name among several: no override can address it, "
        "so the replacement takes the new revision's value"
        for key in _recovered_overrides(job, definition)[1]
    ]


def containers_of(job: Json) -> list[tuple[Json, str]]:
    """Every container of a JobDetail (node ranges, ECS tasks and EKS pods included) with its flavour: container, ecs or eks."""
    return [(container, flavour) for _key, container, flavour in _container_slots(job, "container")]


def own_tags(tags: Mapping[str, str] | None) -> dict[str, str]:
    """The job's own tags: all of them except AWS's (``aws:``) and jobguard's marks."""
    return {
        key: value
        for key, value in (tags or {}).items()
        if not key.startswith((AWS_TAG_PREFIX, JOBGUARD_TAG_PREFIX)) and key != JOBGUARD_TAG
    }


def unrecoverable_members() -> dict[str, str]:
    """SubmitJob members (dotted paths, list levels left out) that are never recovered, with why."""
    deprecated = (
        "deprecated: DescribeJobs cannot tell it from a resourceRequirements override, so it is recovered as "
        "resourceRequirements {} (which overrides both forms)"
    )
    members = {
        "jobQueue": "resolved at restore: the queue of the same name as it is after the deploy",
        "jobDefinition": "resolved at restore: the revision the deploy put in place",
        "containerOverrides.instanceType": (
            "not applicable to single-node jobs (AWS: shouldn't be provided); an instanceType a single-node JobDetail "
            "shows is where it ran, not an override"
        ),
    }
    for scope in ("containerOverrides", "nodeOverrides.nodePropertyOverrides.containerOverrides"):
        members[f"{scope}.vcpus"] = deprecated.format("VCPU")
        members[f"{scope}.memory"] = deprecated.format("MEMORY")
    return members


def with_environment(request: Json, definition: Json, variables: Mapping[str, str]) -> tuple[Json, str | None]:
    """A copy of SubmitJob `request` whose every container gets `variables` (replacing same-named ones).

    `definition` is the revision the request will be submitted on; its containers say where the
    variables go: containerOverrides for a container job, a nodePropertyOverrides entry for every
    node range of a multi-node job (merged with the request's own entry for that range), every
    container of the ECS task by name, every EKS container and init container by name. A
    container that is the only one of its task or pod and has no name gets an override without
    a name. An unnamed ECS container among several cannot be addressed: it does not get the
    variables.

    Returns (request, note): the note is None when every container got the variables, else it
    says which did not; when none could, the request comes back unchanged.
    """
    reserved = sorted(name for name in variables if name.startswith(RESERVED_ENV_PREFIX))
    if reserved:
        raise ValueError(f"environment variables {', '.join(reserved)} are reserved by AWS Batch")
    result: Json = _canonical(request)
    if not variables:
        return result, None
    placed, missed = 0, []
    for prefix, _container, flavour in _container_slots(definition, "containerProperties"):
        if _unaddressable(prefix):
            missed.append(describe(prefix))
            continue
        env_field = "env" if flavour == "eks" else "environment"
        for name, value in variables.items():
            _place(result, (*prefix, env_field, ("name", name)), {"name": name, "value": value})
        placed += 1
    if not placed:
        revision = definition.get("jobDefinitionArn") or definition.get("jobDefinitionName")
        return copy.deepcopy(request), f"{', '.join(variables)} not set: {revision} has no container an override can address"
    note = f"{', '.join(variables)} not set in {'; '.join(missed)}: without a name, no override can address it" if missed else None
    return _canonical(result), note


def definition_changes(old: Json, new: Json, submission: Json) -> list[str]:
    """Values the job did not override (not in `submission`) that differ between revisions `old` and `new`.

    Short names such as "environment MODEL", "command", "VCPU", "container main / image",
    "nodes 1: / instanceTypes", "retryStrategy". Only overridable values are compared: those the
    job could have pinned. A job that overrode a value with the old revision's own value cannot
    be told from one that did not, so each name here is a value that may have been meant to stay.
    """
    before, after = _spec_view(old, "containerProperties"), _spec_view(new, "containerProperties")
    overridden = set(_request_keys(submission))
    names = []
    for key in dict.fromkeys([*before, *after]):
        if key not in overridden and _norm(before.get(key)) != _norm(after.get(key)):
            names.append(describe(key))
    return names


def describe(key: Key) -> str:
    """A short human name for a view key, e.g. "nodes 1: / container app / environment MODEL"."""
    parts: list[str] = []
    field: str | None = None
    for step in key:
        if isinstance(step, tuple):
            label = _selector_label(field, step)
        elif isinstance(step, int):
            label = f"task {step + 1}" if step else ""  # ECS takes one task today: leave the first unnamed
        elif field in _MAPS:
            label = f"{_MAPS[field]} {step}"
        else:
            label = "" if step in _SILENT else _LABELS.get(step, step)
        if label:
            parts.append(label)
        if isinstance(step, str):
            field = step
    return " / ".join(parts)


# --- views: every overridable value of a spec, keyed by where it goes in a SubmitJob request ---


def _spec_view(spec: Json, container_field: str) -> View:
    """The view of a JobDetail (`container_field` "container") or JobDefinition ("containerProperties")."""
    retry, timeout = spec.get("retryStrategy"), spec.get("timeout")
    view: View = {("parameters", name): Leaf(value, value) for name, value in (spec.get("parameters") or {}).items()}
    view[("retryStrategy",)] = Leaf(_retry_norm(retry), _clean(retry))
    view[("timeout",)] = Leaf((timeout or {}).get("attemptDurationSeconds"), _clean(timeout))
    view[("propagateTags",)] = Leaf(bool(spec.get("propagateTags")), spec.get("propagateTags"))
    # Without a fair-share policy the priority is 0, the lowest.
    view[("schedulingPriorityOverride",)] = Leaf(int(spec.get("schedulingPriority") or 0), spec.get("schedulingPriority"))
    nodes = spec.get("nodeProperties")
    if nodes:
        view[("nodeOverrides", "numNodes")] = Leaf(nodes.get("numNodes"), nodes.get("numNodes"))
    for prefix, scope, _field in _scopes(spec, container_field):
        view.update(_scope_view(prefix, scope))
    for prefix, container, flavour in _container_slots(spec, container_field):
        in_range = flavour == "container" and prefix[0] == "nodeOverrides"
        view.update({(*prefix, *key): leaf for key, leaf in _container_leaves(container, flavour, in_range)})
    return view


def _scopes(spec: Json, container_field: str) -> Iterator[tuple[Key, Json, str]]:
    """The job itself and each node range: (request key prefix, properties, its container field)."""
    yield (), spec, container_field
    for node_range in (spec.get("nodeProperties") or {}).get("nodeRangeProperties") or []:
        yield ("nodeOverrides", "nodePropertyOverrides", ("targetNodes", node_range.get("targetNodes"))), node_range, "container"


def _container_slots(spec: Json, container_field: str) -> Iterator[tuple[Key, Json, str]]:
    """Every container of a spec: (request key of its overrides, its properties, "container"/"ecs"/"eks")."""
    for prefix, scope, field in _scopes(spec, container_field):
        if scope.get(field) is not None:
            yield (*prefix, "containerOverrides"), scope[field], "container"
        for index, task in enumerate((scope.get("ecsProperties") or {}).get("taskProperties") or []):
            for selector, container in _named(task.get("containers"), eks=False):
                yield (*prefix, "ecsPropertiesOverride", "taskProperties", index, "containers", selector), container, "ecs"
        pod = (scope.get("eksProperties") or {}).get("podProperties") or {}
        for section in ("containers", "initContainers"):
            for selector, container in _named(pod.get(section), eks=True):
                yield (*prefix, "eksPropertiesOverride", "podProperties", section, selector), container, "eks"


def _scope_view(prefix: Key, scope: Json) -> View:
    """Leaves of a scope that belong to no container: pod metadata, consumable resources, instance types."""
    view: View = {}
    pod = (scope.get("eksProperties") or {}).get("podProperties")
    if pod is not None:
        metadata, base = pod.get("metadata") or {}, (*prefix, "eksPropertiesOverride", "podProperties", "metadata")
        for field in ("labels", "annotations"):
            view.update({(*base, field, k): Leaf(v, v) for k, v in (metadata.get(field) or {}).items()})
        namespace: Key = (*base, "namespace")
        # Where the pod ran is eksAttempts[].podNamespace; metadata.namespace is the spec, so a
        # namespace that differs from the definition's was asked for at submission.
        view[namespace] = Leaf(metadata.get("namespace") or None, metadata.get("namespace"))
    for item in (scope.get("consumableResourceProperties") or {}).get("consumableResourceList") or []:
        name = _resource_name(item.get("consumableResource"))
        key = (*prefix, "consumableResourcePropertiesOverride", "consumableResourceList", ("consumableResource", name))
        view[key] = Leaf(int(item.get("quantity") or 0), {k: item[k] for k in ("consumableResource", "quantity") if k in item})
    if prefix:
        types = scope.get("instanceTypes")
        instance_types: Key = (*prefix, "instanceTypes")
        view[instance_types] = Leaf(tuple(sorted(types)) if types else None, types)
    return view


def _named(containers: list[Json] | None, eks: bool) -> list[tuple[Selector, Json]]:
    """Each container with the selector an override addresses it by."""
    items = containers or []
    if len(items) == 1 and items[0].get("name") in (None, "", DEFAULT_EKS_CONTAINER if eks else None):
        return [(("name", None), items[0])]
    named: list[tuple[Selector, Json]] = []
    for index, container in enumerate(items):
        name = container.get("name") or (DEFAULT_EKS_CONTAINER if eks else None)
        named.append((("name", name) if name else ("#", str(index)), container))
    return named


def _container_leaves(container: Json, flavour: str, in_range: bool) -> Iterator[tuple[Key, Leaf]]:
    """Overridable values of one container, keyed relative to its override object."""
    yield ("command",), Leaf(_sequence(container.get("command")), container.get("command"))
    env_field = "env" if flavour == "eks" else "environment"
    for entry in container.get(env_field) or []:
        name = entry.get("name")
        if name and not name.startswith(RESERVED_ENV_PREFIX):
            yield (env_field, ("name", name)), Leaf(entry.get("value") or "", {k: entry[k] for k in ("name", "value") if k in entry})
    if flavour == "eks":
        yield ("image",), Leaf(container.get("image"), container.get("image"))
        yield ("args",), Leaf(_sequence(container.get("args")), container.get("args"))
        yield from _eks_resource_leaves(container.get("resources") or {})
        return
    for kind, value in _resources(container).items():
        yield ("resourceRequirements", ("type", kind)), Leaf(_number(value), {"type": kind, "value": value})
    if in_range:  # only multi-node ranges take an instance type; elsewhere it is where the job ran
        yield ("instanceType",), Leaf(container.get("instanceType") or None, container.get("instanceType"))


def _eks_resource_leaves(resources: Json) -> Iterator[tuple[Key, Leaf]]:
    """EKS limits and requests; a request not given is the limit (Kubernetes copies it), so compare that."""
    limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
    for name, value in limits.items():
        yield ("resources", "limits", name), Leaf(_quantity(value), str(value))
    for name, value in {**limits, **requests}.items():
        shown = requests.get(name)  # a request copied from its limit is Kubernetes' doing, not an override
        yield ("resources", "requests", name), Leaf(_quantity(value), None if shown is None else str(shown))


def _resources(container: Json) -> dict[str, str]:
    """resourceRequirements by type, the legacy vcpus/memory fields read as VCPU/MEMORY."""
    resources = {kind: str(container[field]) for field, kind in _LEGACY_RESOURCES.items() if container.get(field) is not None}
    resources.update({r["type"]: str(r["value"]) for r in container.get("resourceRequirements") or [] if r.get("type")})
    return resources


# --- normalising: DescribeJobs and DescribeJobDefinitions write the same value differently ---


def _norm(leaf: Leaf | None) -> Any:
    return None if leaf is None else leaf.norm


def _retry_norm(retry: Json | None) -> tuple[int, tuple[tuple[Any, ...], ...]]:
    """A retry strategy without one is one attempt; evaluateOnExit actions are case-insensitive."""
    retry = retry or {}
    rules = tuple(
        (rule.get("onStatusReason"), rule.get("onReason"), rule.get("onExitCode"), str(rule.get("action", "")).upper())
        for rule in retry.get("evaluateOnExit") or []
    )
    return int(retry.get("attempts") or 1), rules


def _sequence(values: list[str] | None) -> tuple[str, ...] | None:
    return tuple(values) if values else None


def _number(value: str) -> str:
    """ "2", "2.0" and 2 alike: resource values come back as strings or numbers."""
    try:
        return format(Decimal(value).normalize(), "f")
    except InvalidOperation:
        return value


def _quantity(value: Any) -> Any:
    """A Kubernetes quantity as a number: "1" and "1000m", "1Gi" and "1024Mi" are the same."""
    match = _QUANTITY.match(str(value).strip())
    if not match:
        return str(value)
    return (Decimal(match.group(1)) * _QUANTITY_SUFFIXES[match.group(2) or ""]).normalize()


def _resource_name(identifier: str | None) -> str | None:
    """A consumable resource by name, whether given as name or ARN."""
    return identifier.rsplit("/", 1)[-1] if identifier else identifier


def _substituted(values: list[str], parameters: Mapping[str, str]) -> tuple[str, ...]:
    """A command with its Ref:: placeholders filled in, as DescribeJobs may show it."""
    return tuple(_REF.sub(lambda m: parameters.get(m.group(1), m.group(0)), value) for value in values)


def _clean(value: Any) -> Any:
    """A value without the empty lists and maps DescribeJobs fills in (evaluateOnExit: [])."""
    if isinstance(value, dict):
        cleaned = {k: _clean(v) for k, v in value.items()}
        return {k: v for k, v in cleaned.items() if v not in (None, [], {})}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


# --- recovery: the job's leaves that differ from its definition's ---


def _recovered_overrides(job: Json, definition: Json) -> tuple[Json, list[Key]]:
    """(the override members of the request, keys overridden on containers no override can address)."""
    mine, theirs = _spec_view(job, "container"), _definition_view(definition)
    allowed = _ALWAYS_ALLOWED | {key[0] for key in theirs}
    parameters = job.get("parameters") or {}
    changed = {
        key: leaf.raw
        for key, leaf in mine.items()
        if leaf.raw is not None and key[0] in allowed and not _same(key, leaf, theirs.get(key), parameters)
    }
    lost = [key for key in changed if _unaddressable(key)]
    return _build({key: raw for key, raw in changed.items() if key not in lost}), lost


_DEFINITION_VIEWS: dict[int, tuple[Json, View]] = {}  # id(definition) -> (it, its view): a drain recovers thousands of jobs of a few
_DEFINITION_VIEWS_KEPT = 64  # revisions; the definition is kept with its view, so its id is not reused meanwhile


def _definition_view(definition: Json) -> View:
    """The view of a job definition, computed once per definition object (up to 64 kept)."""
    kept = _DEFINITION_VIEWS.get(id(definition))
    if kept is not None and kept[0] is definition:
        return kept[1]
    if len(_DEFINITION_VIEWS) >= _DEFINITION_VIEWS_KEPT:
        _DEFINITION_VIEWS.clear()  # atomic: `jobguard run` records late jobs on its watcher's thread too
    view = _spec_view(definition, "containerProperties")
    _DEFINITION_VIEWS[id(definition)] = (definition, view)
    return view


def _same(key: Key, leaf: Leaf, base: Leaf | None, parameters: Mapping[str, str]) -> bool:
    """Whether the job's value is the definition's; a command may show its parameters filled in."""
    if base is None:
        return False
    if leaf.norm == base.norm:
        return True
    return key[-1] in ("command", "args") and bool(base.raw) and leaf.norm == _substituted(base.raw, parameters)


def _unaddressable(key: Key) -> bool:
    return any(isinstance(step, tuple) and step[0] == "#" for step in key)


# --- requests: placing leaves at their keys, and reading the keys back ---


def _build(leaves: Mapping[Key, Any]) -> Json:
    request: Json = {}
    for key, raw in leaves.items():
        _place(request, key, raw)
    canonical: Json = _canonical(request)
    return canonical


def _place(target: Json, key: Key, raw: Any) -> None:
    """Put `raw` at `key` in a request, creating the structures on the way; a keyed item replaces its namesake."""
    node: Any = target
    for step, following in itertools.pairwise(key):
        node = _child(node, step, following)
    last = key[-1]
    if isinstance(last, tuple):
        node[:] = [item for item in node if _identity(last[0], item) != last[1]] + [copy.deepcopy(raw)]
    else:
        node[last] = copy.deepcopy(raw)


def _child(node: Any, step: Step, following: Step) -> Any:
    """The structure at `step` under `node`, made when missing: a list when `following` picks an item."""
    if isinstance(step, int):
        node.extend({} for _ in range(step + 1 - len(node)))
        return node[step]
    if isinstance(step, tuple):
        field, value = step
        for item in node:
            if _identity(field, item) == value:
                return item
        node.append({field: value} if value is not None else {})
        return node[-1]
    return node.setdefault(step, [] if isinstance(following, (tuple, int)) else {})


def _identity(field: str, item: Json) -> str | None:
    value = item.get(field)
    return _resource_name(value) if field == "consumableResource" else value


def _canonical(value: Any, field: str | None = None) -> Any:
    """Keyed lists sorted by their key, so that equal requests compare equal."""
    if isinstance(value, dict):
        return {k: _canonical(v, k) for k, v in value.items()}
    if isinstance(value, list):
        items = [_canonical(v) for v in value]
        identity = _ITEM_LISTS.get(field or "") or _NESTED_LISTS.get(field or "")
        return sorted(items, key=lambda item: str(_identity(identity, item) or "")) if identity else items
    return value


def _request_keys(value: Any, key: Key = ()) -> Iterator[Key]:
    """The view keys a SubmitJob request overrides."""
    field = key[-1] if key else None
    if field in _ATOMIC:
        yield key
    elif isinstance(field, str) and field in _MAPS:
        yield from ((*key, name) for name in value)
    elif isinstance(field, str) and field in _ITEM_LISTS:
        yield from ((*key, (_ITEM_LISTS[field], _identity(_ITEM_LISTS[field], item))) for item in value)
    elif isinstance(field, str) and field in _NESTED_LISTS:
        for item in value:
            yield from _request_keys(item, (*key, (_NESTED_LISTS[field], item.get(_NESTED_LISTS[field]))))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _request_keys(item, (*key, index))
    elif isinstance(value, dict):
        for name, member in value.items():
            if key or name in _OVERRIDE_FIELDS:
                yield from _request_keys(member, (*key, name))


def _selector_label(field: str | None, selector: Selector) -> str:
    name, value = selector
    if name == "#":
        return f"unnamed container #{int(value or 0) + 1}"
    if value is None:  # the only container, unnamed: nothing to tell it from
        return ""
    return _SELECTOR_LABELS.get(field or "", "{}").format(value)


def _put(target: Json, key: str, value: Any) -> None:
    """Set `key` only when `value` says something: empty members are left out of the request."""
    if value not in (None, "", [], {}):
        target[key] = value
