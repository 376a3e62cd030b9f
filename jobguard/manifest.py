"""The manifest: one JSON document per deploy recording every drained job and its fate.

Records are frozen; a command changes a job by replacing its record. Parsing is strict: a
damaged document is rejected with the field that is wrong, and is never overwritten.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from .errors import ManifestError

SCHEMA_VERSION = 1
ACTIVE_STATUSES = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING")

RECORDED = "recorded"  # in the store, not yet terminated
TERMINATED = "terminated"  # TerminateJob accepted: waits for restore
SUBMITTING = "submitting"  # SubmitJob may have been sent: look for the replacement first
RESUBMITTED = "resubmitted"
FAILED = "failed"  # see `stage`: a drain failure leaves the job running, a restore failure is retried
SKIPPED = "skipped"  # finished on its own, or kept out of restore by its dependency or policy
OUTCOMES = (RECORDED, TERMINATED, SUBMITTING, RESUBMITTED, FAILED, SKIPPED)
DRAIN, RESTORE = "drain", "restore"


def now() -> str:
    """The current UTC time, ISO 8601 to the millisecond."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class JobRecord:
    """One drained job: what it was, the submission to replay, and what became of it."""

    job_id: str
    job_arn: str
    job_name: str
    queue: str
    job_definition: str
    status_at_drain: str
    submission: dict[str, Any]
    outcome: str
    stage: str
    times: dict[str, str]
    created_at: int | None = None
    started_at: int | None = None
    attempts: int = 0
    replacement_id: str | None = None
    replacement_job_definition: str | None = None
    error: str | None = None
    job_type: str = "container"  # container, multinode, ecs or eks: where lineage variables can go
    lineage_id: str | None = None  # the first job of the line this one was resubmitted from, if any
    resubmits: int = 0  # how many deploys already resubmitted this line

    @property
    def lineage(self) -> str:
        """The lineage id: the first job's id, kept by every replacement."""
        return self.lineage_id or self.job_id

    def moved_to(self, outcome: str, stage: str, **changes: Any) -> JobRecord:
        """This record with a new outcome, stamped now; `changes` sets other fields."""
        return replace(self, outcome=outcome, stage=stage, times={**self.times, outcome: now()}, **changes)

    @property
    def restorable(self) -> bool:
        """True while restore still owes this job a replacement."""
        return self.outcome in (RECORDED, TERMINATED, SUBMITTING) or (self.outcome == FAILED and self.stage == RESTORE)


