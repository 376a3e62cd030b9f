"""Manifest stores: a local folder, an S3 prefix or a DynamoDB table, behind one `Store` protocol."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from ...errors import UsageError
from .base import Page, Store, Versioned, check_deploy_id

if TYPE_CHECKING:
    from ..aws import Aws

__all__ = ["Page", "Store", "Versioned", "check_deploy_id", "check_store_uri", "open_store"]

BUCKET = re.compile(r"(?!xn--)(?!sthree-)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](?<!-s3alias)(?<!--ol-s3)")
TABLE = re.compile(r"[A-Za-z0-9_.-]{3,255}")
MAX_PATH = 1024


def check_store_uri(uri: str) -> str:
    """The store URI, checked without touching AWS; a bad one is a one-line UsageError."""
    parsed = urlparse(uri)
    if len(uri) > MAX_PATH:
        raise UsageError(f"store {uri[:40]!r}…: longer than {MAX_PATH} characters")
    if not uri.isprintable():
        raise UsageError(f"store {uri!r}: contains control characters")
    if parsed.scheme == "file":
        if not (parsed.netloc + parsed.path).strip("/"):
            raise UsageError(f"store {uri!r}: name a folder, as in file://.jobguard or file:///var/lib/jobguard")
        return uri
    if parsed.scheme == "s3":
        if not BUCKET.fullmatch(parsed.netloc) or ".." in parsed.netloc:
            raise UsageError(f"store {uri!r}: {parsed.netloc!r} is not a valid S3 bucket name")
        if parsed.query or parsed.fragment or "//" in parsed.path:
            raise UsageError(f"store {uri!r}: an S3 store is s3://BUCKET/PREFIX")
        return uri
    if parsed.scheme == "dynamodb":
        if not TABLE.fullmatch(parsed.netloc) or parsed.path.strip("/") or parsed.query:
            raise UsageError(f"store {uri!r}: a DynamoDB store is a table, as in dynamodb://TABLE")
        return uri
    scheme = f"{parsed.scheme}://" if parsed.scheme else "(none)"
    raise UsageError(f"store {uri!r}: unknown scheme {scheme}; use file://PATH, s3://BUCKET/PREFIX or dynamodb://TABLE")


def open_store(uri: str, aws: Aws | None, lock_timeout: float = 300.0) -> Store:
    """The store a (checked) URI names. `aws` may be None only for a file store, which waits at most
    `lock_timeout` for its folder lock. Only the module of the store named is imported."""
    parsed = urlparse(check_store_uri(uri))
    if parsed.scheme == "file":
        from .file import FileStore

        return FileStore(Path(parsed.netloc + parsed.path), lock_timeout)
    if aws is None:
        raise UsageError(f"store {uri!r} needs AWS")
    if parsed.scheme == "s3":
        from .s3 import S3Store

        return S3Store(aws, parsed.netloc, parsed.path)
    from .dynamodb import DynamoDBStore

    return DynamoDBStore(aws, parsed.netloc)
