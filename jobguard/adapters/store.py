"""Manifest stores: where manifests live. Commands see only `ManifestStore`.

`file://PATH` is a local folder, `s3://BUCKET/PREFIX` an S3 prefix, `dynamodb://TABLE` a table
(see dynamodb_store). Every write is atomic (no
half-written manifest is ever visible) and S3 writes are conditional, so two writers never
silently overwrite each other.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from botocore.exceptions import ClientError

from ..errors import ConflictError, StoreError, UsageError
from ..manifest import Manifest
from ..retry import RetryPolicy, error_code
from .locks import LockRecord

SUFFIX = ".json"
# What S3 answers when an If-Match / If-None-Match condition does not hold.
PRECONDITION_FAILED = ("PreconditionFailed", "ConditionalRequestConflict", "412")
DEPLOY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class ManifestStore(Protocol):
    """Loads and saves manifests by deploy id."""

    def uri(self, deploy_id: str) -> str:
        """Where the manifest of `deploy_id` lives, as a URI."""

    def load(self, deploy_id: str) -> Manifest | None:
        """The manifest of `deploy_id`, or None when there is none."""

    def save(self, manifest: Manifest) -> None:
        """Write the manifest atomically."""

    def deploy_ids(self) -> list[str]:
        """Every deploy id with a manifest in the store."""

    def try_lock(self, name: str, record: LockRecord) -> LockRecord | None:
        """Take (or renew) lock `name` for `record` unless another holder has an unexpired one.

        None when taken; else the current holder.
        """

    def unlock(self, name: str, record: LockRecord) -> None:
        """Release lock `name` if `record` still holds it."""


def check_deploy_id(deploy_id: str) -> str:
    """A deploy id becomes a file name and an S3 key: keep it to a safe alphabet."""
    if not DEPLOY_ID.match(deploy_id):
        raise UsageError(f"deploy id {deploy_id!r}: use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return deploy_id


def open_store(uri: str, session: Any, retry: RetryPolicy) -> ManifestStore:
    """The store a URI names; an unknown scheme is a usage error."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return FileStore(Path(parsed.netloc + parsed.path))
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise UsageError(f"store {uri!r}: an S3 store needs a bucket, as in s3://BUCKET/PREFIX")
        return S3Store(session.client("s3"), parsed.netloc, parsed.path.strip("/"), retry)
    if parsed.scheme == "dynamodb":
        if not parsed.netloc or parsed.path.strip("/"):
            raise UsageError(f"store {uri!r}: a DynamoDB store is a table, as in dynamodb://TABLE")
        from .dynamodb_store import DynamoDBStore

        return DynamoDBStore(session.client("dynamodb"), parsed.netloc, retry)
    raise UsageError(
        f"store {uri!r}: unknown scheme {parsed.scheme + '://' if parsed.scheme else '(none)'}; use file://PATH, s3://BUCKET/PREFIX or dynamodb://TABLE"
    )


