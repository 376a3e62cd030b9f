"""The IAM evaluator the policy tests rely on: each rule it claims, with the case that tells it
from the obvious mistake."""

from __future__ import annotations

from typing import Any

import pytest

from tests.iam_eval import allowed, granted_actions, grants, s3_get_object_allowed_when_missing

BUCKET = "arn:aws:s3:::manifests"
KEY = f"{BUCKET}/deploys/run-1.json"
QUEUE = "arn:aws:batch:us-east-1:123456789012:job-queue/science"


def policy(*statements: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"Version": "2012-10-17", "Statement": list(statements)}]


def allow(action: Any, resource: Any = "*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def deny(action: Any, resource: Any = "*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Deny", "Action": action, "Resource": resource, **extra}


# ---------------------------------------------------------------------------------------------
# Effects
# ---------------------------------------------------------------------------------------------
def test_implicit_deny_without_a_matching_allow() -> None:
    assert not allowed(policy(), "s3:GetObject", KEY)
    assert not allowed(policy(allow("s3:PutObject", KEY)), "s3:GetObject", KEY)


def test_explicit_deny_wins_over_allow_in_any_policy_and_order() -> None:
    policies = [policy(allow("s3:*", "*"))[0], policy(deny("s3:GetObject", KEY))[0]]
    assert not allowed(policies, "s3:GetObject", KEY)
    assert not allowed(list(reversed(policies)), "s3:GetObject", KEY)
    assert allowed(policies, "s3:PutObject", KEY)


def test_a_single_statement_object_is_accepted() -> None:
    assert allowed([{"Statement": allow("s3:GetObject", KEY)}], "s3:GetObject", KEY)


# ---------------------------------------------------------------------------------------------
# Action and Resource
# ---------------------------------------------------------------------------------------------
def test_actions_match_case_insensitively_with_wildcards() -> None:
    assert allowed(policy(allow("S3:getobject", KEY)), "s3:GetObject", KEY)
    assert allowed(policy(allow("s3:Get*", KEY)), "s3:GetObject", KEY)
    assert allowed(policy(allow("batch:Describe?obs")), "batch:DescribeJobs", "*")
    assert not allowed(policy(allow("batch:Describe?obs")), "batch:DescribeJobQueues", "*")
    assert not allowed(policy(allow("s3:Get*", KEY)), "s3:PutObject", KEY)


def test_not_action_allows_everything_else() -> None:
    policies = policy({"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"})
    assert allowed(policies, "s3:GetObject", KEY)
    assert not allowed(policies, "iam:CreateUser", "*")


def test_resources_match_case_sensitively_with_wildcards() -> None:
    policies = policy(allow("s3:GetObject", f"{BUCKET}/deploys/*"))
    assert allowed(policies, "s3:GetObject", KEY)
    assert allowed(policies, "s3:GetObject", f"{BUCKET}/deploys/open/run-1.json")
    assert not allowed(policies, "s3:GetObject", f"{BUCKET}/Deploys/run-1.json")
    assert not allowed(policies, "s3:GetObject", f"{BUCKET}/other/run-1.json")
    assert not allowed(policies, "s3:GetObject", BUCKET)
    assert allowed(policy(allow("s3:GetObject", f"{BUCKET}/deploys/run-?.json")), "s3:GetObject", KEY)


def test_a_star_ending_a_segment_spans_colons_others_do_not() -> None:
    definitions = "arn:aws:batch:us-east-1:123456789012:job-definition/rnaseq:*"
    assert allowed(policy(allow("batch:SubmitJob", definitions)), "batch:SubmitJob", definitions.replace("*", "7"))
    assert not allowed(policy(allow("batch:SubmitJob", definitions)), "batch:SubmitJob", definitions[:-2])
    assert not allowed(
        policy(allow("batch:SubmitJob", definitions)),
        "batch:SubmitJob",
        "arn:aws:batch:us-east-1:123456789012:job-definition/rnaseq-other:7",
    )
    # Within a segment a * stops at the colon: the account segment cannot swallow the region's.
    assert not allowed(
        policy(allow("batch:SubmitJob", "arn:aws:batch:*east-1:job-queue/x")),
        "batch:SubmitJob",
        "arn:aws:batch:us-east-1:123456789012:job-queue/x",
    )


def test_not_resource_excludes() -> None:
    policies = policy({"Effect": "Allow", "Action": "s3:GetObject", "NotResource": f"{BUCKET}/secret/*"})
    assert allowed(policies, "s3:GetObject", KEY)
    assert not allowed(policies, "s3:GetObject", f"{BUCKET}/secret/x")


def test_malformed_statements_are_refused() -> None:
    with pytest.raises(ValueError):
        allowed(policy({"Effect": "Allow", "Resource": "*"}), "s3:GetObject", KEY)
    with pytest.raises(ValueError):
        allowed(policy({"Effect": "Allow", "Action": "s3:GetObject"}), "s3:GetObject", KEY)
    with pytest.raises(ValueError):
        allowed(policy(allow("s3:GetObject", KEY, Principal={"AWS": "*"})), "s3:GetObject", KEY)
    with pytest.raises(ValueError):
        allowed(policy(allow("s3:GetObject", "arn:aws:s3:::${aws:username}/*")), "s3:GetObject", KEY)


# ---------------------------------------------------------------------------------------------
# Conditions
# ---------------------------------------------------------------------------------------------
def cond(operator: str, key: str, values: Any) -> list[dict[str, Any]]:
    return policy(allow("s3:ListBucket", BUCKET, Condition={operator: {key: values}}))


def test_string_operators() -> None:
    assert allowed(cond("StringEquals", "s3:prefix", ["a/", "b/"]), "s3:ListBucket", BUCKET, {"s3:prefix": "b/"})
    assert not allowed(cond("StringEquals", "s3:prefix", "a/"), "s3:ListBucket", BUCKET, {"s3:prefix": "A/"})
    assert allowed(cond("StringEqualsIgnoreCase", "s3:prefix", "a/"), "s3:ListBucket", BUCKET, {"s3:prefix": "A/"})
    assert allowed(cond("StringLike", "s3:prefix", "deploys/*"), "s3:ListBucket", BUCKET, {"s3:prefix": "deploys/open/"})
    assert not allowed(cond("StringLike", "s3:prefix", "deploys/*"), "s3:ListBucket", BUCKET, {"s3:prefix": "other/"})
    assert allowed(cond("StringNotEquals", "s3:prefix", "secret/"), "s3:ListBucket", BUCKET, {"s3:prefix": "deploys/"})
    assert not allowed(cond("StringNotEquals", "s3:prefix", "secret/"), "s3:ListBucket", BUCKET, {"s3:prefix": "secret/"})
    assert not allowed(cond("StringNotLike", "s3:prefix", ["secret/*", "x*"]), "s3:ListBucket", BUCKET, {"s3:prefix": "secret/a"})


def test_a_missing_key_fails_positive_operators_and_passes_negated_ones() -> None:
    for operator in ("StringEquals", "StringLike", "ArnLike", "Bool", "NumericEquals"):
        assert not allowed(cond(operator, "s3:prefix", "x"), "s3:ListBucket", BUCKET, {}), operator
    for operator in ("StringNotEquals", "StringNotLike", "ArnNotLike", "NumericNotEquals"):
        assert allowed(cond(operator, "s3:prefix", "x"), "s3:ListBucket", BUCKET, {}), operator


def test_if_exists_passes_when_the_key_is_absent_only() -> None:
    policies = cond("StringLikeIfExists", "s3:prefix", "deploys/*")
    assert allowed(policies, "s3:ListBucket", BUCKET, {})
    assert allowed(policies, "s3:ListBucket", BUCKET, {"s3:prefix": "deploys/x"})
    assert not allowed(policies, "s3:ListBucket", BUCKET, {"s3:prefix": "other/"})


def test_condition_keys_are_case_insensitive_values_are_not() -> None:
    assert allowed(cond("StringEquals", "S3:Prefix", "a/"), "s3:ListBucket", BUCKET, {"s3:prefix": "a/"})


def test_every_operator_and_key_must_hold() -> None:
    policies = policy(
        allow(
            "kms:Decrypt",
            "*",
            Condition={
                "StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com", "aws:PrincipalAccount": "1"},
                "Bool": {"aws:SecureTransport": "true"},
            },
        )
    )
    good = {"kms:ViaService": "s3.us-east-1.amazonaws.com", "aws:PrincipalAccount": "1", "aws:SecureTransport": "true"}
    assert allowed(policies, "kms:Decrypt", "k", good)
    for key in good:
        assert not allowed(policies, "kms:Decrypt", "k", {k: v for k, v in good.items() if k != key}), key
    assert not allowed(policies, "kms:Decrypt", "k", {**good, "aws:SecureTransport": "false"})


