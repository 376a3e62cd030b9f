"""IAM identity-policy evaluation, good enough to check jobguard's policy against the calls
jobguard makes (moto's own IAM enforcement lower-cases actions and sees every resource as `*`
for Batch and DynamoDB, so it cannot be used for that).

Implemented, following the IAM policy evaluation logic for identity-based policies in one account:

- an explicit Deny wins; else an Allow is needed; else the implicit deny;
- Action / NotAction with `*` and `?` wildcards, case-insensitive;
- Resource / NotResource with `*` and `?` wildcards, case-sensitive; a `*` that ends an ARN segment
  may match across colons (`job-definition/name:*`), any other `*` stays within its segment;
- Condition: every operator and every key must hold (AND); the values of one key are alternatives
  (OR). Operators: String(Not)Equals(IgnoreCase), String(Not)Like, Arn(Not)Equals, Arn(Not)Like,
  Bool, Null, Numeric(Not)Equals, NumericLessThan(Equals), NumericGreaterThan(Equals), each with
  `...IfExists` (true when the key is absent) and the `ForAnyValue:` / `ForAllValues:` set
  prefixes (ForAllValues is true when the key is absent or empty; ForAnyValue is false then);
- a key absent from the context makes a positive operator false and a negated one true.

Not implemented (and refused rather than guessed): policy variables (`${...}`), Principal /
NotPrincipal (resource policies), a multivalued context key under an operator without a set
prefix, and unknown operators.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Context = Mapping[str, "str | Sequence[str]"]

_KNOWN = {
    "StringEquals",
    "StringNotEquals",
    "StringEqualsIgnoreCase",
    "StringNotEqualsIgnoreCase",
    "StringLike",
    "StringNotLike",
    "ArnEquals",
    "ArnNotEquals",
    "ArnLike",
    "ArnNotLike",
    "Bool",
    "Null",
    "NumericEquals",
    "NumericNotEquals",
    "NumericLessThan",
    "NumericLessThanEquals",
    "NumericGreaterThan",
    "NumericGreaterThanEquals",
}
_NEGATED = {
    "StringNotEquals",
    "StringNotEqualsIgnoreCase",
    "StringNotLike",
    "ArnNotEquals",
    "ArnNotLike",
    "NumericNotEquals",
}


def allowed(policies: Iterable[Mapping[str, Any]], action: str, resource: str, context: Context | None = None) -> bool:
    """Whether identity policies allow `action` on `resource` with this request context."""
    context = context or {}
    allow = False
    for statement in _statements(policies):
        if not _applies(statement, action, resource, context):
            continue
        effect = statement.get("Effect")
        if effect == "Deny":
            return False
        if effect != "Allow":
            raise ValueError(f"statement {statement.get('Sid')!r}: Effect must be Allow or Deny, not {effect!r}")
        allow = True
    return allow


def s3_get_object_allowed_when_missing(
    policies: Iterable[Mapping[str, Any]], bucket_arn: str, key_arn: str, context: Context | None = None
) -> bool:
    """Whether S3 answers a GetObject of a missing key with 404 (True) rather than 403 (False).

    S3 reveals that a key is absent only to a caller that may GetObject it and may s3:ListBucket on
    the bucket; the ListBucket check is made with the GetObject request's context, which has no
    s3:prefix (so an s3:prefix condition on ListBucket fails)."""
    policies = list(policies)
    context = dict(context or {})
    context.pop("s3:prefix", None)
    return allowed(policies, "s3:GetObject", key_arn, context) and allowed(policies, "s3:ListBucket", bucket_arn, context)


def granted_actions(policies: Iterable[Mapping[str, Any]]) -> set[str]:
    """Every action named in an Allow statement's Action (as written; NotAction is refused)."""
    actions: set[str] = set()
    for statement in _statements(policies):
        if statement.get("Effect") != "Allow":
            continue
        if "NotAction" in statement:
            raise ValueError(f"statement {statement.get('Sid')!r}: NotAction in an Allow grants an open set")
        actions.update(_as_list(statement["Action"]))
    return actions


def grants(policies: Iterable[Mapping[str, Any]]) -> list[tuple[str, str, str]]:
    """Every (statement id, action, resource pattern) pair of the Allow statements."""
    pairs = []
    for statement in _statements(policies):
        if statement.get("Effect") != "Allow":
            continue
        for action in _as_list(statement.get("Action", [])):
            for resource in _as_list(statement.get("Resource", [])):
                pairs.append((str(statement.get("Sid", "")), action, resource))
    return pairs


# ---------------------------------------------------------------------------------------------
# Statements
# ---------------------------------------------------------------------------------------------
def _statements(policies: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    statements: list[Mapping[str, Any]] = []
    for policy in policies:
        found = policy.get("Statement", [])
        statements.extend([found] if isinstance(found, Mapping) else found)
    return statements


def _applies(statement: Mapping[str, Any], action: str, resource: str, context: Context) -> bool:
    sid = statement.get("Sid")
    if "Principal" in statement or "NotPrincipal" in statement:
        raise ValueError(f"statement {sid!r}: Principal belongs to resource policies, which this evaluator does not evaluate")
    if ("Action" in statement) == ("NotAction" in statement):
        raise ValueError(f"statement {sid!r}: exactly one of Action and NotAction")
    if ("Resource" in statement) == ("NotResource" in statement):
        raise ValueError(f"statement {sid!r}: exactly one of Resource and NotResource")
    if "Action" in statement:
        if not any(_action_matches(p, action) for p in _as_list(statement["Action"])):
            return False
    elif any(_action_matches(p, action) for p in _as_list(statement["NotAction"])):
        return False
    if "Resource" in statement:
        if not any(_resource_matches(p, resource) for p in _as_list(statement["Resource"])):
            return False
    elif any(_resource_matches(p, resource) for p in _as_list(statement["NotResource"])):
        return False
    return all(
        _condition_holds(operator, key, _as_list(values), context)
        for operator, keys in (statement.get("Condition") or {}).items()
        for key, values in keys.items()
    )


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _glob(pattern: str, *, star: str = ".*", flags: int = 0) -> re.Pattern[str]:
    if "${" in pattern:
        raise ValueError(f"policy variables are not supported: {pattern!r}")
    parts = []
    for char in pattern:
        if char == "*":
            parts.append(star)
        elif char == "?":
            parts.append(".")
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts), flags | re.DOTALL)


