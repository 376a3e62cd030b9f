"""The job side of AWS Batch as jobguard meets it in the real world, not the kindest case.

Modelled (see ../shared/DESIGN.md, "AWS Batch facts"):
- TerminateJobs / CancelJobs (up to 50 ids) do what TerminateJob / CancelJob do, job by job, and
  answer HTTP 200 with `successful` and `errors`; ids not found count as processed.
- TerminateJob is asynchronous: a STARTING/RUNNING job keeps running for its stop time (SIGTERM,
  then SIGKILL), then ends FAILED with isTerminated; a job not yet started is cancelled after a
  moment; a PENDING job only once its dependencies have completed; an array parent once its
  children have. A job can still end SUCCEEDED if it finishes first (`finish`).
- A FAILED dependency fails every job PENDING on it, in any queue, transitively.
- Finished jobs are forgotten after `forget_seconds`: DescribeJobs omits them.
- ListJobs shows a new job only after `list_lag_seconds`, one status per call (RUNNING when none
  is given), sorted by createdAt, pages with nextToken, array children only by arrayJobId; the
  JOB_NAME filter is case-insensitive, a trailing `*` matches a prefix, and filters ignore jobStatus.
- SubmitJob validates like Batch: queue ENABLED, ACTIVE job definition, at most 20 known
  dependencies, array size 2-10 000, no AWS_BATCH_* variables, at most 50 tags, 30 KiB, a share
  identifier exactly when the queue has a fair-share scheduling policy, ECS/EKS container overrides
  that address a container of the definition (an unnamed one only when it has exactly one).
- Job definitions are kept here (moto drops fields): register, describe (INACTIVE too), deregister.
- Compute environments stay in moto, completed here: Batch's service-linked role when no
  serviceRole is given, updatePolicy kept and described, an update's computeResources applied.
- What an apply does to running work: a job runs on the first compute environment of its queue;
  deleting that compute environment (a replacement), or updating its infrastructure with
  `terminateJobsOnUpdate`, takes its instances away: its STARTING/RUNNING jobs end FAILED after
  their stop time with `Host EC2 (instance i-...) terminated.` (queued jobs stay), unless the job's
  retryStrategy retries that reason (`evaluateOnExit` `onStatusReason` glob, action RETRY, attempts
  left): then it is RUNNABLE again. DeleteJobQueue needs the queue DISABLED and ends its jobs
  (FAILED, no exit code) at about 16 a second (API reference, DeleteJobQueue); a queue made again
  under the same name (the same ARN) never lists the old one's jobs, DescribeJobs still answers
  for them. SubmitJob to a DISABLED queue is refused.

Time is the wall clock plus `offset`, so a test can jump a day ahead (`advance_clock`).
Queues and compute environments stay in moto, read through its backend's public methods.
"""

from __future__ import annotations

import fnmatch
import heapq
import json
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from . import merge

Json = dict[str, Any]
ACTIVE = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING")
FINAL = ("SUCCEEDED", "FAILED")
NOT_STARTED = ("SUBMITTED", "RUNNABLE")
JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
DEFINITION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
SERVICE_LINKED_ROLE = "AWSServiceRoleForBatch"
QUEUE_DELETE_RATE = 16.0  # jobs a second DeleteJobQueue ends (API reference, DeleteJobQueue)
QUEUE_DELETED_REASON = "Job queue deleted"  # AWS does not document the text
ARRAY_CHILD_FAILED = "Array Child Job failed"  # an array parent's statusReason when a child failed
OWN_FAILURE_REASON = "Essential container in task exited"
# Infrastructure updates (AWS Batch user guide, "Updating compute environments"); vCPU counts only scale.
SCALING_ONLY = {"minvCpus", "maxvCpus", "desiredvCpus", "updateToLatestImageVersion"}
BULK_STOP = 50  # job ids per TerminateJobs / CancelJobs call
# A job id of a TerminateJobs / CancelJobs call -> (code, message) to answer that job with an error; None lets it through.
StopRule = Callable[[str], "tuple[str, str] | None"]


class ClientException(Exception):
    """An invalid request: HTTP 400 ClientException, as Batch answers it."""


@dataclass(frozen=True)
class Timing:
    """How long Batch takes to do what it is asked. `Timing.realistic()` is the demo's world."""

    stop_seconds: float = 0.4  # TerminateJob on a STARTING/RUNNING job: SIGTERM until the container exits
    cancel_seconds: float = 0.05  # TerminateJob/CancelJob on a job not yet started
    forget_seconds: float = 24 * 3600.0  # a finished job drops out of DescribeJobs after this
    list_lag_seconds: float = 0.3  # a new job reaches ListJobs after this

    @classmethod
    def realistic(cls) -> Timing:
        """ECS's default 30 s stop timeout, a second to list a new job, a day to forget."""
        return cls(stop_seconds=30.0, cancel_seconds=1.0, list_lag_seconds=1.0)

    @classmethod
    def instant(cls) -> Timing:
        """Everything at once: for tests that measure call counts, not timing."""
        return cls(stop_seconds=0.0, cancel_seconds=0.0, list_lag_seconds=0.0)


