"""The AWS Batch adapter: every Batch call jobguard makes, with Batch's limits and failure modes.

It knows Batch (ListJobs pages and statuses, 100 ids per DescribeJobs, SubmitJob without an
idempotency token, asynchronous TerminateJob, TerminateJobs 50 ids a call) and nothing about
deploys or manifests.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from ..errors import JobCallError, one_line
from .aws import Aws, chunks
from .retry import error_code, error_message, is_throttling, is_transient, is_unknown_operation

DESCRIBE_BATCH = 100
STOP_PAGE = 50  # job ids per TerminateJobs call, Batch's maximum
PROBE_PAGES = 8  # TerminateJobs calls sent at once before it is known whether the endpoint knows them
# Per-job error codes of a TerminateJobs answer that Batch says to retry.
RETRY_PER_JOB = frozenset({"ThrottlingException", "ServerException"})
LIST_PAGE = 1000
FILTERED_LIST_PAGE = 100
# Batch's lifecycle: listing in this order, a job that moves on between two listings is listed again later.
LIFECYCLE = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING")
FINAL = ("SUCCEEDED", "FAILED")

Json = dict[str, Any]
T = TypeVar("T")


@dataclass(frozen=True)
class Queue:
    """A job queue as DescribeJobQueues reports it."""

    name: str
    arn: str
    state: str
    status: str = "VALID"
    fair_share: bool = False
    compute_environments: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class JobState:
    """What Batch says of a job now (kept for every job a command looks at: 100 000 of them, so its strings are shared)."""

    status: str
    stopped_by_request: bool = False  # isTerminated or isCancelled: it ended because it was asked to
    reason: str = ""
    children_active: bool = False  # an array parent with children queued or running

    @property
    def active(self) -> bool:
        """Still in the queue or running."""
        return self.status in LIFECYCLE

    @property
    def may_run(self) -> bool:
        """Running, or able to run even though it was asked to stop. A PENDING job asked to stop is
        cancelled once its dependencies complete and never starts; but an array parent stays PENDING
        while its children run (it is never RUNNING itself), so it may run until they have ended."""
        return self.active and (self.status != "PENDING" or self.children_active)


def _queue(queue: Json) -> Queue:
    return Queue(
        name=str(queue["jobQueueName"]),
        arn=str(queue["jobQueueArn"]),
        state=str(queue.get("state", "ENABLED")),
        status=str(queue.get("status", "VALID")),
        fair_share=bool(queue.get("schedulingPolicyArn")),
        compute_environments=tuple(str(c["computeEnvironment"]) for c in queue.get("computeEnvironmentOrder") or []),
    )


def _state(job: Json) -> JobState:
    return JobState(
        status=sys.intern(str(job["status"])),
        stopped_by_request=bool(job.get("isTerminated") or job.get("isCancelled")),
        reason=sys.intern(one_line(str(job.get("statusReason") or ""), 200)),
        children_active=children_in(job, ("SUBMITTED", "RUNNABLE", "STARTING", "RUNNING")),
    )


def children_in(job: Json, statuses: tuple[str, ...]) -> bool:
    """Whether an array parent has children in any of `statuses` (its statusSummary); False for other jobs."""
    summary = (job.get("arrayProperties") or {}).get("statusSummary") or {}
    return any(isinstance(summary.get(s), int) and summary[s] > 0 for s in statuses)


def is_child(job_id: str) -> bool:
    """Array children (`parent:index`) and multi-node children (`parent#node`) are not units of their own."""
    return ":" in job_id or "#" in job_id


class Batch:
    """The Batch calls of drain, restore and status."""

    def __init__(self, aws: Aws, account: str) -> None:
        self.aws, self.account = aws, account
        self._definitions: dict[str, Json | None] = {}
        self._bulk_stop: bool | None = None  # whether the endpoint knows TerminateJobs; None until a call tells

    def _call(self, action: str, what: str, **request: Any) -> Json:
        return self.aws.call("batch", action, what, paced=True, **request)

    # -- queues ----------------------------------------------------------------------------
    def queue(self, name_or_arn: str) -> Queue | None:
        """The queue, or None when it does not exist."""
        answer = self._call("describe_job_queues", f"describe job queue {name_or_arn}", jobQueues=[name_or_arn])
        return next((_queue(q) for q in answer.get("jobQueues", [])), None)

    def queues_named(self, names: Iterable[str]) -> dict[str, Queue]:
        """The queues of these names (or ARNs) that exist, by name: one call per 100."""
        found: dict[str, Queue] = {}
        for chunk in chunks(list(dict.fromkeys(names)), DESCRIBE_BATCH):
            answer = self._call("describe_job_queues", f"describe {len(chunk)} job queues", jobQueues=chunk)
            found.update((queue.name, queue) for queue in map(_queue, answer.get("jobQueues", [])))
        return found

    def queues(self) -> list[Queue]:
        """Every job queue of the account and region."""
        found: list[Queue] = []
        request: Json = {"maxResults": 100}
        while True:
            page = self._call("describe_job_queues", "list job queues", **request)
            found += [_queue(q) for q in page.get("jobQueues", [])]
            if not page.get("nextToken"):
                return found
            request = {**request, "nextToken": page["nextToken"]}

    def set_queue_state(self, queue: str, state: str) -> None:
        """Enable or disable a job queue (UpdateJobQueue)."""
        self._call("update_job_queue", f"set job queue {queue} {state}", jobQueue=queue, state=state)

    # -- jobs ------------------------------------------------------------------------------
    def list_jobs(self, queue_arn: str, status: str) -> Iterator[Json]:
        """Summaries of the queue's jobs in one status, array and node children left out, a page at a time as they
        are iterated (a queue may list 100 000 jobs: about 1 KB of Python objects each, never all held at once)."""
        request: Json = {"jobQueue": queue_arn, "jobStatus": status, "maxResults": LIST_PAGE}
        return (s for s in self._pages(request, f"list {status} jobs of {queue_arn.rsplit('/', 1)[-1]}") if not _listed_child(s))

    def list_children(self, array_job_id: str, status: str) -> list[int]:
        """Indexes of an array job's children in one status."""
        request: Json = {"arrayJobId": array_job_id, "jobStatus": status, "maxResults": LIST_PAGE}
        summaries = self._pages(request, f"list {status} children of array job {array_job_id}")
        return sorted(int((s.get("arrayProperties") or {}).get("index", -1)) for s in summaries)

    def list_named(self, queue: str, job_name: str) -> list[Json]:
        """Summaries of every job on `queue` named `job_name` (any status Batch still knows)."""
        request: Json = {"jobQueue": queue, "filters": [{"name": "JOB_NAME", "values": [job_name]}], "maxResults": FILTERED_LIST_PAGE}
        return [s for s in self._pages(request, f"look up jobs named {job_name}") if not _listed_child(s) and s.get("jobName") == job_name]

    def list_created_after(self, queue: str, after_ms: int) -> list[Json]:
        """Summaries of every job created on `queue` (name or ARN) after `after_ms` (Batch's createdAt, ms
        since the epoch), in any status Batch still knows; array and node children left out. One call a
        page for every status (with a filter, ListJobs ignores jobStatus)."""
        request: Json = {
            "jobQueue": queue,
            "filters": [{"name": "AFTER_CREATED_AT", "values": [str(after_ms)]}],
            "maxResults": FILTERED_LIST_PAGE,
        }
        return [s for s in self._pages(request, f"list new jobs of {queue.rsplit('/', 1)[-1]}") if not _listed_child(s)]

    def _pages(self, request: Json, what: str) -> Iterator[Json]:
        while True:
            page = self._call("list_jobs", what, **request)
            yield from page.get("jobSummaryList", [])
            if not page.get("nextToken"):
                return
            request = {**request, "nextToken": page["nextToken"]}

    def describe(self, job_ids: Iterable[str]) -> dict[str, Json]:
        """JobDetail by job id, DESCRIBE_BATCH ids a call; ids Batch does not know (or forgot) are left out."""
        return self._describe(job_ids, lambda job: job)

    def states(self, job_ids: Iterable[str]) -> dict[str, JobState]:
        """What Batch says of each job now; only that is kept of each page (not thousands of JobDetails)."""
        return self._describe(job_ids, _state)

    def _describe(self, job_ids: Iterable[str], keep: Callable[[Json], T]) -> dict[str, T]:
        def page(chunk: list[str]) -> dict[str, T]:
            answer = self._call("describe_jobs", f"describe {len(chunk)} jobs", jobs=chunk)
            asked = {job_id: job_id for job_id in chunk}
            kept: dict[str, T] = {}
            for job in answer.get("jobs", []):
                # The caller's id strings, not one more copy of each from the answer: drain keeps 100 000 of them.
                job["jobId"] = job_id = asked.get(str(job["jobId"]), str(job["jobId"]))
                kept[job_id] = keep(job)
            return kept

        pages = self.aws.parallel(page, chunks(list(dict.fromkeys(job_ids)), DESCRIBE_BATCH))
        return {job_id: kept for found in pages for job_id, kept in found.items()}

    def terminate(self, job_id: str, reason: str) -> None:
        """TerminateJob: asynchronous; the job ends later. Retried safely (terminating twice is harmless).

        `uncertain` when ANY try may have been carried out: a last try throttled proves only that one refused."""
        tries = _Tries()
        try:
            self.aws.attempts(
                "batch", "TerminateJob", tries.noted(lambda: self.aws.send("batch", "terminate_job", True, jobId=job_id, reason=reason))
            )
        except (ClientError, BotoCoreError, OSError) as exc:
            raise JobCallError(f"TerminateJob failed: {_described(exc)}", error_code(exc), uncertain=tries.maybe_done) from None

    def terminate_many(self, jobs: Mapping[str, str], reason: str) -> dict[str, JobCallError]:
        """Stop every job of `jobs` (job id -> its queue's name); asynchronous, as TerminateJob.

        TerminateJobs, STOP_PAGE ids of one queue a call (Batch describes it as stopping "jobs in a
        job queue"), its answer read job by job: per-job throttling and server errors are retried,
        other per-job errors returned. A call refused whole (4xx) is sent again one job at a time, so
        that each job gets its own answer; an endpoint that does not know TerminateJobs (moto, an
        older API) is found out by the first calls and gets TerminateJob per job for the rest of the run.
        Returns the jobs not (or not surely) asked to stop, each with its error; `uncertain` on an
        error that may have been carried out.
        """
        pages = [page for ids in _by_queue(jobs).values() for page in chunks(ids, STOP_PAGE)]
        failed: dict[str, JobCallError] = {}
        one_by_one: list[str] = []
        while pages and self._bulk_stop is not False:
            # While it is not known whether the endpoint knows TerminateJobs, a few calls at once find out
            # (not all: each one an older endpoint refuses is a call wasted), then the rest go at once.
            wave, pages = (pages[:PROBE_PAGES], pages[PROBE_PAGES:]) if self._bulk_stop is None else (pages, [])
            for refused, again in self.aws.parallel(lambda page: self._terminate_page(page, reason), wave):
                failed.update(refused)
                one_by_one += again
        one_by_one += [job_id for page in pages for job_id in page]

        def one(job_id: str) -> JobCallError | None:
            try:
                self.terminate(job_id, reason)
            except JobCallError as exc:
                return exc
            return None

        for job_id, error in zip(one_by_one, self.aws.parallel(one, one_by_one), strict=True):
            if error is not None:
                failed[job_id] = error
        return failed

    def _terminate_page(self, page: list[str], reason: str) -> tuple[dict[str, JobCallError], list[str]]:
        """One TerminateJobs call (retried as it allows): the jobs it failed, and those to send one by one."""
        remaining = list(page)
        failed: dict[str, JobCallError] = {}
        maybe_done: set[str] = set()  # jobs a try may have stopped (a server error, no answer): never "left running"

        def attempt() -> None:
            nonlocal remaining
            tries = _Tries()
            try:
                answer = tries.noted(lambda: self.aws.send("batch", "terminate_jobs", True, jobs=remaining, reason=reason))()
            finally:
                if tries.maybe_done:
                    maybe_done.update(remaining)
            self._bulk_stop = True
            answered = {str(j) for j in answer.get("successful") or []}
            again: dict[str, tuple[str, str]] = {}
            for error in answer.get("errors") or []:
                job_id, code = str(error.get("job", "")), str(error.get("code", ""))
                answered.add(job_id)
                described = f"{code}: {one_line(str(error.get('message', '')))}".rstrip(": ")
                if code in RETRY_PER_JOB:
                    again[job_id] = (code, described)
                    if code != "ThrottlingException":
                        maybe_done.add(job_id)
                elif job_id in remaining:
                    failed[job_id] = JobCallError(f"TerminateJobs refused it: {described}", code)
            for job_id in remaining:
                if job_id not in answered:  # neither accepted nor refused: the wait for the stops will tell
                    failed[job_id] = JobCallError("TerminateJobs answered nothing about it", "NoAnswer", uncertain=True)
            remaining = [j for j in remaining if j in again]
            if remaining:
                raise _RetryJobs({j: again[j] for j in remaining})

        try:
            self.aws.attempts("batch", "TerminateJobs", attempt, _bulk_retryable)
        except _RetryJobs as exc:
            for job_id, (code, described) in exc.errors.items():  # a ServerException may have been carried out
                failed[job_id] = JobCallError(f"TerminateJobs: {described}", code, uncertain=job_id in maybe_done)
        except ClientError as exc:
            if is_unknown_operation(exc) and not is_throttling(exc):
                if self._bulk_stop is None:
                    self._bulk_stop = False
                return failed, remaining
            if not is_transient(
                exc
            ):  # refused whole: TerminateJob answers each job (a job an earlier try may have stopped: the wait tells)
                self._failed_whole(failed, [j for j in remaining if j in maybe_done], exc, maybe_done)
                return failed, [j for j in remaining if j not in maybe_done]
            self._failed_whole(failed, remaining, exc, maybe_done)
        except (BotoCoreError, OSError) as exc:
            self._failed_whole(failed, remaining, exc, maybe_done)
        return failed, []

    @staticmethod
    def _failed_whole(failed: dict[str, JobCallError], job_ids: list[str], exc: BaseException, maybe_done: set[str]) -> None:
        for job_id in job_ids:
            uncertain = _maybe_done(exc) or job_id in maybe_done
            failed[job_id] = JobCallError(f"TerminateJobs failed: {_described(exc)}", error_code(exc), uncertain=uncertain)

    def submit(self, request: Json) -> str:
        """SubmitJob; the new job's id.

        SubmitJob has no idempotency token, so only throttling (which proves the request was
        refused) is retried here. An error that leaves it unknown whether the job was made (a
        5xx, a dropped connection) raises JobCallError with `uncertain`: the caller looks for the
        job before it ever sends the request again.
        """
        try:
            answer = self.aws.attempts("batch", "SubmitJob", lambda: self.aws.send("batch", "submit_job", True, **request), is_throttling)
        except (ClientError, BotoCoreError, OSError) as exc:
            raise JobCallError(
                f"SubmitJob failed: {_described(exc)}", error_code(exc), uncertain=is_transient(exc) or isinstance(exc, OSError)
            ) from None
        return str(answer["jobId"])

    # -- job definitions -------------------------------------------------------------------
    def job_definitions(self, arns: Iterable[str]) -> dict[str, Json | None]:
        """Job definitions by ARN (INACTIVE revisions too), cached; None for ones Batch does not know."""
        wanted = list(dict.fromkeys(arns))
        missing = [a for a in wanted if a not in self._definitions]
        for chunk in chunks(missing, DESCRIBE_BATCH):
            answer = self._call("describe_job_definitions", f"describe {len(chunk)} job definitions", jobDefinitions=chunk)
            found = {str(d["jobDefinitionArn"]): d for d in answer.get("jobDefinitions", [])}
            for arn in chunk:
                self._definitions[arn] = found.get(arn)
        return {a: self._definitions[a] for a in wanted}

    def active_revisions(self, name: str) -> list[int]:
        """The ACTIVE revisions of a job definition name, newest first."""
        revisions: list[int] = []
        request: Json = {"jobDefinitionName": name, "status": "ACTIVE"}
        while True:
            page = self._call("describe_job_definitions", f"describe job definition {name}", **request)
            revisions += [int(d["revision"]) for d in page.get("jobDefinitions", []) if d.get("status", "ACTIVE") == "ACTIVE"]
            if not page.get("nextToken"):
                return sorted(set(revisions), reverse=True)
            request = {**request, "nextToken": page["nextToken"]}

    def definition(self, name: str, revision: int) -> Json | None:
        """One revision, described (cached)."""
        arn = self.definition_arn(name, revision)
        return self.job_definitions([arn])[arn]

    def definition_arn(self, name: str, revision: int) -> str:
        """The ARN of name:revision in this account and region."""
        return f"arn:aws:batch:{self.aws.region}:{self.account}:job-definition/{name}:{revision}"


