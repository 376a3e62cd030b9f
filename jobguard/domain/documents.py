"""Reading JSON that anyone with write access to a store may have written: every failure is a
one-line ManifestError naming the document (its shape is then checked against the schema)."""

from __future__ import annotations

import json
from typing import Any

from ..errors import ManifestError


def parse_json(body: bytes | str, where: str) -> Any:
    """The JSON value of `body`; ManifestError if it is not UTF-8 JSON (NaN and Infinity are not JSON)."""
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        return json.loads(text, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise ManifestError(f"{where}: damaged document, not UTF-8 text") from None
    except RecursionError:
        raise ManifestError(f"{where}: damaged document, nested too deep") from None
    except ValueError as exc:
        raise ManifestError(f"{where}: damaged document, not valid JSON ({exc})") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
