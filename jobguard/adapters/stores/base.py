"""What every manifest store offers. Commands see only `Store`.

Two kinds of things live in a store:
- manifests, one per deploy id: `load` / `save`, conditional on the version read. A save hands the
  store the manifest's header and its pages of records (`Page`), only the changed ones with their
  records, so that every store writes O(page) bytes per page, however long the manifest;
- small documents under a key `KIND/NAME` (deploy leases `leases/ACCOUNT.REGION.QUEUE`, word of a
  run's last submissions to a queue `submitted/ACCOUNT.REGION.QUEUE`, the index of open deploys
  `open/DEPLOY_ID`): `read` / `write` / `delete`, each conditional on a version.
No write ever silently replaces another: a write whose version no longer matches raises
ConflictError. `clock()` is the store's own time, on which other machines' stamps are judged.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ...errors import UsageError

SUFFIX = ".json"
DEPLOY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# Manifests are read into memory: bigger than this is not one jobguard wrote.
MAX_MANIFEST_BYTES = 256 * 1024 * 1024
MAX_DOCUMENT_BYTES = 64 * 1024


@dataclass(frozen=True)
class Versioned:
    """A stored value and the version to make a conditional write against."""

    value: Any
    version: str
    whole: bool = False  # a manifest read from one whole document (the layout before pages): its next save writes every page
    # A paged manifest: `value` is its head (no `jobs`) and this gives its records page by page, read as they are asked for.
    pages: Callable[[], Iterator[list[Any]]] | None = None
    # The digests the head names its pages by, in order: a page whose records no longer hash to its name (edited, then
    # accepted unsigned) is rewritten under its own name by the next save, never named by a digest no page is stored under.
    # None: the store keeps each record apart, not in pages named by their digests (DynamoDB): a page is what it holds.
    named: tuple[str, ...] | None = None
    # After `pages` is read through: the head (header, version, `named`) those pages belong to. A save during the read
    # moves it on when every page read before it is still named by the new head.
    settled: Callable[[], Versioned] | None = None


@dataclass(frozen=True)
class Page:
    """One page of a manifest's records, as a save hands it to the store.

    `digest` (hex SHA-256 of the records) names the page; `records` is None when the page is
    unchanged since the version the save is conditional on (the store keeps what it has), and
    `changed` names the job ids whose records changed (a store keeping records apart writes only those).
    """

    index: int
    digest: str
    records: tuple[dict[str, Any], ...] | None = None
    changed: frozenset[str] = frozenset()


class Store(Protocol):
    """A manifest store: manifests by deploy id, small documents by key, and a clock."""

    def location(self) -> str:
        """The store as a URI (file://, s3:// or dynamodb://)."""

    def uri(self, deploy_id: str) -> str:
        """Where the manifest of `deploy_id` lives, as a URI."""

    def load(self, deploy_id: str) -> Versioned | None:
        """The manifest document of `deploy_id` (parsed JSON, not yet checked), or None."""

    def version(self, deploy_id: str) -> str | None:
        """The version `load` would give now (None: no manifest), read without reading the records."""

    def page(self, deploy_id: str, index: int, digest: str, ids: Sequence[str]) -> list[Any] | None:
        """The records of page `index` as a save stored it under `digest` (not yet checked against it), or None
        when the store no longer holds that page. `ids`: the job ids the page holds, in order (a store keeping
        records apart reads them by id). Only stores whose `load` hands out pages (`Versioned.pages`) keep
        them: for the others, None."""

    def save(self, deploy_id: str, head: dict[str, Any], pages: Sequence[Page], version: str | None) -> str:
        """Write a manifest if its stored version is still `version` (None: it must not exist yet).

        `head` is the document without its records (`page_records` says how many a page holds);
        `pages` is every page in order. Returns the new version; `load` gives back the head and the
        records of every page, in order (as `jobs`, or page by page through `Versioned.pages`).
        """

    def deploy_ids(self) -> list[str]:
        """Every deploy id with a manifest in the store (costs a listing of the whole store)."""

    def read(self, key: str) -> Versioned | None:
        """A small document (bytes), or None."""

    def write(self, key: str, body: bytes, version: str | None) -> str:
        """Create (`version` None) or replace a small document; ConflictError if it changed. The new version: never
        one the key had with other content, even before a delete, so a delete at a version read long ago takes
        nothing written since (a content hash, or on DynamoDB a count from a random start)."""

    def delete(self, key: str, version: str) -> None:
        """Delete a small document if still at `version`; ConflictError if it changed; gone already is fine."""

    def keys(self, kind: str) -> list[str]:
        """The names of the small documents of a kind (`open`, `leases`)."""

    def clock(self) -> float:
        """The store's time, seconds since the epoch."""


def check_deploy_id(deploy_id: str) -> str:
    """A deploy id becomes a file name and an S3 key: keep it to a safe alphabet."""
    if not DEPLOY_ID.fullmatch(deploy_id):
        raise UsageError(f"deploy id {deploy_id!r}: use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return deploy_id


def split_key(key: str) -> tuple[str, str]:
    """`KIND/NAME` into its parts."""
    kind, _, name = key.partition("/")
    return kind, name