def _action_matches(pattern: str, action: str) -> bool:
    return _glob(pattern, flags=re.IGNORECASE).fullmatch(action) is not None


def _arn_glob(pattern: str) -> re.Pattern[str]:
    """An ARN pattern: `*` and `?` stay within a colon-separated segment, except that a `*` ending
    a segment may expand across the colons that follow."""
    if "${" in pattern:
        raise ValueError(f"policy variables are not supported: {pattern!r}")
    parts = []
    for index, char in enumerate(pattern):
        if char == "*":
            ends_segment = index + 1 == len(pattern) or pattern[index + 1] == ":"
            parts.append(".*" if ends_segment else "[^:]*")
        elif char == "?":
            parts.append("[^:]")
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts), re.DOTALL)


def _resource_matches(pattern: str, resource: str) -> bool:
    if pattern == "*":
        return True
    return _arn_glob(pattern).fullmatch(resource) is not None


def _arn_like(pattern: str, value: str) -> bool:
    """ArnEquals / ArnLike: both ARNs have six segments (the last may hold colons); each of the
    first five matches its pattern segment, the resource part matches the rest of the pattern."""
    pattern_parts = pattern.split(":", 5)
    value_parts = value.split(":", 5)
    if len(pattern_parts) != 6 or len(value_parts) != 6:
        return False
    return all(_arn_glob(p).fullmatch(v) is not None for p, v in zip(pattern_parts, value_parts, strict=True))


# ---------------------------------------------------------------------------------------------
# Conditions
# ---------------------------------------------------------------------------------------------
def _condition_holds(operator: str, key: str, policy_values: list[Any], context: Context) -> bool:
    set_operator = None
    if ":" in operator:
        set_operator, _, operator = operator.partition(":")
        if set_operator not in ("ForAnyValue", "ForAllValues"):
            raise ValueError(f"unknown set operator {set_operator!r}")
    if_exists = operator.endswith("IfExists") and operator != "IfExists"
    base = operator.removesuffix("IfExists") if if_exists else operator
    if base not in _KNOWN:
        raise ValueError(f"unknown condition operator {operator!r}")
    values = [_policy_string(v) for v in policy_values]
    present = _context_get(context, key)

    if base == "Null":
        if set_operator or if_exists:
            raise ValueError("Null takes no set prefix or IfExists")
        wants_absent = {v.lower() for v in values}
        if wants_absent - {"true", "false"}:
            raise ValueError(f"Null takes true or false, not {values}")
        return ("true" if present is None else "false") in wants_absent

    if present is None:
        if if_exists:
            return True
        if set_operator == "ForAllValues":
            return True
        if set_operator == "ForAnyValue":
            return False
        return base in _NEGATED

    if set_operator is None:
        if not isinstance(present, str):
            raise ValueError(f"context key {key!r} is multivalued: use ForAnyValue: or ForAllValues: with {operator}")
        return _single(base, present, values)
    request_values = [present] if isinstance(present, str) else list(present)
    if set_operator == "ForAllValues":
        return all(_single(base, v, values) for v in request_values)
    return any(_single(base, v, values) for v in request_values)


def _context_get(context: Context, key: str) -> str | Sequence[str] | None:
    """Condition keys are case-insensitive; their values are not."""
    for name, value in context.items():
        if name.lower() == key.lower():
            return value
    return None


def _policy_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _single(base: str, value: str, policy_values: list[str]) -> bool:
    """One request value against a condition's policy values (OR over them; negated: none match)."""
    if base in _NEGATED:
        positive = base.replace("Not", "", 1)
        return not _single(positive, value, policy_values)
    if base == "StringEquals":
        return value in policy_values
    if base == "StringEqualsIgnoreCase":
        return value.lower() in {v.lower() for v in policy_values}
    if base == "StringLike":
        return any(_glob(p).fullmatch(value) for p in policy_values)
    if base in ("ArnEquals", "ArnLike"):
        return any(_arn_like(p, value) for p in policy_values)
    if base == "Bool":
        return value.lower() in {v.lower() for v in policy_values}
    if base.startswith("Numeric"):
        try:
            number = float(value)
        except ValueError:
            return False
        compare = {
            "NumericEquals": lambda a, b: a == b,
            "NumericLessThan": lambda a, b: a < b,
            "NumericLessThanEquals": lambda a, b: a <= b,
            "NumericGreaterThan": lambda a, b: a > b,
            "NumericGreaterThanEquals": lambda a, b: a >= b,
        }.get(base)
        if compare is None:
            raise ValueError(f"unknown condition operator {base!r}")
        return any(compare(number, float(p)) for p in policy_values)
    raise ValueError(f"unknown condition operator {base!r}")
