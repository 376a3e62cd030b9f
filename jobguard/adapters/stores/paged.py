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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

from ...domain.documents import parse_json
from ...errors import ConflictError, ManifestError
from .base import Page, Versioned

KIND = "pages"
DIGEST = re.compile(r"[0-9a-f]{64}")
READ_AHEAD = 16  # pages read at once (S3: in parallel)
FOLLOWS = 64  # newer heads one read of the pages goes on with (a save replaced the head it was reading)


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


def load(
    deploy_id: str, where: str, read_head: Callable[[], Versioned | None], read: Callable[[list[str]], list[bytes | None]]
) -> Versioned | None:
    """The head; for a paged head, its records come page by page from `Versioned.pages` (read lazily:
    a manifest of 100 000 records is never held twice, as JSON and as records).

    Reading the pages raises ConflictError when a save replaced the head meanwhile (the caller reads
    again), ManifestError when a page is missing or not what jobguard writes.
    """
    found = read_head()
    if found is None:
        return None
    head = parse_json(found.value, where)
    if not isinstance(head, dict) or KIND not in head:
        return Versioned(head, found.version, whole=True)
    settled = [_paged(head, found.version, where)]  # the head the pages read so far belong to

    def pages() -> Iterator[list[Any]]:
        index = 0
        while index < len(_digests(settled[-1])):
            keys = [page_key(deploy_id, i, d) for i, d in enumerate(_digests(settled[-1]))]
            for index, body in enumerate(read(keys[index : index + READ_AHEAD]), start=index):  # noqa: B020
                if body is None:
                    if len(settled) > FOLLOWS:  # saves faster than the pages can be read: the caller reads again, a bounded number of times
                        raise ConflictError(f"{where}: replaced by other runs {FOLLOWS} times while it was read")
                    settled.append(_followed(settled[-1], read_head(), keys, index, deploy_id, where))
                    break
                yield _records(parse_json(body, f"{where} page {index}"), deploy_id, index, where)
            else:
                index += 1

    return replace(settled[0], pages=pages, settled=lambda: settled[-1])


def page(deploy_id: str, index: int, digest: str, where: str, read: Callable[[list[str]], list[bytes | None]]) -> list[Any] | None:
    """One page read again by its name (its place and digest), or None when it is no longer stored."""
    body = read([page_key(deploy_id, index, digest)])[0]
    return None if body is None else _records(parse_json(body, f"{where} page {index}"), deploy_id, index, where)


def _paged(head: dict[str, Any], version: str, where: str) -> Versioned:
    """A paged head's header, version and page digests, checked."""
    if "jobs" in head:
        raise ManifestError(f"{where}: holds both records and pages: not a manifest jobguard wrote")
    digests = head[KIND]
    if not isinstance(digests, list) or not all(isinstance(d, str) and DIGEST.fullmatch(d) for d in digests):
        raise ManifestError(f"{where}: {KIND}: not a list of page digests (64 hex digits each)")
    return Versioned({k: v for k, v in head.items() if k != KIND}, version, named=tuple(digests))


def _followed(read: Versioned, again: Versioned | None, keys: list[str], index: int, deploy_id: str, where: str) -> Versioned:
    """Page `index` of the head `read` is missing: the head a save put in its place, when every page read so far
    is still one of it (pages are named by their content and never rewritten: the same name is the same records).

    A reader of a manifest that another run keeps saving (a drain's pages, matrix legs) so goes on from where it
    was instead of starting again: only the pages the saves changed are read twice.
    """
    if again is not None and again.version == read.version:
        raise ManifestError(
            f"{where}: page {index} ({keys[index]}) is missing: dropped from the store?",
            hint="restore the page from the store's earlier versions (S3 versioning, backups)",
        )
    head = None if again is None else parse_json(again.value, where)
    if again is None or not isinstance(head, dict) or KIND not in head:
        raise ConflictError(f"{where}: replaced by another run while it was read")
    followed = _paged(head, again.version, where)
    if followed.value.get("page_records") != read.value.get("page_records") or _digests(followed)[:index] != _digests(read)[:index]:
        raise ConflictError(f"{where}: replaced by another run while it was read")
    return followed


def _digests(head: Versioned) -> tuple[str, ...]:
    return head.named or ()


def _records(page: Any, deploy_id: str, index: int, where: str) -> list[Any]:
    if not isinstance(page, dict) or not isinstance(page.get("jobs"), list):
        raise ManifestError(f"{where}: page {index}: not a page of records")
    if page.get("deploy_id") != deploy_id or page.get("page") != index:
        raise ManifestError(
            f"{where}: page {index} says deploy {page.get('deploy_id')!r} page {page.get('page')!r}, "
            f"its name says {deploy_id!r} page {index}: a copy or an edit"
        )
    return list(page["jobs"])
