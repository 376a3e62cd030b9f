"""The SubmitJob request that brings a drained job back, on what the deploy put in place.

Its queue by name (it must exist, be ENABLED and be one the configuration allows), the newest
ACTIVE revision of its job definition (or the recorded one, with `job-definition: recorded`),
its recorded overrides, its dependencies pointed at what they are now, a share identifier as the
queue now requires, jobguard's mark, and the lineage variables. Every value the job did not
override comes from the new revision; values that equalled the old revision's and changed are
named in a note, since an explicit override of the same value cannot be told from the default.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..adapters.batch import Batch, JobState, Queue
from ..domain import submission
from ..domain.elision import whole
from ..domain.manifest import FINISHED, KEPT, RESUBMITTED, JobRecord, Manifest
from ..domain.tags import ARRAY_INDEXES_ENV, Mark, with_mark
from ..options import Options

Json = dict[str, Any]


class Hold(Exception):
    """The job cannot be submitted now; the message says why (it stays owed and is retried later)."""


class Waiting(Hold):
    """Held until another manifest resubmits the dependency: a restore of both looks again after that one."""


@dataclass
class Planned:
    """A request ready to send, and what to tell about it."""

    request: Json
    definition: str  # name:revision
    notes: list[str] = field(default_factory=list)


@dataclass
class Requests:
    """Builds requests, caching what it looks up in Batch."""

    batch: Batch
    options: Options
    states: dict[str, JobState]  # what Batch says now of originals and dependencies
    owed_elsewhere: Callable[[str], JobRecord | None]  # a job owed by another open manifest
    queues: dict[str, Queue | None] = field(default_factory=dict)
    revisions: dict[str, list[int]] = field(default_factory=dict)

    def plan(self, manifest: Manifest, record: JobRecord) -> Planned:
        """The request for `record`, or Hold with the reason it cannot be sent now."""
        notes: list[str] = []
        queue = self._queue(record.queue, manifest.queue_successors.get(record.queue), notes)
        name, _, recorded = record.job_definition.rpartition(":")
        self._check_definition_allowed(manifest, name)
        revision = self._revision(name, recorded)
        new_definition = self.batch.definition(name, revision)
        if new_definition is None:
            raise Hold(f"job definition {name}:{revision} cannot be described")
        sent = whole(record)  # never a submission held elided (commands/manifests.py `whole` reads it back first)
        request: Json = {**sent, "jobQueue": queue.name, "jobDefinition": f"{name}:{revision}"}
        self._dependencies(manifest, record, request)
        self._share(queue, request, notes)
        mark = Mark(manifest.deploy_id, record.job_id, record.lineage, record.resubmits + 1)
        tags, full = with_mark(sent.get("tags", {}), mark)
        request["tags"] = tags
        variables = mark.environment() if self.options.lineage_env else {}
        self._array(manifest, record, request, variables, notes)
        if variables:
            request, problem = submission.with_environment(request, new_definition, variables)
            if problem:
                notes.append(problem)
        if full:
            notes.append(
                full if self.options.lineage_env else f"{full}; lineage-env is off, so an interrupted restore cannot find it again"
            )
        if str(revision) != recorded:
            old = self.batch.definition(name, int(recorded)) if recorded.isdigit() else None
            changed = submission.definition_changes(old, new_definition, sent) if old else []
            if changed:
                shown = ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
                notes.append(f"took {name}:{revision}'s {shown} (the job had {record.job_definition}'s values)")
        return Planned(request, f"{name}:{revision}", notes)

    def _queue(self, name: str, successor: str | None, notes: list[str]) -> Queue:
        """The queue by name; a queue the deploy renamed (the plan said so, the signed manifest recorded it) by its new name."""
        if successor and self.queue(name) is None and self.queue(successor) is not None:
            notes.append(f"queue {name} was renamed {successor} by the deploy: submitted there")
            name = successor
        allowed = self.options.queue_names
        if allowed and name not in allowed and name != successor:
            raise Hold(f"queue {name} is not one of the configured queues: jobguard may not submit to it")
        queue = self.queue(name)
        if queue is None:
            raise Hold(f"queue {name} does not exist")
        if queue.state != "ENABLED" or queue.status not in ("VALID", "UPDATING"):
            raise Hold(f"queue {name} is {queue.state} ({queue.status})")
        return queue

    def queue(self, name: str) -> Queue | None:
        """The queue by name, None when it does not exist; looked up once per restore."""
        if name not in self.queues:
            self.queues[name] = self.batch.queue(name)
        return self.queues[name]

    def _check_definition_allowed(self, manifest: Manifest, name: str) -> None:
        patterns = self.options.job_definitions
        if patterns and not any(fnmatch.fnmatchcase(name, p) for p in patterns):
            raise Hold(f"job definition {name} is not one of the configured job-definitions: jobguard may not submit it")

    def _revision(self, name: str, recorded: str) -> int:
        if name not in self.revisions:
            self.revisions[name] = self.batch.active_revisions(name)
        active = self.revisions[name]
        if not active:
            raise Hold(f"job definition {name} has no ACTIVE revision")
        if self.options.job_definition == "recorded" and recorded.isdigit() and int(recorded) in active:
            return int(recorded)
        return active[0]

    def _dependencies(self, manifest: Manifest, record: JobRecord, request: Json) -> None:
        """Each dependency points at its replacement, at itself while it still runs, or nowhere once it succeeded."""
        resolved = []
        for dependency in record.submission.get("dependsOn", []):
            if "jobId" not in dependency:
                resolved.append(dependency)
                continue
            target = self._dependency(manifest, record, str(dependency["jobId"]))
            if target:
                resolved.append({**dependency, "jobId": target})
        request.pop("dependsOn", None)
        if resolved:
            request["dependsOn"] = resolved

    def _dependency(self, manifest: Manifest, record: JobRecord, job_id: str) -> str | None:
        array, child, index = job_id.partition(":")
        if child and index.isdigit() and (manifest.jobs.get(array) or self.owed_elsewhere(array)) is not None:
            return self._child(manifest, record, array, int(index))
        own = manifest.jobs.get(job_id)
        drained = own
        if own is None or own.outcome == KEPT:
            # A job this deploy kept running may have been stopped since by a later deploy, which owes it now.
            later = self.owed_elsewhere(job_id)
            drained = later if later is not None and (own is None or later.owed or later.outcome == RESUBMITTED) else own
        state = self.states.get(job_id)
        if drained is not None:
            if drained.outcome == RESUBMITTED:
                return self._replacement(manifest, record, drained)
            if drained.outcome == FINISHED:
                return None
            if drained.outcome == KEPT:
                return self._running(job_id, state, record)
            if drained.owed:
                held = Hold if own is not None else Waiting
                raise held(f"dependency {job_id} is not resubmitted yet ({drained.outcome}); the next restore tries again")
            raise Hold(f"dependency {job_id} will not be resubmitted ({drained.outcome}: {drained.error or drained.note})")
        if state is not None:
            return self._running(job_id, state, record)
        seen = record.dependencies.get(job_id, "UNKNOWN")
        if seen == "SUCCEEDED" or _dependencies_done(record):
            return None  # Batch forgot it, but it had succeeded when the job was drained (or the job had got past it)
        raise Hold(f"dependency {job_id} is unknown to Batch (it was {seen} when the job was drained): cannot tell whether it succeeded")

    def _child(self, manifest: Manifest, record: JobRecord, array: str, index: int) -> str | None:
        """A dependency on one child of a drained array: that child of whatever the array became."""
        target = self._dependency(manifest, record, array)
        if target is None or target == array:
            return None if target is None else f"{array}:{index}"  # it succeeded; or the original still runs
        drained = manifest.jobs.get(array) or self.owed_elsewhere(array)
        if drained is not None and drained.array_succeeded and self.options.arrays == "unfinished":
            # Resubmitted smaller, its children numbered anew: the child had succeeded, or wait for all of it.
            return None if index in drained.array_succeeded else target
        return f"{target}:{index}"

    def _running(self, job_id: str, state: JobState | None, record: JobRecord) -> str | None:
        if state is None:
            if record.dependencies.get(job_id) == "SUCCEEDED" or _dependencies_done(record):
                return None
            raise Hold(f"dependency {job_id} is unknown to Batch: cannot tell whether it succeeded")
        if state.status == "SUCCEEDED":
            return None
        if state.status == "FAILED":
            raise Hold(f"dependency {job_id} failed")
        return job_id

    def _replacement(self, manifest: Manifest, record: JobRecord, drained: JobRecord) -> str | None:
        replacement = drained.replacement_id or ""
        if replacement and (manifest.jobs.get(replacement) or self.owed_elsewhere(replacement)) is not None:
            # A later deploy drained the replacement itself: depend on what became of it, never on the stopped job.
            return self._dependency(manifest, record, replacement)
        state = self.states.get(replacement)
        if state is not None and state.status == "SUCCEEDED":
            return None
        if state is not None and state.status == "FAILED":
            raise Hold(f"dependency {drained.job_id}'s replacement {replacement} failed")
        return replacement

    def _share(self, queue: Queue, request: Json, notes: list[str]) -> None:
        if queue.fair_share and not request.get("shareIdentifier"):
            if not self.options.share_identifier:
                raise Hold(f"queue {queue.name} now has a fair-share policy and the job had no share identifier; set share-identifier")
            request["shareIdentifier"] = self.options.share_identifier
            notes.append(f"share identifier {self.options.share_identifier} (queue {queue.name} now has a fair-share policy)")
        elif not queue.fair_share and request.get("shareIdentifier"):
            notes.append(
                f"share identifier {request.pop('shareIdentifier')} dropped (queue {queue.name} no longer has a fair-share policy)"
            )

    def _array(self, manifest: Manifest, record: JobRecord, request: Json, variables: dict[str, str], notes: list[str]) -> None:
        size = (request.get("arrayProperties") or {}).get("size")
        if self.options.arrays != "unfinished" or not size or not record.array_succeeded:
            return
        if _index_aligned(manifest, record):
            notes.append("whole array resubmitted: an N_TO_N dependency pairs its children by index with another array's")
            return
        left = [i for i in range(int(size)) if i not in set(record.array_succeeded)]
        if not left:
            return
        if len(left) == 1:
            request.pop("arrayProperties")
        else:
            request["arrayProperties"] = {"size": len(left)}
        variables[ARRAY_INDEXES_ENV] = ",".join(map(str, left))
        notes.append(f"{len(left)} of {size} array children resubmitted ({len(record.array_succeeded)} had succeeded)")


def _dependencies_done(record: JobRecord) -> bool:
    """Batch moves a job past PENDING only once every dependency succeeded: a job RUNNABLE, STARTING or
    RUNNING when it was drained had none left to wait for, whatever Batch has forgotten since."""
    return record.status_at_drain in ("RUNNABLE", "STARTING", "RUNNING")


def _index_aligned(manifest: Manifest, record: JobRecord) -> bool:
    """True when an N_TO_N dependency pairs this array's children with another array's by index (to it, or from a drained job)."""
    own = any(d.get("type") == "N_TO_N" for d in record.submission.get("dependsOn", []))
    theirs = any(
        d.get("jobId") == record.job_id and d.get("type") == "N_TO_N" for other in manifest for d in other.submission.get("dependsOn", [])
    )
    return own or theirs