class FileStore:
    """Manifests as files in a local folder, replaced atomically with os.replace."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def uri(self, deploy_id: str) -> str:
        return (self.folder / f"{deploy_id}{SUFFIX}").absolute().as_uri()

    def load(self, deploy_id: str) -> Manifest | None:
        path = self.folder / f"{deploy_id}{SUFFIX}"
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"{path}: cannot read manifest ({exc.strerror})") from None
        return Manifest.from_json(text, str(path))

    def save(self, manifest: Manifest) -> None:
        path = self.folder / f"{manifest.deploy_id}{SUFFIX}"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._write(path, manifest.to_json())
        except OSError as exc:
            raise StoreError(f"{path}: cannot write manifest ({exc.strerror})") from None

    def deploy_ids(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted(p.name[: -len(SUFFIX)] for p in self.folder.glob(f"*{SUFFIX}") if not p.name.startswith("."))

    def try_lock(self, name: str, record: LockRecord) -> LockRecord | None:
        path = self.folder / "locks" / f"{name}.lock"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "x", encoding="utf-8") as stream:
                stream.write(record.to_json())
            return None
        except FileExistsError:
            current = LockRecord.from_json(path.read_bytes())
            if not (current.expired or current.holder_id == record.holder_id):
                return current
            self._write(path, record.to_json())
            return None
        except OSError as exc:
            raise StoreError(f"{path}: cannot take lock ({exc.strerror})") from None

    def unlock(self, name: str, record: LockRecord) -> None:
        path = self.folder / "locks" / f"{name}.lock"
        try:
            if LockRecord.from_json(path.read_bytes()).holder_id == record.holder_id:
                path.unlink()
        except FileNotFoundError:
            pass

    def _write(self, path: Path, text: str) -> None:
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)


class S3Store:
    """Manifests as S3 objects under a prefix; writes are conditional on the ETag we last saw."""

    def __init__(self, client: Any, bucket: str, prefix: str, retry: RetryPolicy) -> None:
        self.client, self.bucket, self.prefix, self.retry = client, bucket, prefix, retry
        self._etags: dict[str, str] = {}

    def _key(self, deploy_id: str) -> str:
        return f"{self.prefix}/{deploy_id}{SUFFIX}" if self.prefix else f"{deploy_id}{SUFFIX}"

    def uri(self, deploy_id: str) -> str:
        return f"s3://{self.bucket}/{self._key(deploy_id)}"

    def load(self, deploy_id: str) -> Manifest | None:
        try:
            answer = self.retry.call(lambda: self.client.get_object(Bucket=self.bucket, Key=self._key(deploy_id)))
            body = answer["Body"].read()
        except ClientError as exc:
            if error_code(exc) in ("NoSuchKey", "404"):
                return None
            raise StoreError(f"{self.uri(deploy_id)}: cannot read manifest ({error_code(exc)})") from None
        except Exception as exc:  # connection errors after retries
            raise StoreError(f"{self.uri(deploy_id)}: cannot read manifest ({error_code(exc)})") from None
        self._etags[deploy_id] = answer["ETag"]
        return Manifest.from_json(body, self.uri(deploy_id))

    def save(self, manifest: Manifest) -> None:
        key, body = self._key(manifest.deploy_id), manifest.to_json().encode()
        condition = {"IfMatch": self._etags[manifest.deploy_id]} if manifest.deploy_id in self._etags else {"IfNoneMatch": "*"}
        try:
            answer = self.retry.call(
                lambda: self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/json", **condition)
            )
        except ClientError as exc:
            if error_code(exc) in PRECONDITION_FAILED and self._wrote(manifest.deploy_id, body):
                return
            if error_code(exc) in PRECONDITION_FAILED:
                raise ConflictError(f"{self.uri(manifest.deploy_id)}: another process changed the manifest") from None
            raise StoreError(f"{self.uri(manifest.deploy_id)}: cannot write manifest ({error_code(exc)})") from None
        except Exception as exc:
            raise StoreError(f"{self.uri(manifest.deploy_id)}: cannot write manifest ({error_code(exc)})") from None
        self._etags[manifest.deploy_id] = answer["ETag"]

    def _wrote(self, deploy_id: str, body: bytes) -> bool:
        """After a retried put answers 412, the first attempt may be the one that landed."""
        try:
            current = self.client.get_object(Bucket=self.bucket, Key=self._key(deploy_id))
        except ClientError:
            return False
        if current["Body"].read() != body:
            return False
        self._etags[deploy_id] = current["ETag"]
        return True

    def try_lock(self, name: str, record: LockRecord) -> LockRecord | None:
        key = self._key(f"locks/{name}")
        body = record.to_json().encode()
        try:
            self.retry.call(lambda: self.client.put_object(Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*"))
            return None
        except ClientError as exc:
            if error_code(exc) not in PRECONDITION_FAILED:
                raise StoreError(f"s3://{self.bucket}/{key}: cannot take lock ({error_code(exc)})") from None
        try:
            answer = self.retry.call(lambda: self.client.get_object(Bucket=self.bucket, Key=key))
            current = LockRecord.from_json(answer["Body"].read())
            if not (current.expired or current.holder_id == record.holder_id):
                return current
            # Take over an expired lock only if nobody changed it since we read it.
            self.retry.call(lambda: self.client.put_object(Bucket=self.bucket, Key=key, Body=body, IfMatch=answer["ETag"]))
            return None
        except ClientError as exc:
            if error_code(exc) in ("NoSuchKey", *PRECONDITION_FAILED):
                return LockRecord(
                    holder_id="", holder="another process (the lock changed hands just now)", acquired_at=0.0, expires_at=float("inf")
                )
            raise StoreError(f"s3://{self.bucket}/{key}: cannot take lock ({error_code(exc)})") from None

    def unlock(self, name: str, record: LockRecord) -> None:
        key = self._key(f"locks/{name}")
        try:
            current = LockRecord.from_json(self.retry.call(lambda: self.client.get_object(Bucket=self.bucket, Key=key))["Body"].read())
            if current.holder_id == record.holder_id:
                self.retry.call(lambda: self.client.delete_object(Bucket=self.bucket, Key=key))
        except ClientError as exc:
            if error_code(exc) != "NoSuchKey":
                raise StoreError(f"s3://{self.bucket}/{key}: cannot release lock ({error_code(exc)})") from None

    def deploy_ids(self) -> list[str]:
        prefix = f"{self.prefix}/" if self.prefix else ""

        def list_keys() -> list[str]:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/")
            return [o["Key"] for page in pages for o in page.get("Contents", [])]

        try:
            keys = self.retry.call(list_keys)
        except ClientError as exc:
            raise StoreError(f"s3://{self.bucket}/{prefix}: cannot list manifests ({error_code(exc)})") from None
        return sorted(k[len(prefix) : -len(SUFFIX)] for k in keys if k.endswith(SUFFIX))