@dataclass
class Manifest:
    """A deploy's manifest. `jobs` keeps insertion order, keyed by original job id."""

    deploy_id: str
    account: str
    region: str
    created_at: str
    updated_at: str
    origin: dict[str, str] = field(default_factory=dict)
    jobs: dict[str, JobRecord] = field(default_factory=dict)
    frozen_queues: dict[str, str] = field(default_factory=dict)  # queue -> state to put back

    def put(self, records: Iterable[JobRecord]) -> None:
        """Add or replace records."""
        for record in records:
            self.jobs[record.job_id] = record

    def __iter__(self) -> Iterator[JobRecord]:
        return iter(self.jobs.values())

    def counts(self) -> dict[str, int]:
        """Jobs per outcome, every outcome present."""
        counts = dict.fromkeys(OUTCOMES, 0)
        for record in self:
            counts[record.outcome] += 1
        return counts

    @property
    def has_work_left(self) -> bool:
        """True while some job still waits for a replacement, or a frozen queue for its state."""
        return bool(self.frozen_queues) or any(r.restorable for r in self)

    def to_json(self) -> str:
        """The document as stored: one line per job, built a record at a time (manifests get big)."""
        header = json.dumps(self.header(), sort_keys=True)[:-1]
        jobs = ",\n".join(json.dumps(asdict(r), sort_keys=True) for r in self)
        return f'{header}, "jobs": [\n{jobs}\n]}}\n'

    def header(self) -> dict[str, Any]:
        """Every field but the jobs."""
        return {
            "schema_version": SCHEMA_VERSION,
            "deploy_id": self.deploy_id,
            "account": self.account,
            "region": self.region,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "origin": self.origin,
            "frozen_queues": self.frozen_queues,
        }

    @classmethod
    def from_json(cls, text: str | bytes, where: str) -> Manifest:
        """Parse and check a stored document; `where` names it in errors."""
        try:
            document = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ManifestError(f"{where}: damaged manifest, not valid JSON ({exc})") from None
        return cls.from_document(document, where)

    @classmethod
    def from_document(cls, document: Any, where: str) -> Manifest:
        """Check a parsed document; `where` names it in errors."""
        if not isinstance(document, dict):
            raise ManifestError(f"{where}: damaged manifest, expected a JSON object")
        version = document.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ManifestError(
                f"{where}: unknown manifest schema version {version!r} (this jobguard reads {SCHEMA_VERSION})",
                hint="upgrade jobguard to the version that wrote this manifest",
            )
        header = {k: _field(document, k, str, where) for k in ("deploy_id", "account", "region", "created_at", "updated_at")}
        origin = _field(document, "origin", dict, where)
        frozen = document.get("frozen_queues", {})
        if not isinstance(frozen, dict) or not all(isinstance(v, str) for v in frozen.values()):
            raise ManifestError(f"{where}: damaged manifest, field 'frozen_queues' is not a mapping of queue to state")
        jobs = [_record(job, f"{where}: jobs[{i}]") for i, job in enumerate(_field(document, "jobs", list, where))]
        return cls(**header, origin=origin, jobs={r.job_id: r for r in jobs}, frozen_queues=frozen)


_RECORD_TYPES: dict[str, tuple[type, ...]] = {
    "job_id": (str,),
    "job_arn": (str,),
    "job_name": (str,),
    "queue": (str,),
    "job_definition": (str,),
    "status_at_drain": (str,),
    "submission": (dict,),
    "outcome": (str,),
    "stage": (str,),
    "times": (dict,),
    "created_at": (int, type(None)),
    "started_at": (int, type(None)),
    "attempts": (int,),
    "replacement_id": (str, type(None)),
    "replacement_job_definition": (str, type(None)),
    "error": (str, type(None)),
    "job_type": (str,),
    "lineage_id": (str, type(None)),
    "resubmits": (int,),
}
_OPTIONAL = {
    "created_at",
    "started_at",
    "attempts",
    "replacement_id",
    "replacement_job_definition",
    "error",
    "job_type",
    "lineage_id",
    "resubmits",
}


def _record(job: Any, where: str) -> JobRecord:
    if not isinstance(job, dict):
        raise ManifestError(f"{where}: damaged manifest, expected an object")
    unknown = set(job) - set(_RECORD_TYPES)
    if unknown:
        raise ManifestError(f"{where}: damaged manifest, unknown field {sorted(unknown)[0]!r}")
    values = {}
    for name, types in _RECORD_TYPES.items():
        if name not in job:
            if name in _OPTIONAL:
                continue
            raise ManifestError(f"{where}: damaged manifest, missing field {name!r}")
        if not isinstance(job[name], types) or isinstance(job[name], bool):
            raise ManifestError(f"{where}.{name}: damaged manifest, wrong type {type(job[name]).__name__}")
        values[name] = job[name]
    if values["outcome"] not in OUTCOMES or values["stage"] not in (DRAIN, RESTORE):
        raise ManifestError(f"{where}: damaged manifest, unknown outcome {values['outcome']!r} or stage {values['stage']!r}")
    return JobRecord(**values)


def _field(document: dict[str, Any], name: str, kind: type, where: str) -> Any:
    if not isinstance(document.get(name), kind):
        raise ManifestError(f"{where}: damaged manifest, field {name!r} is missing or not a {kind.__name__}")
    return document[name]