def test_arn_operators() -> None:
    policies = policy(allow("iam:PassRole", "*", Condition={"ArnLike": {"aws:SourceArn": "arn:aws:batch:*:123456789012:job/*"}}))
    assert allowed(policies, "iam:PassRole", "r", {"aws:SourceArn": "arn:aws:batch:eu-west-1:123456789012:job/abc"})
    assert not allowed(policies, "iam:PassRole", "r", {"aws:SourceArn": "arn:aws:batch:eu-west-1:999999999999:job/abc"})
    assert not allowed(policies, "iam:PassRole", "r", {"aws:SourceArn": "not-an-arn"})
    equals = policy(allow("iam:PassRole", "*", Condition={"ArnEquals": {"aws:SourceArn": QUEUE}}))
    assert allowed(equals, "iam:PassRole", "r", {"aws:SourceArn": QUEUE})
    assert not allowed(equals, "iam:PassRole", "r", {"aws:SourceArn": QUEUE + "2"})


def test_bool_null_and_numeric() -> None:
    tls = policy(deny("s3:*", "*", Condition={"Bool": {"aws:SecureTransport": "false"}}), allow("s3:GetObject", KEY))
    assert not allowed(tls, "s3:GetObject", KEY, {"aws:SecureTransport": "false"})
    assert allowed(tls, "s3:GetObject", KEY, {"aws:SecureTransport": "true"})
    assert allowed(tls, "s3:GetObject", KEY, {})  # a Deny on a missing key does not apply
    assert allowed(cond("Bool", "aws:MultiFactorAuthPresent", True), "s3:ListBucket", BUCKET, {"aws:MultiFactorAuthPresent": "true"})
    assert allowed(cond("Null", "s3:prefix", "true"), "s3:ListBucket", BUCKET, {})
    assert not allowed(cond("Null", "s3:prefix", "true"), "s3:ListBucket", BUCKET, {"s3:prefix": ""})
    assert allowed(cond("Null", "s3:prefix", "false"), "s3:ListBucket", BUCKET, {"s3:prefix": "a"})
    assert allowed(cond("NumericEquals", "s3:max-keys", "10"), "s3:ListBucket", BUCKET, {"s3:max-keys": "10.0"})
    assert not allowed(cond("NumericEquals", "s3:max-keys", "10"), "s3:ListBucket", BUCKET, {"s3:max-keys": "11"})
    assert allowed(cond("NumericLessThanEquals", "s3:max-keys", "10"), "s3:ListBucket", BUCKET, {"s3:max-keys": "9"})
    assert not allowed(cond("NumericEquals", "s3:max-keys", "10"), "s3:ListBucket", BUCKET, {"s3:max-keys": "ten"})


