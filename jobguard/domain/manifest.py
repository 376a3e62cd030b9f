"""The manifest: one JSON document per deploy recording every drained job and its fate.

Records are frozen; a command changes a job by replacing its record, and the manifest remembers
which records changed since it was read (a store that keeps records apart writes only those, and
a write that conflicts with another writer's is merged record by record). Reading is strict: a
document is checked against the shipped JSON Schema before anything acts on it.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from ..errors import ManifestError
from .schema import integral, validate

SCHEMA_VERSION = 2
ACTIVE_STATUSES = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING")

RECORDED = "recorded"  # in the store; TerminateJob not yet sent
TERMINATING = "terminating"  # TerminateJob sent (or about to be): not yet seen to end
TERMINATED = "terminated"  # ended after jobguard stopped it: owed a replacement
KEPT = "kept"  # left running (policy wait): not owed; its dependents keep depending on it
FINISHED = "finished"  # succeeded on its own: nothing to resubmit
SUBMITTING = "submitting"  # SubmitJob may have been sent: look for the replacement before sending again
RESUBMITTED = "resubmitted"
FAILED = "failed"  # see `stage`: a drain failure leaves the job running, a restore failure is retried
SKIPPED = "skipped"  # will not be resubmitted: see `error` (or `note`, for a late job left alone)
WATCHED = "watched"  # submitted during the deploy, never stopped by jobguard: restore judges it (domain/window.py)
OUTCOMES = (RECORDED, TERMINATING, TERMINATED, KEPT, FINISHED, SUBMITTING, RESUBMITTED, FAILED, SKIPPED, WATCHED)
LATE = "submitted during the deploy"  # how every late job's record reason begins (domain/window.py): its kind
OWED = (RECORDED, TERMINATING, TERMINATED, SUBMITTING, WATCHED)
# The deploy window's stamps (ms, Batch's clock: that of createdAt and stoppedAt): drain began, drain finished its passes, restore swept it.
OPENED, DRAINED, SWEPT, DELETED, WATCHED_DELETED = "opened", "drained", "swept", "deleted", "watched_deleted"
DRAIN, RESTORE = "drain", "restore"


def now() -> str:
    """The current UTC time, ISO 8601 to the millisecond (for people: jobguard never compares two machines' stamps).

    Interned: the records a command moves at once (a page of 500) share their stamp's one string.
    """
    return sys.intern(datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"))


_LATER_FIELDS = ("engine", "engine_role")  # record fields newer than whole-document signatures
# Record fields whose values repeat over a manifest's records (its queues, definitions, outcomes, reasons,
# notes): one string each, not one per record. A record is about 1.5 KB of Python objects; there may be 100 000.
_SHARED = (
    "queue",
    "job_definition",
    "status_at_drain",
    "outcome",
    "stage",
    "job_type",
    "reason",
    "replacement_job_definition",
    "error",
    "note",
    "engine",
    "engine_role",
)
_NO_DEPENDENCIES: dict[str, str] = {}  # shared by every record without any: records are never changed in place
_NO_CHILDREN: list[int] = []


@dataclass(frozen=True, slots=True)
class JobRecord:
    """One drained job: what it was, the submission to replay, and what became of it.

    Never changed in place (`moved_to`, `dataclasses.replace`): records share their repeated values and
    empty collections (`__post_init__`), and drain, restore and the store's cache share records.
    """

    job_id: str
    job_arn: str
    job_name: str
    queue: str
    job_definition: str  # name:revision the original ran on
    status_at_drain: str  # for a late job: its status when jobguard first saw it
    submission: dict[str, Any]
    outcome: str
    stage: str
    times: dict[str, str]
    job_type: str = "container"  # container, multinode, ecs or eks
    created_at: int | None = None  # Batch createdAt, ms
    started_at: int | None = None
    attempts: int = 0
    reason: str | None = None  # why drain took it: the risk to its queue, or the job it depends on
    dependencies: dict[str, str] = field(default_factory=lambda: _NO_DEPENDENCIES)  # dependency id -> its status when drained
    array_succeeded: list[int] = field(default_factory=lambda: _NO_CHILDREN)  # indexes of an array's children that had succeeded
    replacement_id: str | None = None
    replacement_job_definition: str | None = None
    error: str | None = None
    note: str | None = None  # what a person should know that is not an error (values taken from the new revision)
    lineage_id: str | None = None  # the first job of the line, when this job was itself a replacement
    resubmits: int = 0  # how many deploys already resubmitted this line
    engine: str | None = None  # the workflow engine that submitted and tracks the job (domain/engines.py)
    engine_role: str | None = None  # task or head

    def __post_init__(self) -> None:
        for name in _SHARED:
            value = getattr(self, name)
            if type(value) is str:
                object.__setattr__(self, name, sys.intern(value))
        if not self.dependencies and self.dependencies is not _NO_DEPENDENCIES:
            object.__setattr__(self, "dependencies", _NO_DEPENDENCIES)
        if not self.array_succeeded and self.array_succeeded is not _NO_CHILDREN:
            object.__setattr__(self, "array_succeeded", _NO_CHILDREN)

    @property
    def lineage(self) -> str:
        """The lineage id: the first job's id, kept by every replacement."""
        return self.lineage_id or self.job_id

    def moved_to(self, outcome: str, stage: str, **changes: Any) -> JobRecord:
        """This record with a new outcome, stamped now; `changes` sets other fields."""
        return replace(self, outcome=outcome, stage=stage, times={**self.times, outcome: now()}, **changes)

    @property
    def engine_key(self) -> str | None:
        """ENGINE:ROLE (nextflow:task) for a workflow engine's job, else None."""
        return f"{self.engine}:{self.engine_role}" if self.engine else None

    @property
    def owed(self) -> bool:
        """True while restore still owes this job a replacement (or must look at it again)."""
        return self.outcome in (RECORDED, TERMINATING, TERMINATED, SUBMITTING, WATCHED) or (
            self.outcome == FAILED and self.stage == RESTORE
        )

    @property
    def late(self) -> bool:
        """True for a job submitted during the deploy (recorded by restore's sweep or `jobguard run`), not drained."""
        return (self.reason or "").startswith(LATE)

    @property
    def stop_asked(self) -> bool:
        """True once jobguard sent (or may have sent) TerminateJob for it."""
        return TERMINATING in self.times or self.outcome == TERMINATED

    @property
    def dependency_ids(self) -> list[str]:
        """The ids this job's submission depends on (`ARRAY:INDEX` for one child of an array)."""
        return [str(d["jobId"]) for d in self.submission.get("dependsOn", []) if "jobId" in d]

    @property
    def dependency_jobs(self) -> list[str]:
        """The jobs this job's submission depends on: an array, for a dependency on one of its children."""
        return [job_id.split(":", 1)[0] for job_id in self.dependency_ids]


@dataclass
class Manifest:
    """A deploy's manifest. `jobs` keeps insertion order, keyed by original job id."""

    deploy_id: str
    account: str
    region: str
    created_at: str
    updated_at: str
    origin: dict[str, str] = field(default_factory=dict)
    queues: list[str] = field(default_factory=list)  # queues this deploy drained
    frozen_queues: dict[str, str] = field(default_factory=dict)  # queue -> state to put back
    queue_successors: dict[str, str] = field(default_factory=dict)  # queue the plan renames -> its new name
    jobs: dict[str, JobRecord] = field(default_factory=dict)
    window: dict[str, Any] = field(default_factory=dict)  # OPENED/DRAINED/SWEPT stamps, and "found": late jobs by kind
    signature: dict[str, str] | None = None
    changed: dict[str, None] = field(default_factory=dict, repr=False, compare=False)  # job ids changed since read, in order
    released_queues: set[str] = field(default_factory=set, repr=False, compare=False)  # frozen queues put back since read
    window_changed: bool = field(default=False, repr=False, compare=False)  # `window` changed since read

    def put(self, records: Iterable[JobRecord]) -> None:
        """Add or replace records."""
        for record in records:
            self.jobs[record.job_id] = record
            self.changed[record.job_id] = None

    def stamp_window(self, key: str, value: Any) -> None:
        """Set one entry of the deploy window (OPENED, DRAINED, SWEPT, "found")."""
        self.window[key] = value
        self.window_changed = True

    def note_deleted_queues(self, names: Iterable[str]) -> None:
        """Queues seen deleted during the deploy: restore judges their late jobs as killed by the deletion
        even when a queue of the same name exists again (domain/window.py)."""
        deleted = sorted(set(self.window.get(DELETED, [])) | set(names))
        if deleted != self.window.get(DELETED):
            self.stamp_window(DELETED, deleted)

    def note_watched_deleted(self, names: Iterable[str]) -> None:
        """Queues `jobguard run`'s watcher saw deleted after it had listed them: every job submitted to them
        until then is recorded, so restore's sweep neither misses nor warns about them (also `deleted`)."""
        names = list(names)
        self.note_deleted_queues(names)
        watched = sorted(set(self.window.get(WATCHED_DELETED, [])) | set(names))
        if watched != self.window.get(WATCHED_DELETED):
            self.stamp_window(WATCHED_DELETED, watched)

    def open_window(self, ms: int) -> None:
        """Open the deploy window at `ms`, unless an unswept one is open already (a continued drain keeps
        the first stamp); a window a restore already swept is replaced (a re-run of the same deploy)."""
        if not self.window_open:
            self.window = {OPENED: ms}
            self.window_changed = True

    def add_queue(self, name: str) -> None:
        """Note a queue this deploy drains."""
        if name not in self.queues:
            self.queues.append(name)

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
        """True while some job is owed (or not yet stopped), or a frozen queue waits for its state."""
        return bool(self.frozen_queues) or self.window_open or any(r.owed for r in self)

    @property
    def window_open(self) -> bool:
        """True while the deploy window this deploy's drain opened has not been swept by a restore."""
        return OPENED in self.window and SWEPT not in self.window

    def record_queues(self) -> set[str]:
        """Every queue a job of this manifest is on, and every queue it froze."""
        return {r.queue for r in self} | set(self.frozen_queues) | set(self.queues)

    # -- the stored form -------------------------------------------------------------------
    def to_document(self) -> dict[str, Any]:
        """The document as stored (signature included when signed)."""
        document = self.unsigned_document()
        if self.signature is not None:
            document["signature"] = dict(self.signature)
        return document

    def unsigned_document(self) -> dict[str, Any]:
        """The document without its signature."""
        return {
            "schema_version": SCHEMA_VERSION,
            "deploy_id": self.deploy_id,
            "account": self.account,
            "region": self.region,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "origin": dict(self.origin),
            "queues": list(self.queues),
            "frozen_queues": dict(self.frozen_queues),
            "queue_successors": dict(self.queue_successors),
            "jobs": [asdict(r) for r in self],
            **({"window": json.loads(json.dumps(self.window))} if self.window else {}),
        }

    def digest(self, *, without_later_fields: bool = False) -> bytes:
        """SHA-256 of the canonical document (jobs by id, keys sorted): what a whole (not paged) signature covers.

        Only manifests written before pages are signed so. Those written before the `engine` fields
        existed have no such keys: `without_later_fields` leaves them out when empty (an absent key and
        a null one read the same), which is the digest their jobguard signed.
        """
        document = self.unsigned_document()
        jobs = document["jobs"]
        if without_later_fields:
            jobs = [{k: v for k, v in job.items() if not (k in _LATER_FIELDS and v is None)} for job in jobs]
        document["jobs"] = sorted(jobs, key=lambda job: job["job_id"])
        canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(canonical.encode()).digest()

    @classmethod
    def from_document(cls, document: Any, where: str) -> Manifest:
        """Check a parsed document against the schema and build the manifest; `where` names it in errors."""
        document = integral(document)  # 1.0 is the integer 1 (as the schema says): the records hold ints
        if isinstance(document, dict) and document.get("schema_version") != SCHEMA_VERSION and type(document.get("schema_version")) is int:
            raise ManifestError(
                f"{where}: manifest schema version {document['schema_version']} (this jobguard reads {SCHEMA_VERSION})",
                hint="restore it with the jobguard version that wrote it",
            )
        validate(document, "manifest", where)
        jobs = records_of(document["jobs"], where)
        header = {k: document[k] for k in ("deploy_id", "account", "region", "created_at", "updated_at")}
        return cls(
            **header,
            origin=dict(document["origin"]),
            queues=list(document.get("queues", [])),
            frozen_queues=dict(document.get("frozen_queues", {})),
            queue_successors=dict(document.get("queue_successors", {})),
            jobs=jobs,
            window=dict(document.get("window", {})),
            signature=document.get("signature"),
        )

    def merged_onto(self, theirs: Manifest) -> Manifest:
        """`theirs` (just read back after a conflicting write) with this copy's changes applied on top."""
        merged = replace(
            theirs, changed={**theirs.changed, **self.changed}, jobs=dict(theirs.jobs), released_queues=set(self.released_queues)
        )
        for job_id in self.changed:
            if job_id in self.jobs:
                merged.jobs[job_id] = self.jobs[job_id]
        for name in self.queues:
            merged.add_queue(name)
        merged.frozen_queues = {k: v for k, v in {**theirs.frozen_queues, **self.frozen_queues}.items() if k not in self.released_queues}
        merged.queue_successors = {**theirs.queue_successors, **self.queue_successors}
        merged.window = dict(self.window if self.window_changed else theirs.window)
        merged.window_changed = self.window_changed or theirs.window_changed
        return merged


def records_of(jobs: list[dict[str, Any]], where: str) -> dict[str, JobRecord]:
    """Records by job id from stored records already checked against the schema (`integral` applied)."""
    records: dict[str, JobRecord] = {}
    for index, job in enumerate(jobs):
        if job["job_id"] in records:
            raise ManifestError(f"{where}: jobs[{index}].job_id: job {job['job_id']} is recorded twice")
        records[job["job_id"]] = JobRecord(**_shared_stamps(job))
    return records


def _shared_stamps(job: dict[str, Any]) -> dict[str, Any]:
    """A stored record's fields (a checked copy of its JSON), its stamps and its submission's jobName sharing
    the strings other records (or its own job_name) hold: a page of records was stamped within a few milliseconds."""
    job["times"] = {k: sys.intern(v) if type(v) is str else v for k, v in job["times"].items()}
    if job["submission"].get("jobName") == job["job_name"]:
        job["submission"]["jobName"] = job["job_name"]
    return job


def replacements(manifests: Iterable[Manifest]) -> dict[str, str]:
    """Original job id -> replacement job id, for scripts."""
    return {r.job_id: r.replacement_id for m in manifests for r in m if r.replacement_id}
