"""DynamoDB's TTL takes a manifest whole: its header and every record expire at the same time, counted from the
day the manifest was made, however long the deploy stays open and whichever records later saves rewrite."""

from __future__ import annotations

import time
from datetime import datetime
from types import SimpleNamespace

import pytest

from jobguard.adapters.stores.dynamodb import RETENTION_SECONDS
from jobguard.sim import Seeder

from .conftest import TABLE, dynamodb_document, work_queue

DAY = 24 * 3600


def _expiries(seed: Seeder) -> dict[str, int]:
    """expires_at of every item of manifest d1 (its header under `header`), by sort key."""
    table = seed.client("dynamodb")
    header = table.get_item(TableName=TABLE, Key={"pk": {"S": "deploys"}, "sk": {"S": "d1"}})["Item"]
    pages = table.get_paginator("query").paginate(
        TableName=TABLE, KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": {"S": "deploy#d1"}}
    )
    found = {i["sk"]["S"]: int(i["expires_at"]["N"]) for page in pages for i in page["Items"]}
    return {"header": int(header["expires_at"]["N"]), **found}


@pytest.mark.parametrize("store", ["dynamodb"], indirect=True)
def test_a_manifest_saved_again_weeks_later_expires_whole(seed: Seeder, store: str, run, monkeypatch: pytest.MonkeyPatch) -> None:
    work_queue(seed)
    early = [seed.job(jobName=f"early-{i}", jobQueue="work", jobDefinition="proc") for i in range(3)]
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    # Six weeks on (the deploy never restored), the deploy's drain runs again and records new jobs only.
    weeks_on = time.time() + 42 * DAY
    monkeypatch.setattr("jobguard.adapters.stores.dynamodb.time", SimpleNamespace(time=lambda: weeks_on))  # its clock only
    late = [seed.job(jobName=f"late-{i}", jobQueue="work", jobDefinition="proc") for i in range(2)]
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    expiries = _expiries(seed)
    assert set(expiries) == {"header", *(f"job#{j}" for j in early + late)}
    made = datetime.fromisoformat(dynamodb_document(seed, TABLE, "d1")["created_at"]).timestamp()
    assert set(expiries.values()) == {int(made + RETENTION_SECONDS)}, expiries