class _Tries:
    """Whether any try of a stop call may have been carried out (a server error, no answer): then the
    call's last error, even a throttling that proves its own try refused, does not prove the job runs on."""

    def __init__(self) -> None:
        self.maybe_done = False

    def noted(self, send: Callable[[], T]) -> Callable[[], T]:
        def once() -> T:
            try:
                return send()
            except (ClientError, BotoCoreError, OSError) as exc:
                self.maybe_done = self.maybe_done or _maybe_done(exc)
                raise

        return once


class _RetryJobs(Exception):
    """Jobs a TerminateJobs call answered with an error Batch says to retry: sent again, alone."""

    def __init__(self, errors: dict[str, tuple[str, str]]) -> None:
        codes = ", ".join(sorted({code for code, _ in errors.values()}))
        super().__init__(f"{codes} for {len(errors)} jobs")
        self.errors = errors
        self.code = str(self)  # what the line about backing off names


def _maybe_done(exc: BaseException) -> bool:
    """Whether a stop call that failed so may still have been carried out: no answer, or a server error
    (a lost reply looks the same). Throttling and other refusals prove it was not."""
    if isinstance(exc, ClientError):
        return not is_throttling(exc) and is_transient(exc)
    return True


def _bulk_retryable(exc: BaseException) -> bool:
    return isinstance(exc, _RetryJobs) or (is_transient(exc) and (is_throttling(exc) or not is_unknown_operation(exc)))


def _by_queue(jobs: Mapping[str, str]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for job_id, queue in jobs.items():
        grouped.setdefault(queue, []).append(job_id)
    return grouped


def _listed_child(summary: Json) -> bool:
    return is_child(str(summary["jobId"])) or "index" in (summary.get("arrayProperties") or {})


def _described(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return f"{error_code(exc)}: {one_line(error_message(exc))}".rstrip(": ")
    return f"{type(exc).__name__} (no answer from AWS)"