@dataclass
class Job:
    """One job as Batch keeps it: the request as sent, and its life since."""

    job_id: str
    name: str
    queue_arn: str
    definition_arn: str
    request: Json
    status: str
    created_at: float  # seconds, simulation time
    index: int | None = None
    parent: str | None = None
    children: list[str] = field(default_factory=list)
    started_at: float | None = None
    stopped_at: float | None = None
    reason: str | None = None
    stop_at: float | None = None  # when a stop already asked for takes effect
    stop_requested: bool = False  # TerminateJob on a PENDING job: cancelled once its dependencies complete
    stop_kind: str = ""  # "terminated" or "cancelled"
    terminated: bool = False
    cancelled: bool = False
    stop_seconds: float | None = None  # this job's own stop time (EKS grace periods are longer)
    pinned: bool = False  # put in its status by a test: Batch's scheduler leaves it there (stops and failures still apply)
    queue_deleted: bool = False  # its queue was deleted: a queue made again under the name (same ARN) never lists it
    compute_environment: str | None = None  # ARN of the compute environment it started on
    exit_code: int | None = None  # its container's, when it exited on its own
    attempts: list[Json] = field(default_factory=list)


@dataclass
class Definition:
    """A job-definition revision as registered."""

    name: str
    revision: int
    arn: str
    request: Json
    status: str = "ACTIVE"


