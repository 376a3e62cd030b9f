"""Documents are checked against the JSON Schemas shipped in `schemas/`: the schema files are the
one description of each document, and this is the part of JSON Schema (draft 2020-12) they use.

Types are strict, as JSON's are: `true` is not the integer 1. The first failure is reported as
one line naming the document and the path of the value that is wrong.
"""

from __future__ import annotations

import calendar
import json
import re
from functools import cache, lru_cache
from importlib import resources
from typing import Any

from ..errors import ManifestError

_TYPES: dict[str, Any] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}
SUPPORTED = frozenset(
    {
        "$schema", "$id", "$defs", "$ref", "$comment", "title", "description", "type", "const", "enum", "required", "properties",
        "additionalProperties", "items", "minItems", "maxItems", "uniqueItems", "minLength", "maxLength", "pattern", "minimum",
        "maximum", "minProperties", "maxProperties", "propertyNames", "format", "default", "examples",
    }
)  # fmt: skip


@cache
def schema(name: str) -> dict[str, Any]:
    """A shipped schema by name (`manifest`, `event`)."""
    text = resources.files("jobguard.domain").joinpath(f"schemas/{name}.schema.json").read_text(encoding="utf-8")
    return dict(json.loads(text))


def validate(document: Any, name: str, where: str) -> None:
    """Raise ManifestError naming `where` and the path of the first value the schema `name` rejects."""
    root = schema(name)
    problem = _check(document, root, root, "")
    if problem:
        path, message = problem
        raise ManifestError(f"{where}: {path.lstrip('.') or 'document'}: {message}")


