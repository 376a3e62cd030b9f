"""The AWS Batch adapter: every Batch call jobguard makes, with its retry rules and limits.

It knows Batch's limits (ListJobs pages, 100 ids per DescribeJobs, SubmitJob without an
idempotency token) and nothing about deploys or manifests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from botocore.exceptions import ClientError

from ..errors import AwsError
from ..manifest import ACTIVE_STATUSES
from ..pacing import Pacer, in_parallel
from ..retry import RetryPolicy, error_code, is_throttling, is_transient

DESCRIBE_BATCH = 100
LIST_PAGE = 1000
FILTERED_LIST_PAGE = 100

Json = dict[str, Any]
T = TypeVar("T")


@dataclass(frozen=True)
class Queue:
    """A job queue as DescribeJobQueues reports it."""

    name: str
    arn: str
    state: str


def _queue(queue: Json) -> Queue:
    return Queue(
        name=queue["jobQueueName"],
        arn=queue["jobQueueArn"],
        state=queue.get("state", "ENABLED"),
    )


def chunks(items: list[T], size: int) -> Iterator[list[T]]:
    """`items` in consecutive slices of at most `size`."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def is_array_child(job_id: str) -> bool:
    """Array children (`parent:index`) and multi-node children (`parent#node`) are not units of their own."""
    return ":" in job_id or "#" in job_id


