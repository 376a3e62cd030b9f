"""The simulation's DynamoDB transactions (jobguard/sim/dynamodb.py): atomic as AWS's, at the cost of what they touch."""

from __future__ import annotations

import time
from typing import Any

import pytest
from botocore.exceptions import ClientError
from moto.dynamodb.models.table import Table

from jobguard.sim import Seeder

from .conftest import create_table


def _put(sk: str, condition: bool = False) -> dict[str, Any]:
    put: dict[str, Any] = {"TableName": "t", "Item": {"pk": {"S": "p"}, "sk": {"S": sk}, "v": {"S": sk}}}
    if condition:
        put["ConditionExpression"] = "attribute_not_exists(pk)"
    return {"Put": put}


def test_a_transaction_with_a_failed_condition_writes_nothing(seed: Seeder) -> None:
    create_table(seed, "t")
    dynamodb = seed.client("dynamodb")
    dynamodb.transact_write_items(TransactItems=[_put("a")])
    with pytest.raises(ClientError, match="TransactionCanceled"):
        dynamodb.transact_write_items(TransactItems=[_put("b"), _put("c"), _put("a", condition=True)])
    stored = dynamodb.query(TableName="t", KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": "p"}})["Items"]
    assert [i["sk"]["S"] for i in stored] == ["a"]
    dynamodb.transact_write_items(TransactItems=[_put("b"), _put("c", condition=True)])  # the table still takes writes
    stored = dynamodb.query(TableName="t", KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": "p"}})["Items"]
    assert [i["sk"]["S"] for i in stored] == ["a", "b", "c"]


def test_a_transaction_costs_what_it_touches_not_the_table(seed: Seeder) -> None:
    """moto's own copied the whole table once per item: 99 items into a table of 5 000 took seconds a write."""
    create_table(seed, "t")
    dynamodb = seed.client("dynamodb")
    for start in range(0, 5_000, 25):
        dynamodb.batch_write_item(
            RequestItems={"t": [{"PutRequest": {"Item": _put(f"{start + k:05d}")["Put"]["Item"]}} for k in range(25)]}
        )
    tracked = len(getattr(Table, "instances_tracked"))  # noqa: B009 (moto sets it on its models' classes at run time)
    small = _timed(dynamodb, "x", 1)
    large = _timed(dynamodb, "y", 99)
    assert large < 30 * small + 0.5, (small, large)  # a copy of the table per item: ~99 x (table copy)
    assert len(getattr(Table, "instances_tracked")) == tracked  # noqa: B009  # no copy kept by moto until its next reset (gigabytes, once)


def _timed(dynamodb: Any, prefix: str, items: int) -> float:
    started = time.monotonic()
    dynamodb.transact_write_items(TransactItems=[_put(f"{prefix}{k}") for k in range(items)])
    return time.monotonic() - started
