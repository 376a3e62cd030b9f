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
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from dataclasses import replace
from datetime import datetime
from functools import partial
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ...domain.documents import parse_json
from ...errors import ConflictError, ManifestError, StoreError
from ..aws import Aws, translate
from ..retry import error_code, error_message
from .base import Page, Versioned, split_key

TRANSACTION_ITEMS = 100
BATCH_KEYS = 100  # BatchGetItem reads at most 100 items a call
READ_ATTEMPTS = 8
RETENTION_SECONDS = 90 * 24 * 3600
FIRST_VERSIONS = 2**62  # a document's first version is one of these: two never meet
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
        return self._attempt(action, what, lambda: self.aws.send("dynamodb", action, **request))

    def _attempt(self, action: str, what: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        try:
            return self.aws.attempts("dynamodb", action, fn)
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
        """The header, the order of the job items (their keys and places only), then the records page by page
        from `Versioned.pages`, read as they are asked for: a manifest of 100 000 records is never held whole.
        Once the pages are read, the header's version is read again (`Versioned.settled`): a save that landed
        in between (another run writing the same manifest) raises ConflictError and the caller reads again.

        A header without `page_records` was saved before pages (its signature covers the whole document):
        its records are handed out whole, as `jobs`."""
        where = self.uri(deploy_id)
        for _ in range(READ_ATTEMPTS):
            with suppress(ConflictError):  # a save landed between the header and the records: read again
                return self._load(deploy_id, where)
        raise StoreError(f"{where}: other writers kept changing the manifest while it was read; gave up after {READ_ATTEMPTS} tries")

    def _load(self, deploy_id: str, where: str) -> Versioned | None:
        item = self._header(deploy_id, where)
        if item is None:
            return None
        header, version = _body(item, where), _version(item, where)
        if not isinstance(header, dict):
            raise ManifestError(f"{where}: damaged manifest header, not a JSON object")
        order = self._order(deploy_id, version, where)
        size = header.get("page_records")
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            jobs = [r for records in self._read_pages(deploy_id, version, [order], where) for r in records]
            self._settled(deploy_id, version, where)
            return Versioned({**header, "jobs": jobs}, version)
        chunks = [order[start : start + size] for start in range(0, len(order), size)]
        found = Versioned(header, version)

        def settled() -> Versioned:
            self._settled(deploy_id, version, where)
            return found

        return replace(found, pages=lambda: self._read_pages(deploy_id, version, chunks, where), settled=settled)

    def page(self, deploy_id: str, index: int, digest: str, ids: Sequence[str]) -> list[Any] | None:
        """The items of `ids`, in their order (the caller checks them against `digest`); None when one is no longer
        stored (the caller reads the manifest again)."""
        where = f"{self.uri(deploy_id)} page {index}"
        items = self._items(deploy_id, list(ids), f"cannot read {where}")
        if any(job_id not in items for job_id in ids):
            return None
        return [_body(items[job_id], f"{where}: job {job_id}") for job_id in ids]

    def _order(self, deploy_id: str, version: str, where: str) -> list[str]:
        """The job ids of a manifest in their places (`seq`), read without their records. Saves place records at
        0, 1, 2, ...: other places are a save read half-way (ConflictError) or an edit of the table."""
        items = self._query(_job_pk(deploy_id), f"cannot read {where}", projection="sk, seq")
        placed = sorted((_number(i, "seq"), i["sk"]["S"]) for i in items)
        for place, (seq, sk) in enumerate(placed):
            if seq != place:
                self._settled(deploy_id, version, where)
                raise ManifestError(
                    f"{where}: records are not at places 0 to {len(placed) - 1} ({sk} is at place {seq} where {place} was due): "
                    "records deleted or their places edited"
                )
        return [sk.removeprefix("job#") for _, sk in placed]

    def _read_pages(self, deploy_id: str, version: str, chunks: list[list[str]], where: str) -> Iterator[list[Any]]:
        """The records of each chunk of ids, as many chunks read at once as give every worker a BatchGetItem (more
        would only hold more records at once); a record gone since the ids were read is a save in between
        (ConflictError) unless the header's version is still the one read."""
        at_once = max(1, -(-self.aws.settings.workers * BATCH_KEYS // max(1, len(chunks[0]) if chunks else 1)))
        for start in range(0, len(chunks), at_once):
            batch = chunks[start : start + at_once]
            items = self._items(deploy_id, [i for ids in batch for i in ids], f"cannot read {where}")
            for ids in batch:
                missing = [i for i in ids if i not in items]
                if missing:
                    self._settled(deploy_id, version, where)
                    raise ManifestError(f"{where}: job {missing[0]} is listed but its record is gone: dropped from the table?")
                yield [_body(items[i], f"{where}: job {i}") for i in ids]

    def _items(self, deploy_id: str, ids: list[str], what: str) -> dict[str, dict[str, Any]]:
        """The job items of `ids` by job id (those not stored are absent), `BATCH_KEYS` a BatchGetItem, in parallel."""
        keys = [[_key(_job_pk(deploy_id), f"job#{i}") for i in ids[start : start + BATCH_KEYS]] for start in range(0, len(ids), BATCH_KEYS)]
        found: dict[str, dict[str, Any]] = {}
        for items in self.aws.parallel(lambda batch: self._batch_get(batch, what), keys):
            found.update((item["sk"]["S"].removeprefix("job#"), item) for item in items)
        return found

    def _batch_get(self, keys: list[dict[str, Any]], what: str) -> list[dict[str, Any]]:
        """BatchGetItem of at most `BATCH_KEYS` keys, those left unprocessed asked again: at once while each answer
        reads some, under the retry policy (back-off) when one reads none."""
        items: list[dict[str, Any]] = []
        left = keys
        while left:
            answer = self._attempt("batch_get_item", what, partial(self._read_some, left))
            items += answer.get("Responses", {}).get(self.table, [])
            left = _unprocessed(answer, self.table)
        return items

    def _read_some(self, keys: list[dict[str, Any]]) -> dict[str, Any]:
        answer = self.aws.send("dynamodb", "batch_get_item", RequestItems={self.table: {"Keys": keys, "ConsistentRead": True}})
        if len(_unprocessed(answer, self.table)) == len(keys):
            # DynamoDB leaves keys unprocessed when the table's read capacity is exceeded and asks the caller to back
            # off exponentially: an answer that read none is retried as the throttling it is.
            message = f"{len(keys)} keys left unprocessed"
            raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": message}}, "BatchGetItem")
        return answer

    def _settled(self, deploy_id: str, version: str, where: str) -> None:
        """ConflictError when the manifest's version is no longer `version`: a save landed while it was read."""
        again = self._header(deploy_id, where, projection="version")
        if again is None or _version(again, where) != version:
            raise ConflictError(f"{where}: replaced by another run while it was read")

    def _header(self, deploy_id: str, where: str, projection: str | None = None) -> dict[str, Any] | None:
        request: dict[str, Any] = {"TableName": self.table, "Key": _key(HEADER_PK, deploy_id), "ConsistentRead": True}
        if projection:
            request["ProjectionExpression"] = projection
        item: dict[str, Any] | None = self._call("get_item", f"cannot read {where}", **request).get("Item")
        return item

    def version(self, deploy_id: str) -> str | None:
        where = self.uri(deploy_id)
        item = self._header(deploy_id, where, projection="version")
        return None if item is None else _version(item, where)

    def save(self, deploy_id: str, head: dict[str, Any], pages: Sequence[Page], version: str | None) -> str:
        where = self.uri(deploy_id)
        expires = _expiry(head)
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

    def _query(self, pk: str, what: str, projection: str | None = None) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        request: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": pk}},
            "ConsistentRead": True,
        }
        if projection:
            request["ProjectionExpression"] = projection
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
        return Versioned(item.get("body", {}).get("S", "").encode(), _version(item, where))

    def write(self, key: str, body: bytes, version: str | None) -> str:
        kind, name = split_key(key)
        current = int(version) if version else 0
        # A document written anew starts at a random version, not at 1: a delete conditional on a version read
        # before the document was deleted and written again must not take the new one (the index of open deploys).
        new = current + 1 if current else secrets.randbelow(FIRST_VERSIONS) + 1
        item = {
            **_key(kind, name),
            "body": {"S": body.decode()},
            "version": {"N": str(new)},
            "expires_at": {"N": str(int(time.time()) + RETENTION_SECONDS)},
        }
        self._call("put_item", f"cannot write {self.location()} {key}", TableName=self.table, Item=item, **_condition(current))
        return str(new)

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


def _expiry(head: dict[str, Any]) -> str:
    """When a manifest's items expire: RETENTION_SECONDS after the manifest was made, the header and every record
    alike. A record is written only when it changes, the header at every save: were each to expire counted from
    its own write, TTL would take a long-open manifest's first records and leave its header naming them."""
    try:
        made = datetime.fromisoformat(str(head.get("created_at"))).timestamp()
    except ValueError:  # no date: as if made now
        made = time.time()
    return str(int(min(made, time.time()) + RETENTION_SECONDS))


def _condition(version: int) -> dict[str, Any]:
    if not version:
        return {"ConditionExpression": "attribute_not_exists(pk)"}
    return {"ConditionExpression": "version = :v", "ExpressionAttributeValues": {":v": {"N": str(version)}}}


def _unprocessed(answer: dict[str, Any], table: str) -> list[dict[str, Any]]:
    keys: list[dict[str, Any]] = answer.get("UnprocessedKeys", {}).get(table, {}).get("Keys", [])
    return keys


def _version(item: dict[str, Any], where: str) -> str:
    """The item's version, a whole number above 0 as jobguard writes it. One edited by hand is refused: taken as
    none, every conditional write against it would fail as if another run had just written."""
    value = item.get("version", {}).get("N")
    if not isinstance(value, str) or not (value.isascii() and value.isdigit()) or int(value) < 1:
        shown = json.dumps(item.get("version"))[:60]
        raise ManifestError(f"{where}: damaged item: its version {shown} is not a whole number above 0 (edited by hand?)")
    return value


def _number(item: dict[str, Any], name: str) -> int:
    value = item.get(name, {}).get("N", "0")
    return int(value) if str(value).isdigit() else 0


def _body(item: dict[str, Any], where: str) -> Any:
    body = item.get("body", {}).get("S")
    if not isinstance(body, str):
        raise ManifestError(f"{where}: damaged item, no body")
    return parse_json(body, where)
