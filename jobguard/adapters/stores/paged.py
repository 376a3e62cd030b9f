"""The paged layout of a manifest in an object store (a folder, an S3 prefix).

  DEPLOY_ID.json                       the head: header, signature, `page_records`, and `pages`,
                                       the digest of every page in order
  pages/DEPLOY_ID/NNNNNN-DIGEST.json   one page of records, named by its place and its digest

A save writes the changed pages (new names: create-only, never overwritten), then replaces the
head conditionally; a save interrupted in between leaves the previous head and every page it
names intact (the new pages are not yet named by anything). Once the new head is in place, the
pages only the previous head named are deleted. A save writes O(page) bytes per page changed
plus the head, whose `pages` list holds 64 characters per page.

A head that holds `jobs` instead of `pages` is a manifest written before pages: it is read as it
is, and its next save writes it in pages (the head replaced conditionally, as any save).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from ...domain.documents import parse_json
from ...errors import ManifestError
from .base import Page, Versioned

KIND = "pages"
DIGEST = re.compile(r"[0-9a-f]{64}")
READ_ATTEMPTS = 8


class PageGone(Exception):
    """A page the head names is not (or no longer) in the store: a save replaced it meanwhile, or it was dropped."""


def page_key(deploy_id: str, index: int, digest: str) -> str:
    """The small-document key of a page."""
    return f"{KIND}/{deploy_id}/{index:06d}-{digest}"


def page_body(deploy_id: str, page: Page) -> bytes:
    """A page as stored: it names its deploy and place, so a page copied elsewhere says where it came from."""
    return (json.dumps({"deploy_id": deploy_id, "page": page.index, "jobs": list(page.records or ())}, sort_keys=True) + "\n").encode()


def head_body(head: dict[str, Any], pages: Sequence[Page]) -> bytes:
    """The head as stored."""
    return (json.dumps({**head, KIND: [p.digest for p in pages]}, sort_keys=True) + "\n").encode()


def named(deploy_id: str, head: Any) -> list[str]:
    """The page keys a stored head names (none for a whole manifest or a damaged head)."""
    if not isinstance(head, dict) or not isinstance(head.get(KIND), list):
        return []
    return [page_key(deploy_id, i, d) for i, d in enumerate(head[KIND]) if isinstance(d, str) and DIGEST.fullmatch(d)]


def assemble(deploy_id: str, where: str, head: Any, version: str, read: Callable[[list[str]], list[bytes | None]]) -> Versioned:
    """The manifest document a head and its pages make; `read` fetches pages by key (None: absent).

    Raises PageGone when a page is missing (the caller reads the head again: a save may have
    replaced it), ManifestError when the head or a page is not what jobguard writes.
    """
    if not isinstance(head, dict) or KIND not in head:
        return Versioned(head, version, whole=True)
    if "jobs" in head:
        raise ManifestError(f"{where}: holds both records and pages: not a manifest jobguard wrote")
    digests = head[KIND]
    if not isinstance(digests, list) or not all(isinstance(d, str) and DIGEST.fullmatch(d) for d in digests):
        raise ManifestError(f"{where}: {KIND}: not a list of page digests (64 hex digits each)")
    bodies = read([page_key(deploy_id, i, d) for i, d in enumerate(digests)])
    jobs: list[Any] = []
    for index, body in enumerate(bodies):
        if body is None:
            raise PageGone(f"{where}: page {index} ({page_key(deploy_id, index, digests[index])}) is missing: dropped from the store?")
        jobs += _records(parse_json(body, f"{where} page {index}"), deploy_id, index, where)
    document = {k: v for k, v in head.items() if k != KIND}
    document["jobs"] = jobs
    return Versioned(document, version)


def _records(page: Any, deploy_id: str, index: int, where: str) -> list[Any]:
    if not isinstance(page, dict) or not isinstance(page.get("jobs"), list):
        raise ManifestError(f"{where}: page {index}: not a page of records")
    if page.get("deploy_id") != deploy_id or page.get("page") != index:
        raise ManifestError(
            f"{where}: page {index} says deploy {page.get('deploy_id')!r} page {page.get('page')!r}, "
            f"its name says {deploy_id!r} page {index}: a copy or an edit"
        )
    return list(page["jobs"])


def load(
    deploy_id: str, where: str, read_head: Callable[[], Versioned | None], read: Callable[[list[str]], list[bytes | None]]
) -> Versioned | None:
    """Read the head, then its pages; a page gone meanwhile (a save replaced it) means reading the head again."""
    gone = ""
    for _ in range(READ_ATTEMPTS):
        found = read_head()
        if found is None:
            return None
        try:
            return assemble(deploy_id, where, parse_json(found.value, where), found.version, read)
        except PageGone as exc:
            again = read_head()
            if again is not None and again.version == found.version:
                raise ManifestError(str(exc), hint="restore the page from the store's earlier versions (S3 versioning, backups)") from None
            gone = str(exc)
    raise ManifestError(f"{gone} (other writers kept replacing the manifest while it was read; gave up after {READ_ATTEMPTS} tries)")
