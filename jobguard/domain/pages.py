"""What a manifest's signature covers when its records are kept in pages.

A manifest's records, in the order they were first saved, are split into pages of `size` records;
each page has a digest (SHA-256 of its records' canonical JSON) and the signature covers the
header, the page size and every page's digest in order. A save then rehashes and rewrites only
the pages it changed (O(page), not O(manifest)), while a page swapped, dropped, replayed from an
older version or copied from another deploy changes what the signature covers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any

PAGED = "HMAC_SHA_256_PAGES"  # HMAC-SHA-256 of `manifest_digest` (header, page size, page digests)
WHOLE = "HMAC_SHA_256"  # HMAC-SHA-256 of `Manifest.digest` (the whole document): manifests written before pages
ALGORITHMS = (PAGED, WHOLE)


def canonical(value: Any) -> bytes:
    """The one JSON form that is hashed: keys sorted, no spaces, ASCII."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def page_digest(records: Iterable[dict[str, Any]]) -> str:
    """The SHA-256 (hex) of one page: its records' canonical JSON, in page order."""
    digest = hashlib.sha256(b"[")
    for index, record in enumerate(records):
        digest.update(b"," if index else b"")
        digest.update(canonical(record))
    digest.update(b"]")
    return digest.hexdigest()


def manifest_digest(header: dict[str, Any], size: int, pages: Sequence[str]) -> bytes:
    """What a paged signature covers: the header (no records, no signature), the page size, every page's digest."""
    return hashlib.sha256(canonical({"header": header, "page_records": size, "pages": list(pages)})).digest()
