"""Manifests in a DynamoDB table (`dynamodb://TABLE`): one item per deploy and one per job.

Key schema pk (S) / sk (S), TTL attribute expires_at, as the Terraform module creates it:
  pk = "deploys",        sk = DEPLOY_ID          the manifest's header
  pk = "deploy#DEPLOY",  sk = "job#JOB_ID"       one job's record
  pk = "locks",          sk = LOCK_NAME          a deploy lock
A manifest of any size fits (one item holds at most 400 KB). Only the records that changed are
written, each conditional on the version read, in transactions of up to 100 items, so two
processes can never both take the same job and a save costs what changed, not the manifest.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ..errors import ConflictError, StoreError
from ..manifest import Manifest
from ..retry import RetryPolicy, error_code
from .batch import chunks
from .locks import LockRecord

TRANSACTION_ITEMS = 100
RETENTION_SECONDS = 90 * 24 * 3600
HEADER_PK, LOCK_PK = "deploys", "locks"


def _job_pk(deploy_id: str) -> str:
    return f"deploy#{deploy_id}"


class DynamoDBStore:
    """The manifest store on a DynamoDB table."""

    def __init__(self, client: Any, table: str, retry: RetryPolicy) -> None:
        self.client, self.table, self.retry = client, table, retry
        self._versions: dict[tuple[str, str], tuple[str, int]] = {}  # (pk, sk) -> (body, version)

    def uri(self, deploy_id: str) -> str:
        return f"dynamodb://{self.table}/{deploy_id}"

    def _call(self, what: str, action: str, **kwargs: Any) -> Any:
        try:
            return self.retry.call(lambda: getattr(self.client, action)(**kwargs))
        except ClientError as exc:
            if error_code(exc) in ("TransactionCanceledException", "ConditionalCheckFailedException"):
                raise ConflictError(f"{what}: another process changed the manifest") from None
            raise StoreError(f"{what}: {error_code(exc)}: {exc.response.get('Error', {}).get('Message', '')}") from None
        except BotoCoreError as exc:
            raise StoreError(f"{what}: {exc}") from None

    def load(self, deploy_id: str) -> Manifest | None:
        where = self.uri(deploy_id)
        item = self._call(
            f"{where}: cannot read manifest", "get_item", TableName=self.table, Key=_key(HEADER_PK, deploy_id), ConsistentRead=True
        ).get("Item")
        if item is None:
            return None
        header = _body(item, where)
        self._versions[(HEADER_PK, deploy_id)] = (item["body"]["S"], int(item["version"]["N"]))
        records = []
        for job in self._query(_job_pk(deploy_id), where):
            records.append((int(job.get("seq", {"N": "0"})["N"]), _body(job, f"{where}: {job['sk']['S']}")))
            self._versions[(_job_pk(deploy_id), job["sk"]["S"])] = (job["body"]["S"], int(job["version"]["N"]))
        document = {**header, "jobs": [r for _, r in sorted(records, key=lambda pair: pair[0])]} if isinstance(header, dict) else header
        return Manifest.from_document(document, where)

    def _query(self, pk: str, where: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        request: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": pk}},
            "ConsistentRead": True,
        }
        while True:
            page = self._call(f"{where}: cannot read manifest", "query", **request)
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return items
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def save(self, manifest: Manifest) -> None:
        deploy_id, where = manifest.deploy_id, self.uri(manifest.deploy_id)
        expires = int(time.time()) + RETENTION_SECONDS
        changes: list[tuple[tuple[str, str], str, int | None]] = []
        for seq, record in enumerate(manifest):
            body = json.dumps(asdict(record), sort_keys=True)
            key = (_job_pk(deploy_id), f"job#{record.job_id}")
            if self._versions.get(key, ("", 0))[0] != body:
                changes.append((key, body, seq))
        header_key = (HEADER_PK, deploy_id)
        header_body = json.dumps(manifest.header(), sort_keys=True)
        # Every transaction also moves the header on, so a concurrent writer of the same manifest conflicts.
        for page in list(chunks(changes, TRANSACTION_ITEMS - 1)) or [[]]:
            items: list[tuple[tuple[str, str], str, int | None]] = [(header_key, header_body, None), *page]
            self._call(
                f"{where}: cannot write manifest", "transact_write_items", TransactItems=[self._put(k, b, s, expires) for k, b, s in items]
            )
            for key, body, _ in items:
                self._versions[key] = (body, self._versions.get(key, ("", 0))[1] + 1)

    def _put(self, key: tuple[str, str], body: str, seq: int | None, expires: int) -> dict[str, Any]:
        version = self._versions.get(key, ("", 0))[1]
        item = {**_key(*key), "body": {"S": body}, "version": {"N": str(version + 1)}, "expires_at": {"N": str(expires)}}
        if seq is not None:
            item["seq"] = {"N": str(seq)}
        condition = ("version = :v", {":v": {"N": str(version)}}) if version else ("attribute_not_exists(pk)", None)
        put: dict[str, Any] = {"TableName": self.table, "Item": item, "ConditionExpression": condition[0]}
        if condition[1]:
            put["ExpressionAttributeValues"] = condition[1]
        return {"Put": put}

    def deploy_ids(self) -> list[str]:
        return sorted(item["sk"]["S"] for item in self._query(HEADER_PK, f"dynamodb://{self.table}"))

    # -- deploy locks -------------------------------------------------------------------
    def try_lock(self, name: str, record: LockRecord) -> LockRecord | None:
        """Take or renew the lock unless someone else holds an unexpired one; that holder, or None."""
        item = {
            **_key(LOCK_PK, name),
            "body": {"S": record.to_json()},
            "holder": {"S": record.holder_id},
            "lock_expires": {"N": str(record.expires_at)},
            "expires_at": {"N": str(int(record.expires_at) + 3600)},
        }
        try:
            self.retry.call(
                lambda: self.client.put_item(
                    TableName=self.table,
                    Item=item,
                    ConditionExpression="attribute_not_exists(pk) OR lock_expires < :now OR holder = :me",
                    ExpressionAttributeValues={":now": {"N": str(time.time())}, ":me": {"S": record.holder_id}},
                )
            )
            return None
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise StoreError(f"dynamodb://{self.table}: cannot take lock {name}: {error_code(exc)}") from None
        current = self._call(
            f"dynamodb://{self.table}: cannot read lock {name}",
            "get_item",
            TableName=self.table,
            Key=_key(LOCK_PK, name),
            ConsistentRead=True,
        ).get("Item")
        return LockRecord.from_json(current["body"]["S"]) if current else None

    def unlock(self, name: str, record: LockRecord) -> None:
        """Release the lock if we still hold it."""
        try:
            self.retry.call(
                lambda: self.client.delete_item(
                    TableName=self.table,
                    Key=_key(LOCK_PK, name),
                    ConditionExpression="holder = :me",
                    ExpressionAttributeValues={":me": {"S": record.holder_id}},
                )
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise StoreError(f"dynamodb://{self.table}: cannot release lock {name}: {error_code(exc)}") from None


def _key(pk: str, sk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def _body(item: dict[str, Any], where: str) -> Any:
    try:
        return json.loads(item["body"]["S"])
    except (KeyError, ValueError) as exc:
        from ..errors import ManifestError

        raise ManifestError(f"{where}: damaged manifest item ({exc})") from None