class BatchModel:
    """Jobs and job definitions, faithful where jobguard depends on them. Thread-safe."""

    def __init__(self, backend: Any, account: str, region: str, timing: Timing | None = None) -> None:
        self.backend, self.account, self.region = backend, account, region
        self.timing = timing or Timing()
        self.offset = 0.0
        self.jobs: dict[str, Job] = {}
        self.definitions: dict[str, Definition] = {}
        self.tags: dict[str, dict[str, str]] = {}
        self.update_policies: dict[str, Json] = {}  # compute environment ARN -> updatePolicy (moto drops it)
        self.deletions: list[tuple[float, list[str]]] = []  # DeleteJobQueue: when, and the jobs it ends in order
        self.lock = threading.RLock()
        # What `tick` looks at, so that a call costs the same with 100 or 200 000 jobs known:
        self._watched: dict[str, None] = {}  # jobs waiting on dependencies, and array parents (ordered)
        self._due: list[tuple[float, str]] = []  # heap of (stop_at, job id): stops asked for, taken in time order
        self._by_queue: dict[str, set[str]] = {}  # queue ARN -> its jobs (children too): a deleted queue ends them
        self._ended: list[tuple[float, str]] = []  # heap of (stoppedAt, job id): forgotten in that order
        self._changes = 0  # moves so far: ListJobs' sorted candidates are kept until the next move
        self._sorted: dict[tuple[str, str], tuple[int, list[Job]]] = {}

    # -- time ------------------------------------------------------------------------------
    def now(self) -> float:
        """Simulation time, in seconds since the epoch."""
        return time.time() + self.offset

    def advance_clock(self, seconds: float) -> None:
        """Jump ahead: what was due in the meantime happens now."""
        with self.lock:
            self.offset += seconds
            self.tick()

    # -- the API -----------------------------------------------------------------------------
    def submit_job(self, body: Json) -> Json:
        """SubmitJob, validated as Batch validates it."""
        with self.lock:
            self.tick()
            name = str(body.get("jobName", ""))
            if not JOB_NAME.fullmatch(name):
                raise ClientException(f"Job name {name!r} is invalid")
            queue = self._queue(str(body.get("jobQueue", "")))
            if queue.state != "ENABLED" or getattr(queue, "status", "VALID") != "VALID":
                raise ClientException(f"Job queue {queue.name} is not in ENABLED state")
            definition = self.resolve_definition(str(body.get("jobDefinition", "")))
            self._check_request(body, queue)
            _check_container_overrides(body, definition.request)
            size = (body.get("arrayProperties") or {}).get("size")
            job = self._add(Job(str(uuid.uuid4()), name, queue.arn, definition.arn, _copy(body), "SUBMITTED", self.now()))
            for index in range(size or 0):
                child = Job(f"{job.job_id}:{index}", name, queue.arn, definition.arn, job.request, "SUBMITTED", job.created_at, index=index)
                child.parent = job.job_id
                job.children.append(self._add(child).job_id)
            if body.get("tags"):
                self.tags[self.job_arn(job.job_id)] = dict(body["tags"])
            self.tick()
            return {"jobId": job.job_id, "jobName": name, "jobArn": self.job_arn(job.job_id)}

    def _check_request(self, body: Json, queue: Any) -> None:
        depends_on = body.get("dependsOn") or []
        if len(depends_on) > 20:
            raise ClientException("A job can depend on at most 20 jobs")
        for dependency in depends_on:
            if "jobId" in dependency and dependency["jobId"] not in self.jobs:
                raise ClientException(f"Dependent job ID {dependency['jobId']} is invalid or does not exist")
        size = (body.get("arrayProperties") or {}).get("size")
        if size is not None and not 2 <= int(size) <= 10000:
            raise ClientException("Array size must be between 2 and 10000")
        for variable in _environment_entries(body):
            if str(variable.get("name", "")).startswith("AWS_BATCH"):
                raise ClientException("Environment variable names beginning with AWS_BATCH are reserved")
        if len(body.get("tags") or {}) > 50:
            raise ClientException("A job can have at most 50 tags")
        if len(json.dumps(body)) > 30 * 1024:
            raise ClientException("SubmitJob request exceeds 30 KiB")
        fair_share = bool(getattr(queue, "schedule_policy", None))
        if fair_share and not body.get("shareIdentifier"):
            raise ClientException(f"Job queue {queue.name} has a scheduling policy: shareIdentifier is required")
        if not fair_share and body.get("shareIdentifier"):
            raise ClientException(f"Job queue {queue.name} has no scheduling policy: shareIdentifier is not allowed")

    def describe_jobs(self, body: Json) -> Json:
        """DescribeJobs: at most 100 ids; ids Batch does not know (or forgot) are left out."""
        ids = body.get("jobs") or []
        if len(ids) > 100:
            raise ClientException("DescribeJobs accepts at most 100 job ids")
        with self.lock:
            self.tick()
            found = [self.jobs.get(str(i).rsplit("/", 1)[-1]) for i in ids]
            return {"jobs": [self.detail(j) for j in found if j is not None]}

    def list_jobs(self, body: Json) -> Json:
        """ListJobs, with the lag, ordering, filters and paging of the real thing."""
        filters = body.get("filters")
        cap = 100 if filters else 1000
        limit = min(int(body.get("maxResults") or cap), cap)
        with self.lock:
            self.tick()
            if filters:  # jobStatus is ignored when filters are given
                candidates = [j for j in self._listable(body) if all(_matches(j, f, self) for f in filters)]
                candidates.sort(key=lambda j: (j.created_at, j.job_id), reverse=True)
            elif body.get("jobQueue") and not body.get("arrayJobId") and not body.get("multiNodeJobId"):
                candidates = self._queue_listing(str(body["jobQueue"]), body.get("jobStatus") or "RUNNING")
            else:
                wanted = body.get("jobStatus") or "RUNNING"
                candidates = [j for j in self._listable(body) if j.status == wanted]
                candidates.sort(key=lambda j: (j.created_at, j.job_id), reverse=True)
            start = int(body.get("nextToken") or 0)
            answer: Json = {"jobSummaryList": [self.summary(j) for j in candidates[start : start + limit]]}
            if start + limit < len(candidates):
                answer["nextToken"] = str(start + limit)
            return answer

    def _queue_listing(self, queue_id: str, status: str) -> list[Job]:
        """A queue's listable jobs of one status, newest first; sorted once per change, not once per page."""
        queue = self._queue(queue_id)
        cached = self._sorted.get((queue.arn, status))
        if cached is None or cached[0] != self._changes:
            jobs = (self.jobs[i] for i in self._by_queue.get(queue.arn, ()) if i in self.jobs)
            ordered = sorted(
                (j for j in jobs if j.index is None and j.status == status and not j.queue_deleted),
                key=lambda j: (j.created_at, j.job_id),
                reverse=True,
            )
            cached = self._sorted[(queue.arn, status)] = (self._changes, ordered)
        visible = self.now() - self.timing.list_lag_seconds
        return [j for j in cached[1] if j.created_at <= visible]

    def _listable(self, body: Json) -> list[Job]:
        visible = self.now() - self.timing.list_lag_seconds
        if body.get("arrayJobId"):
            parent = self.jobs.get(str(body["arrayJobId"]))
            jobs = [self.jobs[c] for c in parent.children if c in self.jobs] if parent else []
        elif body.get("multiNodeJobId"):
            jobs = []
        elif body.get("jobQueue"):
            queue = self._queue(str(body["jobQueue"]))
            jobs = [j for j in self.jobs.values() if j.queue_arn == queue.arn and j.index is None and not j.queue_deleted]
        else:
            raise ClientException("One of jobQueue, arrayJobId or multiNodeJobId is required")
        return [j for j in jobs if j.created_at <= visible]

    def queue_deleted(self, queue_arn: str) -> None:
        """DeleteJobQueue (of a DISABLED queue) went through: Batch ends the queue's jobs, FAILED with no
        exit code, about QUEUE_DELETE_RATE a second, oldest first; a queue made again under its name (the
        same ARN) never lists them."""
        with self.lock:
            doomed = sorted((j for j in self.jobs.values() if j.queue_arn == queue_arn and not j.queue_deleted), key=lambda j: j.created_at)
            for job in doomed:
                job.queue_deleted = True
            self._changes += 1
            self.deletions.append((self.now(), [j.job_id for j in doomed if j.index is None]))
            self.tick()

    def terminate_job(self, body: Json) -> Json:
        """TerminateJob: asynchronous; works in every active state."""
        return self._stop(body, "terminated")

    def cancel_job(self, body: Json) -> Json:
        """CancelJob: only jobs not yet started; STARTING/RUNNING jobs are not affected."""
        return self._stop(body, "cancelled")

    def terminate_jobs(self, body: Json, refuse: StopRule | None = None) -> Json:
        """TerminateJobs: TerminateJob for up to 50 ids, answered job by job (HTTP 200 even when some
        fail); ids Batch cannot find count as processed. `refuse` gives a job its own error."""
        return self._stop_many(body, "terminated", refuse)

    def cancel_jobs(self, body: Json, refuse: StopRule | None = None) -> Json:
        """CancelJobs: CancelJob for up to 50 ids, answered job by job, as TerminateJobs."""
        return self._stop_many(body, "cancelled", refuse)

    def _stop_many(self, body: Json, kind: str, refuse: StopRule | None) -> Json:
        ids = body.get("jobs")
        if not isinstance(ids, list) or not 1 <= len(ids) <= BULK_STOP:
            raise ClientException(f"jobs: between 1 and {BULK_STOP} job ids are required")
        if not body.get("reason") or len(str(body["reason"])) > 1024:
            raise ClientException("reason is required, at most 1024 characters")
        successful: list[str] = []
        errors: list[Json] = []
        with self.lock:
            self.tick()
            for job_id in (str(i) for i in ids):
                refusal = refuse(job_id) if refuse else None
                if refusal is not None:
                    errors.append({"job": job_id, "code": refusal[0], "message": refusal[1]})
                    continue
                job = self.jobs.get(job_id)
                if job is not None:
                    self._ask_all(job, str(body["reason"]), kind)
                successful.append(job_id)  # an id Batch cannot find counts as processed
            self.tick()
        return {"successful": successful, "errors": errors}

    def _stop(self, body: Json, kind: str) -> Json:
        if not body.get("reason"):
            raise ClientException("reason is required")
        with self.lock:
            self.tick()
            job = self.jobs.get(str(body.get("jobId", "")))
            if job is None:
                raise ClientException(f"Job {body.get('jobId')} not found")
            self._ask_all(job, str(body["reason"]), kind)
            self.tick()
        return {}

    def _ask_all(self, job: Job, reason: str, kind: str) -> None:
        for target in [job, *(self.jobs[c] for c in job.children if c in self.jobs)]:
            self._ask_to_stop(target, reason, kind)

    def _ask_to_stop(self, job: Job, reason: str, kind: str) -> None:
        if job.status in FINAL:
            return
        if job.children:  # an array parent follows its children, and DescribeJobs returns the reason it was given
            job.reason = job.reason or reason
            return
        job.reason = reason
        if job.status == "PENDING":
            job.stop_requested, job.stop_kind = True, "cancelled"
        elif job.status in NOT_STARTED:
            self._stop_by(job, self.now() + self.timing.cancel_seconds)
            job.stop_kind = "cancelled"
        elif kind == "terminated" and job.stop_at is None:  # STARTING or RUNNING: SIGTERM, then exit
            self._stop_by(job, self.now() + (self.timing.stop_seconds if job.stop_seconds is None else job.stop_seconds))
            job.stop_kind = "terminated"
        self._watched[job.job_id] = None

    def _stop_by(self, job: Job, when: float) -> None:
        """The job ends at `when` at the latest (an earlier stop already due stands)."""
        if job.stop_at is None or when < job.stop_at:
            job.stop_at = when
            heapq.heappush(self._due, (when, job.job_id))

    # -- job definitions ---------------------------------------------------------------------
    def register_job_definition(self, body: Json) -> Json:
        """RegisterJobDefinition: the next revision of the name."""
        name = str(body.get("jobDefinitionName", ""))
        if not DEFINITION_NAME.fullmatch(name):
            raise ClientException(f"Job definition name {name!r} is invalid")
        if body.get("type") not in ("container", "multinode"):
            raise ClientException("type must be container or multinode")
        with self.lock:
            revision = 1 + max((d.revision for d in self.definitions.values() if d.name == name), default=0)
            arn = f"arn:aws:batch:{self.region}:{self.account}:job-definition/{name}:{revision}"
            self.definitions[arn] = Definition(name, revision, arn, _copy(body))
            if body.get("tags"):
                self.tags[arn] = dict(body["tags"])
        return {"jobDefinitionName": name, "jobDefinitionArn": arn, "revision": revision}

    def deregister_job_definition(self, body: Json) -> Json:
        """DeregisterJobDefinition: the revision becomes INACTIVE (still described)."""
        with self.lock:
            definition = self._definition_by_id(str(body.get("jobDefinition", "")))
            if definition is None:
                raise ClientException(f"Job definition {body.get('jobDefinition')} does not exist")
            definition.status = "INACTIVE"
        return {}

    def describe_job_definitions(self, body: Json) -> Json:
        """DescribeJobDefinitions by ARNs, name:revision or name (every revision), or all; pages of 100."""
        with self.lock:
            if body.get("jobDefinitions"):
                found: list[Definition] = []
                for identifier in body["jobDefinitions"]:
                    found += self._definitions_named(str(identifier))
            elif body.get("jobDefinitionName"):
                found = [d for d in self.definitions.values() if d.name == body["jobDefinitionName"]]
            else:
                found = list(self.definitions.values())
            if body.get("status"):
                found = [d for d in found if d.status == body["status"]]
            found.sort(key=lambda d: (d.name, -d.revision))
            limit = min(int(body.get("maxResults") or 100), 100)
            start = int(body.get("nextToken") or 0)
            answer: Json = {"jobDefinitions": [self.described(d) for d in found[start : start + limit]]}
            if start + limit < len(found):
                answer["nextToken"] = str(start + limit)
            return answer

    def described(self, definition: Definition) -> Json:
        """A revision as DescribeJobDefinitions shows it."""
        described = merge.described_definition(definition.request, definition.arn, definition.revision, definition.status)
        described["tags"] = dict(self.tags.get(definition.arn, {}))
        return described

    def resolve_definition(self, identifier: str) -> Definition:
        """ARN, name:revision (ACTIVE), or name (latest ACTIVE revision), as SubmitJob resolves it."""
        if ":" in identifier and not identifier.startswith("arn:"):
            found = self._definition_by_id(identifier)
            candidates = [found] if found else []
        elif identifier.startswith("arn:"):
            candidates = [d for d in [self.definitions.get(identifier)] if d]
        else:
            candidates = sorted(
                (d for d in self.definitions.values() if d.name == identifier and d.status == "ACTIVE"), key=lambda d: d.revision
            )
        if not candidates or candidates[-1].status != "ACTIVE":
            raise ClientException(f"Job definition {identifier} does not exist or is not in ACTIVE status")
        return candidates[-1]

    def _definition_by_id(self, identifier: str) -> Definition | None:
        if identifier.startswith("arn:"):
            return self.definitions.get(identifier)
        name, _, revision = identifier.rpartition(":")
        return next((d for d in self.definitions.values() if d.name == name and str(d.revision) == revision), None)

    def _definitions_named(self, identifier: str) -> list[Definition]:
        if identifier.startswith("arn:") or ":" in identifier:
            found = self._definition_by_id(identifier)
            return [found] if found else []
        return [d for d in self.definitions.values() if d.name == identifier]

    # -- compute environments: moto keeps them; what it leaves out is filled in here ----------
    def compute_environment_request(self, body: Json) -> Json:
        """A CreateComputeEnvironment request as Batch takes it: without serviceRole, Batch uses its
        service-linked role (moto refuses a compute environment without a role)."""
        if body.get("serviceRole"):
            return body
        iam = self.backend.iam_backend
        with self.lock:
            try:
                role = iam.get_role(SERVICE_LINKED_ROLE)
            except Exception:  # moto's IAMNotFoundException: Batch creates the role with the account's first compute environment
                trust = {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Principal": {"Service": "batch.amazonaws.com"}, "Action": "sts:AssumeRole"}],
                }
                role = iam.create_role(
                    SERVICE_LINKED_ROLE,
                    json.dumps(trust),
                    "/aws-service-role/batch.amazonaws.com/",
                    permissions_boundary=None,
                    description="Batch's service-linked role",
                    tags=[],
                    max_session_duration="3600",
                    linked_service="batch.amazonaws.com",
                )
        return {**body, "serviceRole": role.arn}

    def compute_environment_answer(self, action: str, body: Json, answer: Json) -> Json:
        """moto's answer to a compute environment call, completed as Batch answers it.

        moto keeps no updatePolicy and ignores an update's computeResources: here the policy is kept
        and described, and an update's compute resources replace the ones described (subnets,
        instance types, vCPUs, ...), as a finished in-place update leaves them."""
        with self.lock:
            if action == "UpdateComputeEnvironment":  # updatePolicy is set by an update only (CreateComputeEnvironment takes none)
                environment = self.backend.get_compute_environment(str(body.get("computeEnvironment", "")))
                if environment is not None:
                    changed = {k: v for k, v in (body.get("computeResources") or {}).items() if k != "updateToLatestImageVersion"}
                    if changed and isinstance(environment.compute_resources, dict):
                        environment.compute_resources.update(changed)
                    if body.get("updatePolicy"):
                        policy = self.update_policies.setdefault(environment.arn, {})
                        policy.update(body["updatePolicy"])
                    infrastructure = set(changed) - SCALING_ONLY or body.get("serviceRole")
                    if infrastructure and self.update_policies.get(environment.arn, {}).get("terminateJobsOnUpdate"):
                        self.lose_hosts(environment.arn)
            elif action == "DeleteComputeEnvironment":
                gone = str(body.get("computeEnvironment", ""))
                self.lose_hosts(gone)
                for arn in [a for a in self.update_policies if a == gone or a.rsplit("/", 1)[-1] == gone]:
                    del self.update_policies[arn]
            elif action == "DescribeComputeEnvironments":
                for environment in answer.get("computeEnvironments") or []:
                    kept = self.update_policies.get(str(environment.get("computeEnvironmentArn")))
                    if kept:
                        environment["updatePolicy"] = dict(kept)
        return answer

    # -- tags of jobs and job definitions ----------------------------------------------------
    def tag_resource(self, arn: str, tags: dict[str, str]) -> None:
        """TagResource on a job or job definition."""
        with self.lock:
            self.tags.setdefault(arn, {}).update(tags)

    def untag_resource(self, arn: str, keys: list[str]) -> None:
        """UntagResource on a job or job definition."""
        with self.lock:
            for key in keys:
                self.tags.get(arn, {}).pop(key, None)

    def list_tags(self, arn: str) -> Json:
        """ListTagsForResource on a job or job definition."""
        with self.lock:
            return {"tags": dict(self.tags.get(arn, {}))}

    # -- what tests and the demo use ---------------------------------------------------------
    def set_status(self, job_id: str, status: str) -> None:
        """Put a job (and its array children) in a status, as if Batch had moved it there."""
        with self.lock:
            job = self.jobs[job_id]
            for target in [job, *(self.jobs[c] for c in job.children if c in self.jobs)]:
                self._move(target, status)
                target.pinned = True
            self.tick()

    def finish(self, job_id: str, status: str = "SUCCEEDED", exit_code: int | None = None) -> None:
        """The job's work ends on its own (even while it is being stopped); `exit_code` its container's."""
        with self.lock:
            job = self.jobs[job_id]
            job.exit_code = exit_code if exit_code is not None else (0 if status == "SUCCEEDED" else None)
            if status == "FAILED" and exit_code is not None:
                job.reason = OWN_FAILURE_REASON
            self.set_status(job_id, status)

    def backdate(self, job_id: str, seconds: float) -> None:
        """Pretend the job (and its children) was submitted `seconds` ago."""
        with self.lock:
            job = self.jobs[job_id]
            for target in [job, *(self.jobs[c] for c in job.children if c in self.jobs)]:
                target.created_at -= seconds
                self._changes += 1
                if target.started_at is not None:
                    target.started_at -= seconds / 2

    def stopping(self, job_id: str) -> bool:
        """True while a stop was asked for and has not yet taken effect."""
        with self.lock:
            job = self.jobs.get(job_id)
            return job is not None and job.status in ACTIVE and (job.stop_at is not None or job.stop_requested)

    def advance(self) -> None:
        """One scheduling step: every job that may move on moves one status on."""
        order = {"RUNNABLE": "STARTING", "STARTING": "RUNNING", "RUNNING": "SUCCEEDED"}
        with self.lock:
            self.tick()
            for job in [j for j in self.jobs.values() if not j.children and j.status in order and j.stop_at is None]:
                self._move(job, order[job.status])
            self.tick()

    def active_jobs(self) -> Iterator[Job]:
        """Every job (not child) still active."""
        with self.lock:
            self.tick()
            return iter([j for j in self.jobs.values() if j.index is None and j.status in ACTIVE])

    # -- what Batch does on its own ----------------------------------------------------------
    def tick(self) -> None:
        """Let what is due happen: stops, dependency failures, cancellations, forgetting.

        Only the jobs that can change on their own are looked at: stops in the order they fall due
        (`_due`), then the jobs waiting on others and array parents (`_watched`), so that a call costs
        what is due, not a pass over every job Batch knows or is stopping.
        """
        with self.lock:
            now = self.now()
            while self._due and self._due[0][0] <= now:
                _, job_id = heapq.heappop(self._due)
                job = self.jobs.get(job_id)
                # an entry is stale once its job ended, was retried or was given an earlier stop
                if job is None or job.stop_at is None or job.stop_at > now or job.status not in ACTIVE or job.children:
                    continue
                if job.stop_kind == "host" and self._retried(job):
                    continue
                self._end(job, "FAILED", job.reason, job.stop_kind)
            self._queue_deletions(now)
            self._resolve_dependencies()
            for job in self._watching():
                if job.children:
                    self._follow_children(job)
            self._forget(now - self.timing.forget_seconds)

    def _watching(self) -> list[Job]:
        """The watched jobs still worth a look (the others leave the watch)."""
        jobs = []
        for job_id in list(self._watched):
            job = self.jobs.get(job_id)
            if job is None or job.status not in ACTIVE or not (job.children or job.status in ("SUBMITTED", "PENDING")):
                del self._watched[job_id]
            else:
                jobs.append(job)
        return jobs

    def _forget(self, before: float) -> None:
        while self._ended and self._ended[0][0] <= before:
            _, job_id = heapq.heappop(self._ended)
            job = self.jobs.get(job_id)
            if job is not None and job.stopped_at is not None and job.stopped_at <= before:
                del self.jobs[job_id]
                self._by_queue.get(job.queue_arn, set()).discard(job_id)
                self._changes += 1

    def _resolve_dependencies(self) -> None:
        changed = True
        while changed:  # a failure cascades through chains, in any queue
            changed = False
            for job in self._watching():
                if job.children or job.status not in ("SUBMITTED", "PENDING"):
                    continue
                states = [self._dependency_state(d) for d in job.request.get("dependsOn") or []]
                if any(s == "FAILED" for s in states):
                    self._end(job, "FAILED", "Dependent Job failed", job.stop_kind if job.stop_requested else "")
                    changed = True
                elif all(s in ("SUCCEEDED", "GONE") for s in states):
                    if job.stop_requested:
                        self._end(job, "FAILED", job.reason, "cancelled")
                        changed = True
                    elif not job.pinned:
                        self._move(job, "RUNNABLE")
                        changed = True
                elif job.status == "SUBMITTED" and not job.pinned:
                    self._move(job, "PENDING")
                    changed = True

    def _dependency_state(self, dependency: Json) -> str:
        job_id = str(dependency.get("jobId", ""))
        target = self.jobs.get(job_id)
        if target is None:
            return "GONE"
        return target.status if target.status in FINAL else "ACTIVE"

    def _follow_children(self, parent: Job) -> None:
        """An array parent's status is derived from its children's (AWS Batch user guide, "Array jobs")."""
        statuses = [self.jobs[c].status for c in parent.children if c in self.jobs]
        if statuses and all(s in FINAL for s in statuses):
            status = "SUCCEEDED" if all(s == "SUCCEEDED" for s in statuses) else "FAILED"
            if parent.status != status:
                kinds = {self.jobs[c].stop_kind for c in parent.children if c in self.jobs}
                # Batch says this of a parent that failed for its children (each child's own reason is on the child);
                # one stopped by TerminateJob keeps the reason it was given
                reason = (parent.reason or ARRAY_CHILD_FAILED) if status == "FAILED" else parent.reason
                self._end(parent, status, reason, "terminated" if "terminated" in kinds else "")
            return
        # A parent is only ever SUBMITTED, PENDING, SUCCEEDED or FAILED: PENDING once any child has
        # moved on from SUBMITTED, and for as long as any child runs.
        if any(s != "SUBMITTED" for s in statuses) and parent.status != "PENDING":
            parent.status = "PENDING"
            self._changes += 1

    def _move(self, job: Job, status: str) -> None:
        job.status = status
        self._changes += 1
        if status in ("STARTING", "RUNNING") and job.started_at is None:
            job.started_at = self.now()
        if status in ("STARTING", "RUNNING") and job.compute_environment is None:
            queue = self.backend.get_job_queue(job.queue_arn)
            order = sorted(getattr(queue, "env_order_json", None) or [], key=lambda e: int(e.get("order", 0)))
            job.compute_environment = str(order[0]["computeEnvironment"]) if order else None
        if status in FINAL:
            self._attempt(job)
            job.stopped_at, job.stop_at = self.now(), None
            heapq.heappush(self._ended, (job.stopped_at, job.job_id))
        elif status in ("SUBMITTED", "PENDING") or job.children:
            self._watched[job.job_id] = None

    def _end(self, job: Job, status: str, reason: str | None, kind: str) -> None:
        job.reason = reason
        self._move(job, status)
        job.terminated, job.cancelled = kind == "terminated", kind == "cancelled"

    # -- what an apply does to running work --------------------------------------------------
    def lose_hosts(self, environment: str) -> None:
        """The instances of a compute environment (ARN or name) go away: its STARTING/RUNNING jobs end
        FAILED after their stop time, with Batch's host-terminated reason."""
        name = environment.rsplit("/", 1)[-1]
        with self.lock:
            self.tick()
            for job in self.jobs.values():
                on = (job.compute_environment or "").rsplit("/", 1)[-1]
                if job.status in ("STARTING", "RUNNING") and not job.children and on == name and job.stop_kind != "host":
                    stop = self.timing.stop_seconds if job.stop_seconds is None else job.stop_seconds
                    self._stop_by(job, self.now() + stop)
                    job.stop_kind, job.reason = "host", f"Host EC2 (instance i-{uuid.uuid4().hex[:17]}) terminated."

    def _retried(self, job: Job) -> bool:
        """A host-terminated attempt its retryStrategy retries: the job is RUNNABLE again (Automated job retries)."""
        strategy = job.request.get("retryStrategy") or self.definitions[job.definition_arn].request.get("retryStrategy") or {}
        attempts = int(strategy.get("attempts") or 1)
        rules = strategy.get("evaluateOnExit") or []
        action = next(
            (str(r.get("action", "")).upper() for r in rules if fnmatch.fnmatchcase(job.reason or "", str(r.get("onStatusReason") or "*"))),
            "RETRY",
        )
        if action != "RETRY" or len(job.attempts) + 1 >= attempts:
            return False
        self._attempt(job)
        job.started_at = None
        job.status, job.stop_at, job.stop_kind, job.compute_environment = "RUNNABLE", None, "", None
        self._changes += 1
        return True

    def _attempt(self, job: Job) -> None:
        """The attempt that just ended, as JobDetail.attempts shows it."""
        if job.started_at is None:
            return
        container: Json = {"exitCode": job.exit_code} if job.exit_code is not None else {}
        if job.stop_kind == "host":
            container["reason"] = "Host EC2 terminated"
        attempt = {"container": container, "startedAt": int(job.started_at * 1000), "stoppedAt": int(self.now() * 1000)}
        job.attempts.append({**attempt, "statusReason": job.reason or OWN_FAILURE_REASON})

    def _queue_deletions(self, now: float) -> None:
        for started, ids in self.deletions:
            due = int((now - started) * QUEUE_DELETE_RATE) + 1
            for job_id in ids[:due]:
                job = self.jobs.get(job_id)
                for target in [job, *(self.jobs[c] for c in job.children if c in self.jobs)] if job else []:
                    if target.status in ACTIVE:
                        self._end(target, "FAILED", QUEUE_DELETED_REASON, "")

    def _queue(self, identifier: str) -> Any:
        queue = self.backend.get_job_queue(identifier)
        if queue is None:
            raise ClientException(f"Job queue {identifier} does not exist")
        return queue

    def _add(self, job: Job) -> Job:
        self.jobs[job.job_id] = job
        self._by_queue.setdefault(job.queue_arn, set()).add(job.job_id)
        self._watched[job.job_id] = None
        self._changes += 1
        return job

    # -- shapes ------------------------------------------------------------------------------
    def job_arn(self, job_id: str) -> str:
        """The ARN of a job."""
        return f"arn:aws:batch:{self.region}:{self.account}:job/{job_id}"

    def summary(self, job: Job) -> Json:
        """A JobSummary, as ListJobs returns it."""
        summary: Json = {
            "jobId": job.job_id,
            "jobArn": self.job_arn(job.job_id),
            "jobName": job.name,
            "createdAt": int(job.created_at * 1000),
            "status": job.status,
            "jobDefinition": job.definition_arn,
        }
        if job.index is not None:
            summary["arrayProperties"] = {"index": job.index}
        elif job.children:
            summary["arrayProperties"] = {"size": len(job.children)}
        for key, value in (("startedAt", job.started_at), ("stoppedAt", job.stopped_at), ("statusReason", job.reason)):
            if value is not None:
                summary[key] = int(value * 1000) if isinstance(value, float) else value
        return summary

    def detail(self, job: Job) -> Json:
        """A JobDetail as DescribeJobs returns it: the definition merged with the overrides."""
        definition = self.definitions[job.definition_arn]
        queue_name = job.queue_arn.rsplit("/", 1)[-1]
        detail: Json = {
            **merge.merged_detail(self.described(definition), job.request, job.job_id, queue_name, job.index),
            **self.summary(job),
            "jobQueue": job.queue_arn,
            "dependsOn": list(job.request.get("dependsOn") or []),
            "tags": dict(self.tags.get(self.job_arn(job.job_id), {})),
            "attempts": [json.loads(json.dumps(a)) for a in job.attempts],
            "isTerminated": job.terminated,
            "isCancelled": job.cancelled,
        }
        if job.children:
            statuses = Counter(self.jobs[c].status for c in job.children if c in self.jobs)
            detail["arrayProperties"] = {"size": len(job.children), "statusSummary": dict(statuses)}
        elif job.index is not None:
            detail["arrayProperties"] = {"index": job.index}
        if job.exit_code is not None and job.status in FINAL and isinstance(detail.get("container"), dict):
            detail["container"] = {**detail["container"], "exitCode": job.exit_code}
        return detail


