"""Generate jobguard/domain/schemas/submission.schema.json from botocore's SubmitJob input shape.

A manifest's `submission` is replayed as SubmitJob's arguments, so its schema is SubmitJob's own
shape (without jobQueue and jobDefinition, which restore resolves). Run after upgrading botocore:

    python -m tools.submission_schema

tests/test_schemas.py fails when the checked-in file differs from what this generates.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import botocore.session

TARGET = Path(__file__).resolve().parent.parent / "jobguard" / "domain" / "schemas" / "submission.schema.json"
RESOLVED_AT_RESTORE = ("jobQueue", "jobDefinition")
# SubmitJob's request is at most 30 KiB: no string in it is longer.
MAX_STRING = 30 * 1024


# Limits Batch documents that botocore's model does not carry.
DOCUMENTED_LIMITS: dict[str, dict[str, Any]] = {
    "jobName": {"pattern": "^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"},
    "dependsOn": {"maxItems": 20},
    "tags": {"maxProperties": 50},
}
ARRAY_SIZE = {"minimum": 2, "maximum": 10000}
# Members botocore leaves optional that a request jobguard replays must have: an environment
# variable without a name cannot be set (or matched to the definition's), a dependency without a
# job id depends on nothing.
REQUIRED: dict[str, list[str]] = {"KeyValuePair": ["name"], "JobDependency": ["jobId"]}


def generate() -> dict[str, Any]:
    """The schema document."""
    model = botocore.session.get_session().get_service_model("batch")
    shape = model.operation_model("SubmitJob").input_shape
    definitions: dict[str, Any] = {}
    root = _structure(shape, definitions, skip=RESOLVED_AT_RESTORE)
    for name, limits in DOCUMENTED_LIMITS.items():
        root["properties"][name].update(limits)
    definitions["ArrayProperties"]["properties"]["size"].update(ARRAY_SIZE)
    for name, members in REQUIRED.items():
        definitions[name]["required"] = sorted({*definitions[name].get("required", []), *members})
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://github.com/org/jobguard/submission.schema.json",
        "title": "jobguard submission",
        "description": (
            f"SubmitJob's arguments as the user submitted them, generated from botocore {botocore.__version__}'s "
            "service model by tools/submission_schema.py; jobQueue and jobDefinition are resolved at restore."
        ),
        **root,
        "$defs": dict(sorted(definitions.items())),
    }


def _schema(shape: Any, definitions: dict[str, Any]) -> dict[str, Any]:
    kind = shape.type_name
    if kind == "structure":
        if shape.name not in definitions:
            definitions[shape.name] = {}  # placeholder: a shape that refers to itself ends here
            definitions[shape.name] = _structure(shape, definitions)
        return {"$ref": f"#/$defs/{shape.name}"}
    if kind == "list":
        rule: dict[str, Any] = {"type": "array", "items": _schema(shape.member, definitions)}
        return {**rule, **_bounds(shape, "minItems", "maxItems")}
    if kind == "map":
        return {
            "type": "object",
            "propertyNames": _schema(shape.key, definitions),
            "additionalProperties": _schema(shape.value, definitions),
        }
    if kind == "string":
        enum = getattr(shape, "enum", None)
        if enum:
            return {"enum": list(enum)}
        return {"type": "string", "maxLength": MAX_STRING, **_bounds(shape, "minLength", "maxLength")}
    if kind in ("integer", "long"):
        return {"type": "integer", **_bounds(shape, "minimum", "maximum")}
    if kind in ("float", "double"):
        return {"type": "number"}
    if kind == "boolean":
        return {"type": "boolean"}
    raise ValueError(f"unexpected shape type {kind} ({shape.name})")


def _structure(shape: Any, definitions: dict[str, Any], skip: tuple[str, ...] = ()) -> dict[str, Any]:
    members = {name: _schema(member, definitions) for name, member in shape.members.items() if name not in skip}
    required = [name for name in shape.required_members if name not in skip]
    return {"type": "object", "additionalProperties": False, "properties": members, **({"required": required} if required else {})}


def _bounds(shape: Any, low: str, high: str) -> dict[str, Any]:
    bounds = {}
    if "min" in shape.metadata:
        bounds[low] = shape.metadata["min"]
    if "max" in shape.metadata:
        bounds[high] = shape.metadata["max"]
    return bounds


def render() -> str:
    """The schema file's text."""
    return json.dumps(generate(), indent=2) + "\n"


if __name__ == "__main__":
    TARGET.write_text(render())
    sys.stdout.write(f"wrote {TARGET}\n")
