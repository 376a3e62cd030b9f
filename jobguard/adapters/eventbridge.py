"""Amazon EventBridge: PutEvents in batches of 10, paced and retried like every AWS call.

A batch PutEvents partly refuses reports each refused entry; those that were throttled or hit
an internal error are sent again with the same backoff and bounds as a refused call (the others
are reported at once), and whatever is still refused when the bounds run out is reported, never
raised.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ..errors import JobguardError
from .aws import Aws, chunks, translate
from .retry import is_transient

BATCH = 10  # PutEvents' limit
RETRYABLE = ("ThrottlingException", "InternalFailure", "InternalException")
Entry = dict[str, Any]


def publish(aws: Aws, entries: list[Entry]) -> list[tuple[Entry, str]]:
    """Send every entry; the entries that could not be delivered, each with why."""
    return [failure for batch in chunks(entries, BATCH) for failure in _publish_batch(aws, batch)]


def _publish_batch(aws: Aws, batch: list[Entry]) -> list[tuple[Entry, str]]:
    failed: list[tuple[Entry, str]] = []
    pending = batch

    def attempt() -> None:
        nonlocal pending
        answer = aws.send("events", "put_events", True, Entries=pending)
        results = list(zip(pending, answer.get("Entries", []), strict=False))
        failed.extend(
            (e, f"{r['ErrorCode']}: {r.get('ErrorMessage', '')}".rstrip(": "))
            for e, r in results
            if r.get("ErrorCode") and r["ErrorCode"] not in RETRYABLE
        )
        retry = [(e, str(r["ErrorCode"])) for e, r in results if r.get("ErrorCode") in RETRYABLE]
        pending = [e for e, _ in retry]
        if retry:  # as if the call had been refused: the retry policy backs off and sends these again
            code = retry[0][1]
            status = 429 if code == "ThrottlingException" else 500
            error = {"Code": code, "Message": f"{len(retry)} of {len(results)} entries refused"}
            response: Any = {"Error": error, "ResponseMetadata": {"HTTPStatusCode": status}}
            raise ClientError(response, "PutEvents")

    try:
        aws.attempts("events", "PutEvents", attempt, is_transient)
    except (ClientError, BotoCoreError, OSError, JobguardError) as exc:  # credentials too: events never fail a deploy
        reason = str(translate(exc, "publish jobguard events to EventBridge"))
        failed += [(e, reason) for e in pending]
    return failed
