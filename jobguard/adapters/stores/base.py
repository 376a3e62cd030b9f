"""What every manifest store offers. Commands see only `Store`.

Two kinds of things live in a store:
- manifests, one per deploy id: `load` / `save`, conditional on the version read;
- small documents under a key `KIND/NAME` (deploy leases `leases/ACCOUNT.REGION.QUEUE`, the index of open
  deploys `open/DEPLOY_ID`): `read` / `write` / `delete`, each conditional on a version.
No write ever silently replaces another: a write whose version no longer matches raises
ConflictError. `clock()` is the store's own time, on which other machines' stamps are judged.
"""

from __future__ import annotations

import re
from collections.abc import Collection
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


class Store(Protocol):
    """A manifest store: manifests by deploy id, small documents by key, and a clock."""

    def location(self) -> str:
        """The store as a URI (file://, s3:// or dynamodb://)."""

    def uri(self, deploy_id: str) -> str:
        """Where the manifest of `deploy_id` lives, as a URI."""

    def load(self, deploy_id: str) -> Versioned | None:
        """The manifest document of `deploy_id` (parsed JSON, not yet checked), or None."""

    def save(self, deploy_id: str, document: dict[str, Any], version: str | None, changed: Collection[str] | None) -> str:
        """Write a manifest document if its stored version is still `version` (None: it must not exist yet).

        `changed` names the job ids whose records changed since `version` (None: all of them);
        stores that keep records apart write only those. Returns the new version.
        """

    def deploy_ids(self) -> list[str]:
        """Every deploy id with a manifest in the store (costs a listing of the whole store)."""

    def read(self, key: str) -> Versioned | None:
        """A small document (bytes), or None."""

    def write(self, key: str, body: bytes, version: str | None) -> str:
        """Create (`version` None) or replace a small document; ConflictError if it changed. The new version."""

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
