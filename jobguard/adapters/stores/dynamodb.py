"""`dynamodb://TABLE`: one item per deploy, one per job, one per small document.

Key schema pk (S) / sk (S), TTL attribute expires_at, as the Terraform module creates it:
  pk = "deploys",        sk = DEPLOY_ID          a manifest's header (and its version)
  pk = "deploy#DEPLOY",  sk = "job#JOB_ID"       one job's record
  pk = KIND,             sk = NAME               a small document (leases, submitted, open)
A manifest of any size fits (an item holds at most 400 KB). A save writes only the records that
changed (a record's `seq` is its place: page * page_records + its place in the page), with the
header, in one transaction conditional on the header's version (at most 99 records: the caller
saves more in steps, each a whole signed manifest), so a concurrent writer always conflicts
instead of interleaving and an interrupted save leaves the last version whole.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ...domain.documents import parse_json
from ...errors import ConflictError, ManifestError, StoreError
from ..aws import Aws, translate
from ..retry import error_code, error_message
from .base import Page, Versioned, split_key

TRANSACTION_ITEMS = 100
READ_ATTEMPTS = 8
RETENTION_SECONDS = 90 * 24 * 3600
HEADER_PK = "deploys"
CONFLICT = ("TransactionCanceledException", "ConditionalCheckFailedException")


def _job_pk(deploy_id: str) -> str:
    return f"deploy#{deploy_id}"


def _key(pk: str, sk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


class DynamoDBStore:
    """The manifest store on a DynamoDB table."""

    atomic_records = TRANSACTION_ITEMS - 1  # one transaction holds the header and this many records

    def __init__(self, aws: Aws, table: str) -> None:
        self.aws, self.table = aws, table

    def location(self) -> str:
        return f"dynamodb://{self.table}"

    def uri(self, deploy_id: str) -> str:
        return f"dynamodb://{self.table}/{deploy_id}"

    def _call(self, action: str, what: str, **request: Any) -> dict[str, Any]:
        try:
            return self.aws.attempts("dynamodb", action, lambda: self.aws.send("dynamodb", action, **request))
        except ClientError as exc:
            if error_code(exc) in CONFLICT:
                raise ConflictError(f"{what}: changed by another process since it was read") from None
            if error_code(exc) == "ResourceNotFoundException":
                raise StoreError(
                    f"{what}: the table {self.table} does not exist", hint="create it (the Terraform module does) or fix the store URI"
                ) from None
            raise StoreError(f"{what}: {error_code(exc)}: {error_message(exc)}".rstrip(": ")) from None
        except (BotoCoreError, OSError) as exc:
            error = translate(exc, what)
            raise (error if isinstance(error, StoreError) else StoreError(str(error))) from None

    # -- manifests -------------------------------------------------------------------------
    def load(self, deploy_id: str) -> Versioned | None:
        """The header, then the job items, then the header's version again: a save that landed in between
        (another run writing the same manifest) would pair one version's header with another's records."""
        where = self.uri(deploy_id)
        for _ in range(READ_ATTEMPTS):
            item = self._header(deploy_id, where)
            if item is None:
                return None
            header = _body(item, where)
            if not isinstance(header, dict):
                raise ManifestError(f"{where}: damaged manifest header, not a JSON object")
            records = []
            for job in self._query(_job_pk(deploy_id), f"cannot read {where}"):
                records.append((_number(job, "seq"), _body(job, f"{where}: {job.get('sk', {}).get('S', '?')}")))
            again = self._header(deploy_id, where, projection="version")
            if again is not None and _version(again) == _version(item):
                document = {**header, "jobs": [r for _, r in sorted(records, key=lambda pair: pair[0])]}
                return Versioned(document, _version(item))
        raise StoreError(f"{where}: other writers kept changing the manifest while it was read; gave up after {READ_ATTEMPTS} tries")

    def _header(self, deploy_id: str, where: str, projection: str | None = None) -> dict[str, Any] | None:
        request: dict[str, Any] = {"TableName": self.table, "Key": _key(HEADER_PK, deploy_id), "ConsistentRead": True}
        if projection:
            request["ProjectionExpression"] = projection
        item: dict[str, Any] | None = self._call("get_item", f"cannot read {where}", **request).get("Item")
        return item

    def version(self, deploy_id: str) -> str | None:
        item = self._header(deploy_id, self.uri(deploy_id), projection="version")
        return None if item is None else _version(item)

    def page(self, deploy_id: str, index: int, digest: str) -> list[Any] | None:
        """Records are items of their own, never read back as pages (`load` hands out none): restore holds them whole."""
        return None

    def save(self, deploy_id: str, head: dict[str, Any], pages: Sequence[Page], version: str | None) -> str:
        where = self.uri(deploy_id)
        expires = str(int(time.time()) + RETENTION_SECONDS)
        size = int(head["page_records"])
        jobs = [
            (page.index * size + place, job)
            for page in pages
            for place, job in enumerate(page.records or ())
            if job.get("job_id") in page.changed
        ]
        if len(jobs) > self.atomic_records:
            raise ValueError(f"{len(jobs)} records in one save: the caller splits saves into steps of {self.atomic_records}")
        current = int(version) if version else 0
        # One transaction: the header's version moves on with the records, so a concurrent writer
        # conflicts, and an interrupted save leaves the previous version whole.
        header_item = {
            **_key(HEADER_PK, deploy_id),
            "body": {"S": json.dumps(head, sort_keys=True)},
            "version": {"N": str(current + 1)},
            "expires_at": {"N": expires},
        }
        items = [{"Put": {"TableName": self.table, "Item": header_item, **_condition(current)}}]
        for seq, job in jobs:
            item = {
                **_key(_job_pk(deploy_id), f"job#{job['job_id']}"),
                "body": {"S": json.dumps(job, sort_keys=True)},
                "seq": {"N": str(seq)},
                "expires_at": {"N": expires},
            }
            items.append({"Put": {"TableName": self.table, "Item": item}})
        self._call("transact_write_items", f"cannot write {where}", TransactItems=items)
        return str(current + 1)

    def deploy_ids(self) -> list[str]:
        return sorted(item["sk"]["S"] for item in self._query(HEADER_PK, f"cannot list {self.location()}"))

    def _query(self, pk: str, what: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        request: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": pk}},
            "ConsistentRead": True,
        }
        while True:
            page = self._call("query", what, **request)
            items += page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return items
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # -- small documents -------------------------------------------------------------------
    def read(self, key: str) -> Versioned | None:
        kind, name = split_key(key)
        where = f"{self.location()} {key}"
        item = self._call("get_item", f"cannot read {where}", TableName=self.table, Key=_key(kind, name), ConsistentRead=True).get("Item")
        if item is None:
            return None
        return Versioned(item.get("body", {}).get("S", "").encode(), _version(item))

    def write(self, key: str, body: bytes, version: str | None) -> str:
        kind, name = split_key(key)
        current = int(version) if version else 0
        item = {
            **_key(kind, name),
            "body": {"S": body.decode()},
            "version": {"N": str(current + 1)},
            "expires_at": {"N": str(int(time.time()) + RETENTION_SECONDS)},
        }
        self._call("put_item", f"cannot write {self.location()} {key}", TableName=self.table, Item=item, **_condition(current))
        return str(current + 1)

    def delete(self, key: str, version: str) -> None:
        kind, name = split_key(key)
        try:
            self._call(
                "delete_item",
                f"cannot delete {self.location()} {key}",
                TableName=self.table,
                Key=_key(kind, name),
                **_condition(int(version)),
            )
        except ConflictError:
            if self.read(key) is not None:
                raise

    def keys(self, kind: str) -> list[str]:
        return sorted(item["sk"]["S"] for item in self._query(kind, f"cannot list {self.location()} {kind}"))

    def clock(self) -> float:
        return self.aws.server_time("dynamodb")


def _condition(version: int) -> dict[str, Any]:
    if not version:
        return {"ConditionExpression": "attribute_not_exists(pk)"}
    return {"ConditionExpression": "version = :v", "ExpressionAttributeValues": {":v": {"N": str(version)}}}


def _version(item: dict[str, Any]) -> str:
    return str(_number(item, "version"))


def _number(item: dict[str, Any], name: str) -> int:
    value = item.get(name, {}).get("N", "0")
    return int(value) if str(value).isdigit() else 0


def _body(item: dict[str, Any], where: str) -> Any:
    body = item.get("body", {}).get("S")
    if not isinstance(body, str):
        raise ManifestError(f"{where}: damaged item, no body")
    return parse_json(body, where)
