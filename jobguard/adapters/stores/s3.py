"""`s3://BUCKET/PREFIX`: manifests as `PREFIX/DEPLOY_ID.json` and `PREFIX/pages/DEPLOY_ID/` (a head and
pages of records, paged.py), documents as `PREFIX/KIND/NAME.json`.

Every write is conditional: If-None-Match for a new object, If-Match on the ETag read for a
replacement or a delete. S3 answers GetObject of a missing key with 403, not 404, unless the
caller may list the bucket (without a prefix condition): that 403 is reported with that hint.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import suppress
from functools import partial
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ...domain.documents import parse_json
from ...errors import ConflictError, StoreError, UnreachableError, UsageError
from ..aws import Aws, translate
from ..retry import error_code
from . import paged
from .base import MAX_DOCUMENT_BYTES, MAX_MANIFEST_BYTES, SUFFIX, Page, Versioned, split_key

# What S3 answers when an If-Match / If-None-Match condition does not hold (or the object to match is gone).
PRECONDITION_FAILED = ("PreconditionFailed", "ConditionalRequestConflict", "412", "NoSuchKey")
EXISTS = ("PreconditionFailed", "412")  # what If-None-Match answers when an object is stored under the key
ABSENT = ("NoSuchKey", "404", "NotFound")
DENIED_HINT = (
    "S3 answers 403 for a key that does not exist unless the role may s3:ListBucket on the bucket "
    "without an s3:prefix condition (the Terraform module grants it); check the role's policy"
)


class S3Store:
    """The manifest store on an S3 prefix."""

    def __init__(self, aws: Aws, bucket: str, prefix: str) -> None:
        self.aws, self.bucket, self.prefix = aws, bucket, prefix.strip("/")
        self._heads: dict[str, dict[str, bytes]] = {}  # deploy id -> the heads read or written, by version

    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}{SUFFIX}" if self.prefix else f"{name}{SUFFIX}"

    def uri(self, deploy_id: str) -> str:
        return f"s3://{self.bucket}/{self._key(deploy_id)}"

    def load(self, deploy_id: str) -> Versioned | None:
        # Every head read, the first and any a read of the pages followed: a save that replaces one deletes the pages
        # only it named.
        heads = self._heads.setdefault(deploy_id, {})

        def head() -> Versioned | None:
            found = self._get(self._key(deploy_id), MAX_MANIFEST_BYTES)
            if found is not None:
                heads[found.version] = bytes(found.value)
            return found

        return paged.load(deploy_id, self.uri(deploy_id), head, self._pages_of)

    def page(self, deploy_id: str, index: int, digest: str, ids: Sequence[str]) -> list[Any] | None:
        return paged.page(deploy_id, index, digest, self.uri(deploy_id), self._pages_of)

    def version(self, deploy_id: str) -> str | None:
        found = self._get(self._key(deploy_id), MAX_MANIFEST_BYTES)
        return None if found is None else found.version

    def save(self, deploy_id: str, head: dict[str, Any], pages: Sequence[Page], version: str | None) -> str:
        written = [p for p in pages if p.records is not None]
        self.aws.parallel(
            lambda page: self._put_page(self._document(paged.page_key(deploy_id, page.index, page.digest)), deploy_id, page), written
        )
        body = paged.head_body(head, pages)
        new_version = self._put(self._key(deploy_id), body, version)
        keys = [paged.page_key(deploy_id, p.index, p.digest) for p in pages]
        replaced = self._heads.get(deploy_id, {}).get(version or "")
        if replaced is not None:  # pages only the replaced head named
            for key in set(paged.named(deploy_id, parse_json(replaced, self.uri(deploy_id)))) - set(keys):
                with suppress(UnreachableError):  # a page left behind costs storage, nothing else
                    self.delete_page(key)
        self._heads[deploy_id] = {new_version: body}
        return new_version

    def deploy_ids(self) -> list[str]:
        prefix = f"{self.prefix}/" if self.prefix else ""
        return sorted(k[len(prefix) : -len(SUFFIX)] for k in self._list(prefix) if k.endswith(SUFFIX))

    def read(self, key: str) -> Versioned | None:
        return self._get(self._document(key), MAX_DOCUMENT_BYTES)

    def write(self, key: str, body: bytes, version: str | None) -> str:
        return self._put(self._document(key), body, version)

    def delete_page(self, key: str) -> None:
        """Delete a page no head names any more (its name is its content: no condition needed)."""
        name = self._document(key)
        try:
            self._attempts("delete_object", lambda: self.aws.send("s3", "delete_object", Bucket=self.bucket, Key=name))
        except ClientError as exc:
            if error_code(exc) not in ABSENT:
                raise self._failed(exc, f"cannot delete s3://{self.bucket}/{name}") from None

    def delete(self, key: str, version: str) -> None:
        name = self._document(key)
        try:
            self._attempts("delete_object", lambda: self.aws.send("s3", "delete_object", Bucket=self.bucket, Key=name, IfMatch=version))
        except ClientError as exc:
            if error_code(exc) in ABSENT:
                return
            if error_code(exc) in PRECONDITION_FAILED:
                raise ConflictError(f"s3://{self.bucket}/{name}: changed by another process") from None
            raise self._failed(exc, f"cannot delete s3://{self.bucket}/{name}") from None

    def keys(self, kind: str) -> list[str]:
        prefix = f"{self.prefix}/{kind}/" if self.prefix else f"{kind}/"
        return sorted(k[len(prefix) : -len(SUFFIX)] for k in self._list(prefix) if k.endswith(SUFFIX))

    def clock(self) -> float:
        return self.aws.server_time("s3")

    # -- S3 --------------------------------------------------------------------------------
    def _document(self, key: str) -> str:
        kind, name = split_key(key)
        return self._key(f"{kind}/{name}")

    def _attempts(self, action: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        try:
            return self.aws.attempts("s3", action, fn)
        except (BotoCoreError, OSError) as exc:
            raise translate(exc, f"S3 store {self.location()}") from None

    def _get(self, key: str, limit: int) -> Versioned | None:
        where = f"s3://{self.bucket}/{key}"

        def get() -> dict[str, Any]:
            answer = self.aws.send("s3", "get_object", Bucket=self.bucket, Key=key)
            length = int(answer.get("ContentLength") or 0)
            if length > limit:
                raise UsageError(f"{where}: {length} bytes, more than the {limit} a jobguard document can have")
            return {**answer, "Body": answer["Body"].read()}

        try:
            answer = self._attempts("get_object", get)
        except ClientError as exc:
            if error_code(exc) in ABSENT:
                return None
            raise self._failed(exc, f"cannot read {where}") from None
        return Versioned(answer["Body"], str(answer["ETag"]))

    def _put(self, key: str, body: bytes, version: str | None) -> str:
        where = f"s3://{self.bucket}/{key}"
        condition = {"IfMatch": version} if version else {"IfNoneMatch": "*"}
        request: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "Body": body, "ContentType": "application/json", **condition}
        try:
            answer = self._attempts("put_object", lambda: self.aws.send("s3", "put_object", **request))
        except ClientError as exc:
            if error_code(exc) in PRECONDITION_FAILED:
                landed = self._landed(key, body)
                if landed:
                    return landed
                raise ConflictError(f"{where}: changed by another process since it was read") from None
            raise self._failed(exc, f"cannot write {where}") from None
        return str(answer["ETag"])

    def _put_page(self, key: str, deploy_id: str, page: Page) -> None:
        """Create a page; one already under its name (named by its content) is this page."""
        request: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": key,
            "Body": paged.page_body(deploy_id, page),
            "ContentType": "application/json",
        }
        try:
            self._attempts("put_object", lambda: self.aws.send("s3", "put_object", IfNoneMatch="*", **request))
        except ClientError as exc:
            if error_code(exc) not in PRECONDITION_FAILED:
                raise self._failed(exc, f"cannot write s3://{self.bucket}/{key}") from None
            # Only 412 says an object is there. 409 ConditionalRequestConflict says another write to the key was in
            # flight, which may never land (its writer killed): the head must not name a page until it is seen stored.
            if error_code(exc) not in EXISTS and self._get(key, MAX_MANIFEST_BYTES) is None:
                raise ConflictError(f"s3://{self.bucket}/{key}: another write of this page was in flight; not stored") from None

    def _pages_of(self, keys: list[str]) -> list[bytes | None]:
        found = self.aws.parallel(lambda key: self._get(self._document(key), MAX_MANIFEST_BYTES), keys)
        return [None if f is None else bytes(f.value) for f in found]

    def _landed(self, key: str, body: bytes) -> str | None:
        """After a retried put answers 412, the first attempt may be the one that landed: its ETag if so."""
        current = self._get(key, MAX_MANIFEST_BYTES)
        return current.version if current is not None and current.value == body else None

    def _list(self, prefix: str) -> list[str]:
        def page(token: str | None) -> dict[str, Any]:
            request: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "Delimiter": "/"}
            if token:
                request["ContinuationToken"] = token
            return self.aws.send("s3", "list_objects_v2", **request)

        keys: list[str] = []
        token: str | None = None
        try:
            while True:
                answer = self._attempts("list_objects_v2", partial(page, token))
                keys += [str(o["Key"]) for o in answer.get("Contents", [])]
                token = answer.get("NextContinuationToken")
                if not token:
                    return keys
        except ClientError as exc:
            raise self._failed(exc, f"cannot list s3://{self.bucket}/{prefix}") from None

    def _failed(self, exc: ClientError, what: str) -> StoreError:
        code = error_code(exc)
        if code in ("AccessDenied", "403"):
            return StoreError(f"{what}: AccessDenied", hint=DENIED_HINT)
        if code == "NoSuchBucket":
            return StoreError(
                f"{what}: the bucket {self.bucket} does not exist", hint="create it (the Terraform module does) or fix the store URI"
            )
        error = translate(exc, what)
        return error if isinstance(error, StoreError) else StoreError(str(error))