def test_set_operators() -> None:
    any_value = cond("ForAnyValue:StringEquals", "aws:TagKeys", ["team", "cost"])
    assert allowed(any_value, "s3:ListBucket", BUCKET, {"aws:TagKeys": ["x", "team"]})
    assert not allowed(any_value, "s3:ListBucket", BUCKET, {"aws:TagKeys": ["x"]})
    assert not allowed(any_value, "s3:ListBucket", BUCKET, {"aws:TagKeys": []})
    assert not allowed(any_value, "s3:ListBucket", BUCKET, {})
    all_values = cond("ForAllValues:StringLike", "aws:TagKeys", ["jobguard:*"])
    assert allowed(all_values, "s3:ListBucket", BUCKET, {"aws:TagKeys": ["jobguard:deploy", "jobguard:original"]})
    assert not allowed(all_values, "s3:ListBucket", BUCKET, {"aws:TagKeys": ["jobguard:deploy", "owner"]})
    # The trap DESIGN.md warns of: ForAllValues holds when the key is absent or empty.
    assert allowed(all_values, "s3:ListBucket", BUCKET, {})
    assert allowed(all_values, "s3:ListBucket", BUCKET, {"aws:TagKeys": []})
    not_any = cond("ForAnyValue:StringNotEquals", "aws:TagKeys", ["team"])
    assert allowed(not_any, "s3:ListBucket", BUCKET, {"aws:TagKeys": ["team", "x"]})
    assert not allowed(not_any, "s3:ListBucket", BUCKET, {"aws:TagKeys": ["team"]})
    if_exists = cond("ForAnyValue:StringEqualsIfExists", "aws:TagKeys", ["team"])
    assert allowed(if_exists, "s3:ListBucket", BUCKET, {})