def integral(value: Any) -> Any:
    """`value` with every integral float as an int: JSON has one kind of number, and 1.0 is the integer 1."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [integral(v) for v in value]
    if isinstance(value, dict):
        return {k: integral(v) for k, v in value.items()}
    return value


def _check(value: Any, rule: dict[str, Any], root: dict[str, Any], path: str) -> tuple[str, str] | None:
    if "$ref" in rule:  # what it refers to, then the keywords beside it (draft 2020-12 applies both)
        target, target_root = _resolve(rule["$ref"], root)
        found = _check(value, target, target_root, path)
        if found:
            return found
        rule = {k: v for k, v in rule.items() if k != "$ref"}
    kinds = rule.get("type")
    if kinds is not None:
        names = kinds if isinstance(kinds, list) else [kinds]
        if not any(_TYPES[k](value) for k in names):
            return path, f"expected {' or '.join(names)}, got {_kind(value)}"
    if "const" in rule and not _same(value, rule["const"]):
        return path, f"expected {json.dumps(rule['const'])}, got {_shown(value)}"
    if "enum" in rule and not any(_same(value, option) for option in rule["enum"]):
        return path, f"expected one of {', '.join(json.dumps(o) for o in rule['enum'])}, got {_shown(value)}"
    if isinstance(value, str):
        return _check_string(value, rule, path)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _check_number(value, rule, path)
    if isinstance(value, list):
        return _check_array(value, rule, root, path)
    if isinstance(value, dict):
        return _check_object(value, rule, root, path)
    return None


def _check_string(value: str, rule: dict[str, Any], path: str) -> tuple[str, str] | None:
    if len(value) < rule.get("minLength", 0):
        return path, f"shorter than {rule['minLength']} characters"
    if "maxLength" in rule and len(value) > rule["maxLength"]:
        return path, f"longer than {rule['maxLength']} characters"
    if "pattern" in rule and not _pattern(rule["pattern"]).search(value):
        return path, f"{_shown(value)} does not match {rule['pattern']}"
    if rule.get("format") == "date-time" and not _date_time(value):
        return path, f"{_shown(value)} is not an RFC 3339 date-time"
    return None


_DATE_TIME = re.compile(
    r"([0-9]{4})-(0[1-9]|1[0-2])-([0-9]{2})T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"
)


def _date_time(value: str) -> bool:
    """RFC 3339 (the `date-time` format): a real day of a real month, no leap second, no trailing newline."""
    match = _DATE_TIME.fullmatch(value.upper())
    if match is None or not int(match[1]):
        return False
    return 1 <= int(match[3]) <= calendar.monthrange(int(match[1]), int(match[2]))[1]


@cache
def _pattern(pattern: str) -> re.Pattern[str]:
    """A schema pattern with JSON Schema's (ECMA-262) meaning of `$`: the end of the string.

    Python's `$` also matches before a final newline, so "work\\n" would pass `^[a-z]+$`.
    """
    translated, escaped, in_class = [], False, False
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "[" and not in_class:
            in_class = True
        elif char == "]" and in_class:
            in_class = False
        elif char == "$" and not in_class:
            char = r"\Z"
        translated.append(char)
    return re.compile("".join(translated))


def _check_number(value: float, rule: dict[str, Any], path: str) -> tuple[str, str] | None:
    if "minimum" in rule and value < rule["minimum"]:
        return path, f"less than {rule['minimum']}"
    if "maximum" in rule and value > rule["maximum"]:
        return path, f"more than {rule['maximum']}"
    return None


def _check_array(value: list[Any], rule: dict[str, Any], root: dict[str, Any], path: str) -> tuple[str, str] | None:
    if len(value) < rule.get("minItems", 0):
        return path, f"fewer than {rule['minItems']} items"
    if "maxItems" in rule and len(value) > rule["maxItems"]:
        return path, f"more than {rule['maxItems']} items"
    if rule.get("uniqueItems") and len({json.dumps(integral(v), sort_keys=True) for v in value}) != len(value):
        return path, "items are not unique"
    items = rule.get("items")
    if isinstance(items, dict):
        for index, item in enumerate(value):
            found = _check(item, items, root, f"{path}[{index}]")
            if found:
                return found
    return None


def _check_object(value: dict[str, Any], rule: dict[str, Any], root: dict[str, Any], path: str) -> tuple[str, str] | None:
    for name in rule.get("required", []):
        if name not in value:
            return path, f"missing {name!r}"
    if len(value) < rule.get("minProperties", 0):
        return path, f"fewer than {rule['minProperties']} entries"
    if "maxProperties" in rule and len(value) > rule["maxProperties"]:
        return path, f"more than {rule['maxProperties']} entries"
    properties = rule.get("properties", {})
    extra = rule.get("additionalProperties", True)
    names = rule.get("propertyNames")
    for key, item in value.items():
        where = f"{path}.{key}" if _plain(key) else f"{path}[{json.dumps(key)}]"
        if names is not None:
            found = _check(key, names, root, where)
            if found:
                return where, f"key {_shown(key)}: {found[1]}"
        if key in properties:
            found = _check(item, properties[key], root, where)
        elif extra is False:
            return path, f"unknown field {_shown(key)}"
        elif isinstance(extra, dict):
            found = _check(item, extra, root, where)
        else:
            found = None
        if found:
            return found
    return None


_RESOLVED: dict[tuple[str, int], tuple[dict[str, Any], dict[str, Any]]] = {}


def _resolve(reference: str, root: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A `#/...` reference within `root`, or `NAME.schema.json#/...` in another shipped schema.

    Resolved once per schema (the shipped schemas are read once and kept: `root` is always one of them)."""
    key = (reference, id(root))
    if key not in _RESOLVED:
        _RESOLVED[key] = _resolved(reference, root)
    return _RESOLVED[key]


def _resolved(reference: str, root: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    document, _, pointer = reference.partition("#")
    if document:
        root = schema(document.removesuffix(".schema.json"))
    target: Any = root
    for part in [p for p in pointer.split("/") if p]:
        target = target[part]
    return dict(target), root


def _same(value: Any, expected: Any) -> bool:
    """JSON equality: types must agree (true is not 1)."""
    return (type(value) is type(expected) and value == expected) or (_kind(value) == _kind(expected) == "number" and value == expected)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return "string" if isinstance(value, str) else type(value).__name__


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


@lru_cache(maxsize=4096)
def _plain(key: str) -> bool:
    return _PLAIN_KEY.fullmatch(key) is not None


def _shown(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."