def _matches(job: Job, rule: Json, model: BatchModel) -> bool:
    values = [str(v) for v in rule.get("values") or []]
    name = rule.get("name")
    if name == "JOB_NAME":
        return any(job.name.lower().startswith(v[:-1].lower()) if v.endswith("*") else job.name.lower() == v.lower() for v in values)
    if name == "JOB_DEFINITION":
        definition = model.definitions[job.definition_arn]
        return any(v in (definition.arn, definition.name, f"{definition.name}:{definition.revision}") for v in values)
    if name == "AFTER_CREATED_AT":
        return all(job.created_at * 1000 > int(v) for v in values)
    if name == "BEFORE_CREATED_AT":
        return all(job.created_at * 1000 < int(v) for v in values)
    raise ClientException(f"Unknown filter {name}")


def _check_container_overrides(body: Json, spec: Json) -> None:
    """Every ECS/EKS container override must address one container of the job definition, as Batch checks.

    An override without a name applies to the task's (pod's) only container: with several, Batch
    cannot tell which is meant and rejects the request; so it does an override naming no
    container of the definition. A node-range override is checked against every range it covers.
    """
    scopes: list[tuple[str, Json, Json]] = [("", spec, body)]
    nodes = spec.get("nodeProperties") or {}
    for override in (body.get("nodeOverrides") or {}).get("nodePropertyOverrides") or []:
        for node_range in nodes.get("nodeRangeProperties") or []:
            if merge.covers(str(override.get("targetNodes", "")), str(node_range.get("targetNodes", "")), int(nodes.get("numNodes") or 1)):
                scopes.append((f"node range {node_range.get('targetNodes')}: ", node_range, override))
    for where, scope, overrides in scopes:
        tasks = (scope.get("ecsProperties") or {}).get("taskProperties") or []
        for index, task in enumerate((overrides.get("ecsPropertiesOverride") or {}).get("taskProperties") or []):
            defined = tasks[index].get("containers") or [] if index < len(tasks) else []
            _check_names(task.get("containers") or [], defined, f"{where}ecsPropertiesOverride task {index}", None)
        pod = (scope.get("eksProperties") or {}).get("podProperties") or {}
        pod_overrides = (overrides.get("eksPropertiesOverride") or {}).get("podProperties") or {}
        for section in ("containers", "initContainers"):
            _check_names(pod_overrides.get(section) or [], pod.get(section) or [], f"{where}eksPropertiesOverride {section}", "Default")