class Batch:
    """The Batch calls of drain, restore and status."""

    def __init__(self, client: Any, retry: RetryPolicy, pacer: Pacer | None = None, workers: int = 1) -> None:
        self.client, self.retry, self.workers = client, retry, workers
        self.pacer = pacer or Pacer(rate=0, burst=1)
        self._definitions: dict[str, Json | None] = {}

    def _send(self, action: str, **kwargs: Any) -> Json:
        """One attempt of one call, paced: every attempt, retries included, waits its turn."""
        self.pacer.take(action)
        return dict(getattr(self.client, action)(**kwargs))

    def _call(self, action: str, **kwargs: Any) -> Json:
        """One Batch API call under the retry policy; what fails after retries is an AwsError."""
        try:
            return self.retry.call(lambda: self._send(action, **kwargs))
        except ClientError as exc:
            raise AwsError(f"{action} failed: {error_code(exc)}: {exc.response.get('Error', {}).get('Message', '')}") from exc
        except Exception as exc:
            if is_transient(exc):
                raise AwsError(f"{action} failed after retries: {error_code(exc)}") from exc
            raise

    def queue(self, name_or_arn: str) -> Queue | None:
        """The queue, or None when it does not exist."""
        answer = self._call("describe_job_queues", jobQueues=[name_or_arn])
        return next((_queue(q) for q in answer.get("jobQueues", [])), None)

    def queues_using(self, compute_environment: str) -> list[Queue]:
        """Every job queue whose compute environments include this one (by ARN or name)."""
        found: list[Queue] = []
        request: Json = {"maxResults": 100}
        while True:
            page = self._call("describe_job_queues", **request)
            for queue in page.get("jobQueues", []):
                environments = [c["computeEnvironment"] for c in queue.get("computeEnvironmentOrder", [])]
                if any(e == compute_environment or e.rsplit("/", 1)[-1] == compute_environment for e in environments):
                    found.append(_queue(queue))
            if not page.get("nextToken"):
                return found
            request = {**request, "nextToken": page["nextToken"]}

    def set_queue_state(self, queue: str, state: str) -> None:
        """Enable or disable a job queue (UpdateJobQueue)."""
        self._call("update_job_queue", jobQueue=queue, state=state)

    def active_job_ids(self, queue_arn: str, statuses: tuple[str, ...] = ACTIVE_STATUSES) -> list[str]:
        """Ids of every job in `statuses` on the queue, without array or node children."""

        def listed(status: str) -> list[str]:
            request: Json = {"jobQueue": queue_arn, "jobStatus": status, "maxResults": LIST_PAGE}
            return [
                s["jobId"]
                for s in self._list(request)
                if not is_array_child(s["jobId"]) and "index" not in (s.get("arrayProperties") or {})
            ]

        return list(dict.fromkeys(i for ids in in_parallel(listed, statuses, self.workers) for i in ids))

    def _list(self, request: Json) -> Iterator[Json]:
        while True:
            page = self._call("list_jobs", **request)
            yield from page.get("jobSummaryList", [])
            if not page.get("nextToken"):
                return
            request = {**request, "nextToken": page["nextToken"]}

    def describe_jobs(self, job_ids: Iterable[str]) -> dict[str, Json]:
        """JobDetail by job id, DESCRIBE_BATCH ids a call; ids Batch does not know are left out."""
        return self._describe(job_ids, lambda job: job)

    def statuses(self, job_ids: Iterable[str]) -> dict[str, str]:
        """Status by job id. Only the status is kept of each page: thousands of JobDetails are not."""
        return self._describe(job_ids, lambda job: str(job["status"]))

    def _describe(self, job_ids: Iterable[str], keep: Callable[[Json], T]) -> dict[str, T]:
        def page(chunk: list[str]) -> dict[str, T]:
            return {job["jobId"]: keep(job) for job in self._call("describe_jobs", jobs=chunk).get("jobs", [])}

        pages = in_parallel(page, chunks(list(dict.fromkeys(job_ids)), DESCRIBE_BATCH), self.workers)
        return {job_id: kept for found in pages for job_id, kept in found.items()}

    def job_definitions(self, arns: Iterable[str]) -> dict[str, Json | None]:
        """Job definitions by ARN (INACTIVE revisions too), cached; None for ones Batch has forgotten."""
        wanted = list(dict.fromkeys(arns))
        missing = [a for a in wanted if a not in self._definitions]
        for chunk in chunks(missing, DESCRIBE_BATCH):
            found = {
                d["jobDefinitionArn"]: d for d in self._call("describe_job_definitions", jobDefinitions=chunk).get("jobDefinitions", [])
            }
            for arn in chunk:
                self._definitions[arn] = found.get(arn)
        return {a: self._definitions[a] for a in wanted}

    def active_revisions(self, name: str) -> list[int]:
        """The ACTIVE revisions of a job definition name, newest first."""
        revisions: list[int] = []
        request: Json = {"jobDefinitionName": name, "status": "ACTIVE"}
        while True:
            page = self._call("describe_job_definitions", **request)
            revisions.extend(int(d["revision"]) for d in page.get("jobDefinitions", []) if d.get("status", "ACTIVE") == "ACTIVE")
            if not page.get("nextToken"):
                return sorted(set(revisions), reverse=True)
            request = {**request, "nextToken": page["nextToken"]}

    def terminate(self, job_id: str, reason: str) -> None:
        """TerminateJob: works in every active state and ends the job as FAILED (or cancelled)."""
        self.retry.call(lambda: self._send("terminate_job", jobId=job_id, reason=reason))

    def submit_once(self, request: Json, marker: dict[str, str], look_first: bool) -> str:
        """SubmitJob exactly once for a request whose tags include `marker`; the job's id.

        SubmitJob has no idempotency token. After an answer that leaves it unknown whether the
        job was made (a 5xx, a dropped connection), or when an earlier run may have sent it
        (`look_first`), the job is looked up by its marker tags before anything is sent again.
        Throttling proves the request was refused and is simply retried.
        """
        unsure = look_first

        def attempt() -> str:
            nonlocal unsure
            if unsure:
                found = self.find_submitted(request["jobQueue"], request["jobName"], marker)
                if found:
                    return found
            try:
                return str(self._send("submit_job", **request)["jobId"])
            except Exception as exc:
                unsure = unsure or (is_transient(exc) and not is_throttling(exc))
                raise

        return self.retry.call(attempt)

    def find_submitted(self, queue: str, job_name: str, tags: dict[str, str]) -> str | None:
        """The id of a job on `queue` named `job_name` carrying every tag in `tags`, if any.

        This is how a submission that may have been sent, but was not recorded, is found again.
        """
        request: Json = {"jobQueue": queue, "filters": [{"name": "JOB_NAME", "values": [job_name]}], "maxResults": FILTERED_LIST_PAGE}
        candidates = [s["jobId"] for s in self._list(request) if not is_array_child(s["jobId"])]
        for job_id, job in self.describe_jobs(candidates).items():
            job_tags = job.get("tags") or {}
            if all(job_tags.get(k) == v for k, v in tags.items()):
                return job_id
        return None
