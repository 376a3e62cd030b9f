"""A consumer of jobguard's per-job events: an application's job table follows its jobs to their replacements.

An application that submits AWS Batch jobs and keeps their ids in its own database sees the
original FAILED after a deploy and never learns of the replacement unless it listens. This AWS
Lambda handler is the target of an EventBridge rule with the event pattern in rule.json:

    aws events put-rule --name jobguard-jobs --event-bus-name BUS --event-pattern file://rule.json
    aws events put-targets --rule jobguard-jobs --event-bus-name BUS --targets Id=1,Arn=FUNCTION_ARN

It takes one EventBridge event, or an SQS batch of them (a queue between the rule and the
function). The event's `detail` is described by jobguard/domain/schemas/event.schema.json.
EventBridge delivers at least once and in no set order: every change here is safe to apply twice
and in any order (a row already moved to its replacement is not touched by the original's events).

The table, in SQLite so the example runs anywhere (set JOB_TABLE to the database file):

    CREATE TABLE batch_jobs (job_id TEXT PRIMARY KEY, status TEXT NOT NULL, note TEXT, lineage_id TEXT)
"""

from __future__ import annotations

import json
import os
import sqlite3
from typing import Any


def handler(event: dict[str, Any], context: Any = None) -> dict[str, int]:
    """Lambda entry point: apply each jobguard event to the job table."""
    events = [json.loads(record["body"]) for record in event["Records"]] if "Records" in event else [event]
    with sqlite3.connect(os.environ.get("JOB_TABLE", "jobs.sqlite3")) as db:
        changed = sum(apply(db, e["detail"]) for e in events if e.get("source") == "jobguard")
    return {"events": len(events), "rows_changed": changed}


def apply(db: sqlite3.Connection, detail: dict[str, Any]) -> int:
    """Apply one event to the table; the number of rows changed."""
    if detail.get("version") != 1:
        return 0  # a format this consumer does not know: leave the row to a newer consumer
    original, outcome, deploy = detail["original"]["job_id"], detail["outcome"], detail["deploy_id"]
    if outcome == "resubmitted":
        replacement = detail["replacement"]
        note = f"resubmitted by deploy {deploy} as {replacement['job_id']} on {replacement['job_definition']} (was {original})"
        return _update(db, original, replacement["job_id"], "SUBMITTED", note, detail["lineage_id"])
    if outcome == "terminated":
        return _update(db, original, original, "INTERRUPTED", f"stopped for deploy {deploy}; its replacement follows", None)
    if outcome == "skipped" or (outcome == "failed" and detail["stage"] == "restore"):
        # A restore failure is retried by the next restore; a skipped job will not come back.
        status = "FAILED" if outcome == "skipped" else "INTERRUPTED"
        return _update(db, original, original, status, f"deploy {deploy}: {detail['reason']}", None)
    return 0  # kept, finished, or a drain failure (the job is left running): Batch's own status tells


def _update(db: sqlite3.Connection, job_id: str, new_id: str, status: str, note: str, lineage_id: str | None) -> int:
    cursor = db.execute(
        "UPDATE batch_jobs SET job_id = ?, status = ?, note = ?, lineage_id = COALESCE(?, lineage_id) WHERE job_id = ?",
        (new_id, status, note, lineage_id, job_id),
    )
    return cursor.rowcount