def test_a_multivalued_key_needs_a_set_operator_and_unknown_operators_are_refused() -> None:
    with pytest.raises(ValueError):
        allowed(cond("StringEquals", "aws:TagKeys", "team"), "s3:ListBucket", BUCKET, {"aws:TagKeys": ["team"]})
    with pytest.raises(ValueError):
        allowed(cond("StringSortaEquals", "s3:prefix", "a"), "s3:ListBucket", BUCKET, {})
    with pytest.raises(ValueError):
        allowed(cond("ForSomeValues:StringEquals", "s3:prefix", "a"), "s3:ListBucket", BUCKET, {"s3:prefix": "a"})


# ---------------------------------------------------------------------------------------------
# S3: 404 or 403 for a missing key
# ---------------------------------------------------------------------------------------------
def test_missing_key_is_404_only_with_an_unconditional_list_bucket() -> None:
    read = allow("s3:GetObject", f"{BUCKET}/deploys/*")
    assert s3_get_object_allowed_when_missing(policy(read, allow("s3:ListBucket", BUCKET)), BUCKET, KEY)
    # The module's old policy: ListBucket only under an s3:prefix condition -> 403 on a missing key,
    # although listing the prefix itself is allowed.
    prefixed = policy(read, allow("s3:ListBucket", BUCKET, Condition={"StringLike": {"s3:prefix": ["deploys/*", "deploys/"]}}))
    assert allowed(prefixed, "s3:ListBucket", BUCKET, {"s3:prefix": "deploys/"})
    assert not s3_get_object_allowed_when_missing(prefixed, BUCKET, KEY)
    # The caller's own s3:prefix never reaches the ListBucket check of a GetObject.
    assert not s3_get_object_allowed_when_missing(prefixed, BUCKET, KEY, {"s3:prefix": "deploys/"})
    assert not s3_get_object_allowed_when_missing(policy(read), BUCKET, KEY)
    assert not s3_get_object_allowed_when_missing(policy(allow("s3:ListBucket", BUCKET)), BUCKET, KEY)


def test_granted_actions_and_grants() -> None:
    policies = policy(allow(["s3:GetObject", "s3:PutObject"], [KEY, BUCKET], Sid="A"), deny("s3:DeleteObject", KEY))
    assert granted_actions(policies) == {"s3:GetObject", "s3:PutObject"}
    assert ("A", "s3:PutObject", BUCKET) in grants(policies) and len(grants(policies)) == 4
    with pytest.raises(ValueError):
        granted_actions(policy({"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}))