def _check_names(overrides: list[Json], defined: list[Json], where: str, default: str | None) -> None:
    names = [c.get("name") or default for c in defined]
    for override in overrides:
        name = override.get("name")
        if name is None and len(defined) != 1:
            raise ClientException(
                f"{where}: a container override without a name needs exactly one container in the job definition (it has {len(defined)})"
            )
        if name is not None and name not in names:
            raise ClientException(f"{where}: container {name} is not a container of the job definition")


def _environment_entries(body: Json) -> Iterator[Json]:
    """Every environment entry of a SubmitJob request, whatever its job type."""
    yield from (body.get("containerOverrides") or {}).get("environment") or []
    for node_range in (body.get("nodeOverrides") or {}).get("nodePropertyOverrides") or []:
        yield from (node_range.get("containerOverrides") or {}).get("environment") or []
    for task in (body.get("ecsPropertiesOverride") or {}).get("taskProperties") or []:
        for container in task.get("containers") or []:
            yield from container.get("environment") or []
    pod = (body.get("eksPropertiesOverride") or {}).get("podProperties") or {}
    for container in [*(pod.get("containers") or []), *(pod.get("initContainers") or [])]:
        yield from container.get("env") or []


def _copy(document: Json) -> Json:
    return dict(json.loads(json.dumps(document)))
