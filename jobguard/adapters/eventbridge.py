"""Amazon EventBridge: PutEvents in batches of 10, paced and retried like every AWS call.

A batch PutEvents partly refuses reports each refused entry; those that were throttled or hit
an internal error are sent again (bounded), the others are reported, never raised.
"""

from __future__ import annotations

from typing import Any

from ..errors import JobguardError
from .aws import Aws, chunks

BATCH = 10  # PutEvents' limit
RETRYABLE = ("ThrottlingException", "InternalFailure", "InternalException")


def publish(aws: Aws, entries: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str]]:
    """Send every entry; the entries that could not be delivered, each with why."""
    failed: list[tuple[dict[str, Any], str]] = []
    for batch in chunks(entries, BATCH):
        pending = batch
        for _ in range(max(1, aws.settings.retry.attempts)):
            try:
                answer = aws.call("events", "put_events", "publish jobguard events to EventBridge", paced=True, Entries=pending)
            except JobguardError as exc:
                failed += [(e, str(exc)) for e in pending]
                pending = []
                break
            results = answer.get("Entries", [])
            retry = [e for e, r in zip(pending, results, strict=False) if r.get("ErrorCode") in RETRYABLE]
            failed += [
                (e, f"{r.get('ErrorCode')}: {r.get('ErrorMessage', '')}".rstrip(": "))
                for e, r in zip(pending, results, strict=False)
                if r.get("ErrorCode") and r.get("ErrorCode") not in RETRYABLE
            ]
            pending = retry
            if not pending:
                break
        failed += [(e, "throttled or failed on every attempt") for e in pending]
    return failed
