"""Per-job events, for the application that submitted the job and still holds its old id.

For every job terminated, resubmitted, skipped, kept, finished or failed, one event (schema:
jobguard/domain/schemas/event.schema.json) is published to EventBridge when a bus is configured
and written as a JSON line when a file is configured. Delivery failures are warnings: events
never fail a deploy.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..domain.manifest import FAILED, FINISHED, KEPT, RESUBMITTED, SKIPPED, TERMINATED, JobRecord, Manifest, now
from .report import Reporter

EVENT_VERSION = 1
SOURCE = "jobguard"
# Outcomes that are news to the job's owner; recorded/terminating/submitting are steps on the way.
REPORTED = (TERMINATED, KEPT, FINISHED, RESUBMITTED, SKIPPED, FAILED)
DOUBLE_CANCELLED = "double cancelled"  # a second replacement of one original, stopped (commands/doubles.py)


def event(manifest: Manifest, record: JobRecord) -> dict[str, Any]:
    """The event of a record's current outcome."""
    return {
        "version": EVENT_VERSION,
        "time": now(),
        "deploy_id": manifest.deploy_id,
        "account": manifest.account,
        "region": manifest.region,
        "run_url": manifest.origin.get("run_url"),
        "outcome": record.outcome,
        "stage": record.stage,
        "reason": record.error or record.note or record.reason,
        "original": {
            "job_id": record.job_id,
            "job_arn": record.job_arn,
            "job_name": record.job_name,
            "queue": record.queue,
            "job_definition": record.job_definition,
        },
        "replacement": (
            {"job_id": record.replacement_id, "job_definition": record.replacement_job_definition} if record.replacement_id else None
        ),
        "lineage_id": record.lineage,
        "resubmits": record.resubmits,
        "engine": record.engine,
        "engine_role": record.engine_role,
        "kind": "late" if record.late else "drained",
    }


@dataclass
class Events:
    """Collects a command's events and delivers them when it ends."""

    report: Reporter
    bus: str | None = None
    file: str | None = None
    publish: Callable[[list[dict[str, Any]]], list[tuple[dict[str, Any], str]]] | None = None
    pending: list[dict[str, Any]] = field(default_factory=list)
    published: int = 0
    written: int = 0

    @property
    def wanted(self) -> bool:
        """True when events go anywhere."""
        return bool(self.bus or self.file)

    def add(self, manifest: Manifest, records: list[JobRecord]) -> None:
        """Note the news of these records (those whose outcome is news)."""
        if self.wanted:
            self.pending += [event(manifest, r) for r in records if r.outcome in REPORTED]

    def double(self, manifest: Manifest, record: JobRecord, job_id: str, status: str | None) -> None:
        """Note that `job_id`, a second replacement of the record's original, was stopped ("double cancelled")."""
        if self.wanted:
            self.pending.append({**event(manifest, record), "outcome": DOUBLE_CANCELLED, "double": {"job_id": job_id, "status": status}})

    def deliver(self) -> None:
        """Publish and write what was collected; report, never raise, on failure."""
        events, self.pending = self.pending, []
        if not events:
            return
        if self.file:
            self._write(events)
        if self.bus and self.publish is not None:
            entries = [
                {
                    "Source": SOURCE,
                    "DetailType": f"jobguard job {e['outcome']}",
                    "Detail": json.dumps(e, sort_keys=True),
                    "EventBusName": self.bus,
                    "Resources": [e["original"]["job_arn"]],
                }
                for e in events
            ]
            failed = self.publish(entries)
            self.published += len(entries) - len(failed)
            for entry, why in failed[:20]:
                detail = json.loads(entry["Detail"])
                self.report.warning(f"event for job {detail['original']['job_id']} ({detail['outcome']}) not published: {why}")
            if len(failed) > 20:
                self.report.warning(f"and {len(failed) - 20} more events not published")

    def _write(self, events: list[dict[str, Any]]) -> None:
        assert self.file is not None
        try:
            fd = os.open(self.file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o644)
            with os.fdopen(fd, "a", encoding="utf-8") as stream:
                stream.write("".join(json.dumps(e, sort_keys=True) + "\n" for e in events))
            self.written += len(events)
        except OSError as exc:
            self.report.warning(f"could not write {len(events)} events to {self.file} ({exc.strerror or exc})")
