"""A simulated AWS on loopback: moto as a real HTTP server, made to behave like AWS Batch.

moto without Docker finishes every job at once, leaves terminated jobs in their old status,
lists every status and array children, and describes jobs in its own shape. Here the job
actions (SubmitJob, DescribeJobs, ListJobs, TerminateJob, CancelJob) are answered by a small
faithful model instead, with queues and job definitions kept in moto. A fault layer in front
can add latency, throttle each action with a token bucket (HTTP 429, as AWS answers) and inject
errors. Used by `jobguard demo`, the tests and the benchmark; needs `jobguard[demo]`.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

Json = dict[str, Any]
ACCOUNT = "123456789012"
REGION = "us-east-1"
ACTIVE = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING")
BEFORE_START = ("SUBMITTED", "PENDING", "RUNNABLE")
JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
# Extra fields of RegisterJobDefinition that moto does not describe back.
_DEFINITION_EXTRAS = ("schedulingPriority", "nodeProperties", "ecsProperties", "propagateTags", "retryStrategy", "timeout", "tags")


class ClientException(Exception):
    """An invalid request: HTTP 400, as Batch answers it."""


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class SimJob:
    """One job as Batch keeps it: the request as sent, and its life since."""

    job_id: str
    name: str
    queue_arn: str
    definition: Json
    request: Json
    status: str
    created_at: int
    index: int | None = None
    children: list[str] = field(default_factory=list)
    started_at: int | None = None
    stopped_at: int | None = None
    reason: str | None = None
    terminated: bool = False
    cancelled: bool = False


class BatchJobs:
    """The job side of AWS Batch, faithful where jobguard depends on it."""

    def __init__(self, backend: Any, initial_status: str = "SUBMITTED") -> None:
        self.backend = backend
        self.initial_status = initial_status
        self.jobs: dict[str, SimJob] = {}
        self.definition_extras: dict[str, Json] = {}
        self.lock = threading.RLock()

    # -- the API ------------------------------------------------------------------------
    def submit_job(self, body: Json) -> Json:
        name = body.get("jobName", "")
        if not JOB_NAME.match(name):
            raise ClientException(f"Job name {name!r} is invalid")
        queue = self.backend.get_job_queue(body.get("jobQueue", ""))
        if queue is None:
            raise ClientException(f"Job queue {body.get('jobQueue')} does not exist")
        if queue.state != "ENABLED":
            raise ClientException(f"Job queue {queue.name} is not in ENABLED state")
        definition = self.definition(body.get("jobDefinition", ""))
        depends_on = body.get("dependsOn") or []
        if len(depends_on) > 20:
            raise ClientException("A job can depend on at most 20 jobs")
        with self.lock:
            for dependency in depends_on:
                if "jobId" in dependency and dependency["jobId"] not in self.jobs:
                    raise ClientException(f"Dependent job {dependency['jobId']} does not exist")
        size = (body.get("arrayProperties") or {}).get("size")
        if size is not None and not 2 <= size <= 10000:
            raise ClientException("Array size must be between 2 and 10000")
        for variable in (body.get("containerOverrides") or {}).get("environment") or []:
            if variable["name"].startswith("AWS_BATCH"):
                raise ClientException("Environment variable names beginning with AWS_BATCH are reserved")
        if len(body.get("tags") or {}) > 50:
            raise ClientException("A job can have at most 50 tags")
        if len(json.dumps(body)) > 30 * 1024:
            raise ClientException("SubmitJob request exceeds 30 KiB")
        job = self._add(str(uuid.uuid4()), name, queue.arn, definition, body, None)
        for index in range(size or 0):
            job.children.append(self._add(f"{job.job_id}:{index}", name, queue.arn, definition, body, index).job_id)
        return {"jobId": job.job_id, "jobName": name, "jobArn": self._arn(job.job_id)}

    def describe_jobs(self, body: Json) -> Json:
        ids = body.get("jobs") or []
        if len(ids) > 100:
            raise ClientException("DescribeJobs accepts at most 100 job ids")
        with self.lock:
            found = [self.jobs.get(i.rsplit("/", 1)[-1]) for i in ids]
            return {"jobs": [self.detail(j) for j in found if j is not None]}

    def list_jobs(self, body: Json) -> Json:
        filters = body.get("filters")
        limit = min(int(body.get("maxResults") or (100 if filters else 1000)), 100 if filters else 1000)
        with self.lock:
            if body.get("arrayJobId"):
                parent = self.jobs.get(body["arrayJobId"])
                candidates = [self.jobs[c] for c in parent.children] if parent else []
            elif body.get("jobQueue"):
                queue = self.backend.get_job_queue(body["jobQueue"])
                if queue is None:
                    raise ClientException(f"Job queue {body['jobQueue']} does not exist")
                candidates = [j for j in self.jobs.values() if j.queue_arn == queue.arn and j.index is None]
            else:
                raise ClientException("One of jobQueue, arrayJobId or multiNodeJobId is required")
            if filters:  # AWS ignores jobStatus when filters are given
                candidates = [j for j in candidates if all(_matches(j, f) for f in filters)]
            else:
                wanted = body.get("jobStatus") or "RUNNING"
                candidates = [j for j in candidates if j.status == wanted]
            start = int(body.get("nextToken") or 0)
            page = candidates[start : start + limit]
            answer: Json = {"jobSummaryList": [self.summary(j) for j in page]}
            if start + limit < len(candidates):
                answer["nextToken"] = str(start + limit)
            return answer

    def terminate_job(self, body: Json) -> Json:
        return self._stop(body, ACTIVE, cancel=False)

    def cancel_job(self, body: Json) -> Json:
        return self._stop(body, BEFORE_START, cancel=True)

    # -- what tests and the demo use ----------------------------------------------------
    def set_status(self, job_id: str, status: str) -> None:
        """Put a job (and its array children) in any status, as if Batch had moved it there."""
        with self.lock:
            job = self.jobs[job_id]
            for target in [job] + [self.jobs[c] for c in job.children]:
                target.status = status
                if status in ("STARTING", "RUNNING") and target.started_at is None:
                    target.started_at = _now_ms()
                if status in ("SUCCEEDED", "FAILED"):
                    target.stopped_at = _now_ms()

    def advance(self) -> None:
        """One scheduling step: every job whose dependencies allow it moves one status on."""
        order = {"SUBMITTED": "RUNNABLE", "PENDING": "RUNNABLE", "RUNNABLE": "STARTING", "STARTING": "RUNNING", "RUNNING": "SUCCEEDED"}
        with self.lock:
            for job in [j for j in self.jobs.values() if j.index is None]:
                deps = [self.jobs.get(d.get("jobId", "")) for d in job.request.get("dependsOn") or []]
                if job.status in ("SUBMITTED", "PENDING") and any(d is not None and d.status != "SUCCEEDED" for d in deps):
                    self.set_status(job.job_id, "FAILED" if any(d is not None and d.status == "FAILED" for d in deps) else "PENDING")
                elif job.status in order:
                    self.set_status(job.job_id, order[job.status])

    def definition(self, identifier: str) -> Json:
        """A job definition by ARN, name:revision, or name (latest ACTIVE), as Batch resolves it."""
        candidates = [d for d in self.backend._job_definitions.values()]
        if identifier.startswith("arn:"):
            found = [d for d in candidates if d.arn == identifier]
        elif ":" in identifier:
            name, revision = identifier.rsplit(":", 1)
            found = [d for d in candidates if d.name == name and str(d.revision) == revision]
        else:
            found = sorted((d for d in candidates if d.name == identifier and d.status == "ACTIVE"), key=lambda d: d.revision)[-1:]
        if not found or found[-1].status != "ACTIVE":
            raise ClientException(f"Job definition {identifier} does not exist or is not in ACTIVE status")
        return self.described_definition(found[-1])

    def described_definition(self, moto_definition: Any) -> Json:
        """A job definition as DescribeJobDefinitions shows it, with what moto leaves out."""
        described: Json = moto_definition.describe()
        if getattr(moto_definition, "node_properties", None):
            described["nodeProperties"] = moto_definition.node_properties
        described.update(self.definition_extras.get(described["jobDefinitionArn"], {}))
        return {k: v for k, v in described.items() if v is not None}

    def summary(self, job: SimJob) -> Json:
        """A JobSummary, as ListJobs returns it."""
        summary: Json = {
            "jobId": job.job_id,
            "jobArn": self._arn(job.job_id),
            "jobName": job.name,
            "createdAt": job.created_at,
            "status": job.status,
            "jobDefinition": job.definition["jobDefinitionArn"],
        }
        if job.index is not None:
            summary["arrayProperties"] = {"index": job.index}
        elif job.children:
            summary["arrayProperties"] = {"size": len(job.children)}
        return summary

    def detail(self, job: SimJob) -> Json:
        """A JobDetail as DescribeJobs returns it: the definition merged with the overrides."""
        definition, request = job.definition, job.request
        detail: Json = {
            **self.summary(job),
            "jobQueue": job.queue_arn,
            "dependsOn": request.get("dependsOn") or [],
            "parameters": {**(definition.get("parameters") or {}), **(request.get("parameters") or {})},
            "tags": dict(request.get("tags") or {}),
            "platformCapabilities": definition.get("platformCapabilities") or [],
            "attempts": [],
            "isTerminated": job.terminated,
            "isCancelled": job.cancelled,
        }
        for name, override in (
            ("retryStrategy", "retryStrategy"),
            ("timeout", "timeout"),
            ("propagateTags", "propagateTags"),
            ("schedulingPriority", "schedulingPriorityOverride"),
        ):
            value = request.get(override, definition.get(name))
            if value is not None:
                detail[name] = value
        if request.get("shareIdentifier"):
            detail["shareIdentifier"] = request["shareIdentifier"]
        if definition.get("containerProperties") is not None:
            detail["container"] = _merge_container(definition["containerProperties"], request.get("containerOverrides") or {}, job)
        if definition.get("nodeProperties"):
            detail["nodeProperties"] = _merge_nodes(definition["nodeProperties"], request.get("nodeOverrides") or {}, job)
        if job.children:
            statuses = Counter(self.jobs[c].status for c in job.children)
            detail["arrayProperties"] = {"size": len(job.children), "statusSummary": dict(statuses)}
        for key, value in (("startedAt", job.started_at), ("stoppedAt", job.stopped_at), ("statusReason", job.reason)):
            if value is not None:
                detail[key] = value
        return detail

    def _add(self, job_id: str, name: str, queue_arn: str, definition: Json, request: Json, index: int | None) -> SimJob:
        with self.lock:
            job = SimJob(job_id, name, queue_arn, definition, _copy(request), self.initial_status, _now_ms(), index)
            self.jobs[job_id] = job
        return job

    def _stop(self, body: Json, states: tuple[str, ...], cancel: bool) -> Json:
        if not body.get("reason"):
            raise ClientException("reason is required")
        with self.lock:
            job = self.jobs.get(body.get("jobId", ""))
            if job is None:
                raise ClientException(f"Job {body.get('jobId')} not found")
            for target in [job] + [self.jobs[c] for c in job.children]:
                if target.status in states:
                    target.status, target.reason, target.stopped_at = "FAILED", body["reason"], _now_ms()
                    target.cancelled, target.terminated = cancel, not cancel
        return {}

    def _arn(self, job_id: str) -> str:
        return f"arn:aws:batch:{REGION}:{ACCOUNT}:job/{job_id}"


def _copy(document: Json) -> Json:
    return dict(json.loads(json.dumps(document)))


def _merge_container(base: Json, overrides: Json, job: SimJob) -> Json:
    merged = _copy(base)
    if "command" in overrides:
        merged["command"] = overrides["command"]
    environment = {e["name"]: e["value"] for e in base.get("environment") or []}
    environment.update({e["name"]: e["value"] for e in overrides.get("environment") or []})
    environment.update(
        {"AWS_BATCH_JOB_ID": job.job_id, "AWS_BATCH_JQ_NAME": job.queue_arn.rsplit("/", 1)[-1], "AWS_BATCH_JOB_ATTEMPT": "1"}
    )
    merged["environment"] = [{"name": k, "value": v} for k, v in environment.items()]
    resources = {r["type"]: r["value"] for r in base.get("resourceRequirements") or []}
    resources.update({r["type"]: r["value"] for r in overrides.get("resourceRequirements") or []})
    if resources:
        merged["resourceRequirements"] = [{"type": k, "value": v} for k, v in resources.items()]
    if "instanceType" in overrides:
        merged["instanceType"] = overrides["instanceType"]
    return merged


def _merge_nodes(base: Json, overrides: Json, job: SimJob) -> Json:
    merged = _copy(base)
    if "numNodes" in overrides:
        merged["numNodes"] = overrides["numNodes"]
    by_target = {o["targetNodes"]: o.get("containerOverrides") or {} for o in overrides.get("nodePropertyOverrides") or []}
    for node_range in merged.get("nodeRangeProperties") or []:
        node_range["container"] = _merge_container(node_range.get("container") or {}, by_target.get(node_range["targetNodes"], {}), job)
    return merged


def _matches(job: SimJob, rule: Json) -> bool:
    values = rule.get("values") or []
    if rule.get("name") == "JOB_NAME":
        return any(job.name.startswith(v[:-1]) if v.endswith("*") else job.name == v for v in values)
    if rule.get("name") == "JOB_DEFINITION":
        return any(v in (job.definition["jobDefinitionArn"], job.definition["jobDefinitionName"]) for v in values)
    if rule.get("name") == "AFTER_CREATED_AT":
        return all(job.created_at > int(v) for v in values)
    if rule.get("name") == "BEFORE_CREATED_AT":
        return all(job.created_at < int(v) for v in values)
    raise ClientException(f"Unknown filter {rule.get('name')}")


# -- the HTTP side -----------------------------------------------------------------------
# (HTTP status, AWS error code); "drop": the connection is cut before AWS acts; "lost-reply": AWS
# carries the request out and the connection is cut before its answer arrives.
Fault = tuple[int, str] | str
FaultRule = Callable[[str, int], Fault | None]  # (action, how many calls of it so far) -> fault


@dataclass
class TokenBucket:
    """Allows `rate` calls a second with bursts of `burst`, like an AWS API rate limit."""

    rate: float
    burst: float
    tokens: float = 0.0
    stamp: float = 0.0

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate) if self.stamp else self.burst
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


_CONDITIONAL_WRITES = frozenset(
    {"s3:PUT", "s3:DELETE", "dynamodb:PutItem", "dynamodb:DeleteItem", "dynamodb:UpdateItem", "dynamodb:TransactWriteItems"}
)

_BATCH_ACTIONS = {
    "/v1/submitjob": "SubmitJob",
    "/v1/describejobs": "DescribeJobs",
    "/v1/listjobs": "ListJobs",
    "/v1/terminatejob": "TerminateJob",
    "/v1/canceljob": "CancelJob",
    "/v1/registerjobdefinition": "RegisterJobDefinition",
    "/v1/describejobdefinitions": "DescribeJobDefinitions",
    "/v1/describejobqueues": "DescribeJobQueues",
}


class SimulatedAWS:
    """moto on loopback with a faithful Batch job model, latency, throttling and faults.

    Use as a context manager; `endpoint` is what AWS_ENDPOINT_URL should point at.
    """

    def __init__(
        self,
        latency: float = 0.0,
        rate: float | None = None,
        burst: float | None = None,
        fault: FaultRule | None = None,
        initial_status: str = "SUBMITTED",
        after: Callable[[str, int], None] | None = None,
        port: int = 0,
    ) -> None:
        from moto.batch.models import batch_backends
        from moto.core.config import default_user_config

        default_user_config["batch"] = {"use_docker": False}
        self.batch = BatchJobs(batch_backends[ACCOUNT][REGION], initial_status)
        self.latency, self.fault, self.after = latency, fault, after
        self.rate, self.burst = rate, burst or rate
        self.buckets: dict[str, TokenBucket] = {}
        self.calls: Counter[str] = Counter()
        self.throttled: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self._count_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self.endpoint, self.port = "", port

    def __enter__(self) -> SimulatedAWS:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
        from werkzeug.serving import WSGIRequestHandler, make_server

        class QuietHandler(WSGIRequestHandler):
            def log_request(self, *args: Any, **kwargs: Any) -> None:
                pass

        self._moto = DomainDispatcherApplication(create_backend_app)
        self._server = make_server("127.0.0.1", self.port, self._app, threaded=True, request_handler=QuietHandler)
        self._server.daemon_threads = True  # type: ignore[attr-defined]
        self.endpoint = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self._reset_moto()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def env(self) -> dict[str, str]:
        """Environment variables that point boto3 (and the jobguard CLI) at this simulation."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
        }

    @contextmanager
    def environment(self) -> Iterator[None]:
        """Point this process's boto3 at the simulation for the duration."""
        saved = {k: os.environ.get(k) for k in self.env()}
        os.environ.update(self.env())
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def _reset_moto(self) -> None:
        import urllib.request

        from moto.batch.models import batch_backends

        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")).read()

        self.batch.backend = batch_backends[ACCOUNT][REGION]

    # -- WSGI ---------------------------------------------------------------------------
    def _app(self, environ: Json, start_response: Any) -> Any:
        action = self._action(environ)
        answer = self._answer(environ, start_response, action)
        if self.after:
            self.after(action, self.calls[action])
        return answer

    def _answer(self, environ: Json, start_response: Any, action: str) -> Any:
        with self._count_lock:
            self.calls[action] += 1
            count = self.calls[action]
        if self.latency:
            time.sleep(self.latency)
        if self.rate and action.startswith("batch:") and not self._bucket(action).take():
            with self._count_lock:
                self.throttled[action] += 1
            return _error(start_response, 429, "TooManyRequestsException", "Too Many Requests", xml=False)
        fault = self.fault(action, count) if self.fault else None
        if fault is not None:
            with self._count_lock:
                self.faults[action] += 1
            if isinstance(fault, str):  # "drop" or "lost-reply"
                if fault == "lost-reply":  # AWS carries the request out; its answer never arrives
                    b"".join(self._handle(environ, start_response=lambda *a, **k: None, action=action))
                _cut(environ)
                return []
            status, code = fault
            return _error(start_response, status, code, "injected fault", xml=not action.startswith(("batch:", "dynamodb:")))
        if action in _CONDITIONAL_WRITES:
            # moto checks If-Match / If-None-Match and ConditionExpression without a lock; AWS
            # applies each conditional write atomically, so serialise them here.
            with self._write_lock:
                return [b"".join(self._handle(environ, start_response, action))]
        return self._handle(environ, start_response, action)

    def _handle(self, environ: Json, start_response: Any, action: str) -> Any:
        path = environ.get("PATH_INFO", "")
        handler = getattr(self.batch, _snake(_BATCH_ACTIONS.get(path, "")), None) if action.startswith("batch:") else None
        if handler is not None and path not in ("/v1/registerjobdefinition", "/v1/describejobdefinitions", "/v1/describejobqueues"):
            body = json.loads(environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)) or b"{}")
            try:
                return _json(start_response, 200, handler(body))
            except ClientException as exc:
                return _error(start_response, 400, "ClientException", str(exc), xml=False)
        if path in ("/v1/registerjobdefinition", "/v1/describejobdefinitions"):
            return self._definitions(environ, start_response, path)
        return self._moto(environ, start_response)

    def _definitions(self, environ: Json, start_response: Any, path: str) -> Any:
        """Pass job definitions to moto, keeping and adding back the fields moto drops."""
        raw = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)) or b"{}"
        request = json.loads(raw)
        import io

        environ["wsgi.input"] = io.BytesIO(raw)
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured.update(status=status, headers=headers)
            return lambda data: None

        body = json.loads(b"".join(self._moto(environ, capture)) or b"{}")
        if path == "/v1/registerjobdefinition" and "jobDefinitionArn" in body:
            self.batch.definition_extras[body["jobDefinitionArn"]] = {k: request[k] for k in _DEFINITION_EXTRAS if k in request}
        if path == "/v1/describejobdefinitions":
            definitions = [
                self.batch.described_definition(d)
                for d in self.batch.backend._job_definitions.values()
                if d.arn in {j["jobDefinitionArn"] for j in body.get("jobDefinitions", [])}
            ]
            body["jobDefinitions"] = definitions
        headers = [(k, v) for k, v in captured["headers"] if k.lower() != "content-length"]
        payload = json.dumps(body).encode()
        start_response(captured["status"], [*headers, ("Content-Length", str(len(payload)))])
        return [payload]

    def _bucket(self, action: str) -> TokenBucket:
        with self._count_lock:
            if action not in self.buckets:
                self.buckets[action] = TokenBucket(float(self.rate or 0), float(self.burst or 0))
            return self.buckets[action]

    @staticmethod
    def _action(environ: Json) -> str:
        scope = re.search(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/", environ.get("HTTP_AUTHORIZATION", ""))
        service = scope.group(1) if scope else "unknown"
        if service == "batch":
            path = environ.get("PATH_INFO", "")
            return f"batch:{_BATCH_ACTIONS.get(path, path.rsplit('/', 1)[-1])}"
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        return f"{service}:{target.rsplit('.', 1)[-1] if target else environ.get('REQUEST_METHOD', '')}"


def _cut(environ: Json) -> None:
    """Cut the client's connection, as a network failure would."""
    import socket

    connection = environ["werkzeug.socket"]
    with suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def _json(start_response: Any, status: int, body: Json) -> list[bytes]:
    payload = json.dumps(body).encode()
    start_response(
        f"{status} {'OK' if status == 200 else 'Error'}", [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
    )
    return [payload]


def _error(start_response: Any, status: int, code: str, message: str, xml: bool) -> list[bytes]:
    """An AWS error answer: JSON for JSON protocols, XML for query and REST-XML ones (S3, STS)."""
    if xml:
        payload = f"<ErrorResponse><Error><Code>{code}</Code><Message>{message}</Message></Error></ErrorResponse>".encode()
        headers = [("Content-Type", "text/xml")]
    else:
        payload = json.dumps({"__type": code, "message": message}).encode()
        headers = [("Content-Type", "application/json"), ("x-amzn-ErrorType", code)]
    start_response(f"{status} Error", [*headers, ("Content-Length", str(len(payload)))])
    return [payload]


class Seeder:
    """Builds the Batch world of a simulation through its API: queues, definitions, jobs."""

    def __init__(self, aws: SimulatedAWS) -> None:
        import boto3

        self.aws = aws
        credentials = {k: v for k, v in aws.env().items() if k.startswith("AWS_") and "REGION" not in k and k != "AWS_ENDPOINT_URL"}
        self.session = boto3.session.Session(
            aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=credentials["AWS_SESSION_TOKEN"],
            region_name=REGION,
        )
        self.batch = self.client("batch")
        self._service_role = ""

    def client(self, service: str) -> Any:
        """A boto3 client for the simulation."""
        return self.session.client(service, endpoint_url=self.aws.endpoint)  # type: ignore[call-overload]

    def queue(self, name: str, state: str = "ENABLED") -> str:
        """A job queue on its own unmanaged compute environment; its ARN."""
        if not self._service_role:
            iam = self.client("iam")
            document = json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Principal": {"Service": "batch.amazonaws.com"}, "Action": "sts:AssumeRole"}],
                }
            )
            self._service_role = iam.create_role(RoleName="batch-service", AssumeRolePolicyDocument=document)["Role"]["Arn"]
        environment = self.batch.create_compute_environment(
            computeEnvironmentName=f"{name}-ce", type="UNMANAGED", serviceRole=self._service_role
        )
        answer = self.batch.create_job_queue(
            jobQueueName=name,
            state=state,
            priority=1,
            computeEnvironmentOrder=[{"order": 1, "computeEnvironment": environment["computeEnvironmentArn"]}],
        )
        return str(answer["jobQueueArn"])

    def definition(self, name: str, **properties: Any) -> str:
        """Register a revision of a container job definition; its ARN. `properties` override the defaults."""
        request: Json = {
            "jobDefinitionName": name,
            "type": "container",
            "containerProperties": {
                "image": "busybox",
                "command": ["echo", "hello"],
                "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "512"}],
            },
            **properties,
        }
        return str(self.batch.register_job_definition(**request)["jobDefinitionArn"])

    def job(self, status: str = "RUNNING", **request: Any) -> str:
        """Submit a job through the API and put it in `status`; its id."""
        job_id = str(self.batch.submit_job(**request)["jobId"])
        self.aws.batch.set_status(job_id, status)
        return job_id


def main(argv: list[str] | None = None) -> None:
    """Serve a simulated AWS on a fixed port until interrupted, with a queue of running jobs.

    `python -m jobguard.simulated_aws --port 5000 --queue work --jobs 3`: for trying the action
    or the CLI against something that behaves like AWS Batch.
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python -m jobguard.simulated_aws", description=main.__doc__)
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--queue", action="append", default=[], help="create this queue with running jobs")
    parser.add_argument("--jobs", type=int, default=3, help="running jobs per queue")
    args = parser.parse_args(argv)
    with SimulatedAWS(port=args.port) as aws:
        seed = Seeder(aws)
        if args.queue:
            seed.definition("demo-job")
        for queue in args.queue:
            seed.queue(queue)
            for index in range(args.jobs):
                seed.job(jobName=f"{queue}-job-{index}", jobQueue=queue, jobDefinition="demo-job")
        print(f"simulated AWS on {aws.endpoint} (account {ACCOUNT}, region {REGION})", flush=True)
        with suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
