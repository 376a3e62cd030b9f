"""A simulated AWS on loopback: moto as a real HTTP server, with AWS Batch's job side answered by
`BatchModel` (moto finishes every job at once and keeps job definitions loosely), and its compute
environment calls completed by it (service-linked role, updatePolicy, in-place updates).

In front of both sits a layer that does what the real network and AWS do to a client: latency,
a rate limit per Batch action (HTTP 429, as AWS answers), injected faults (an error answer, a
dropped connection, a reply lost after AWS acted), and a hook after every call (tests kill or
pause a process there). It also records what jobguard's own calls touched, for the IAM policy
check, and the events published to EventBridge (`refuse_event` makes PutEvents refuse single entries).
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

from .batch import BatchModel, ClientException, StopRule, Timing
from .recording import Call, calls_of

Json = dict[str, Any]
ACCOUNT = "123456789012"
REGION = "us-east-1"

# (HTTP status, AWS error code); "drop": the connection is cut before AWS acts; "lost-reply": AWS
# carries the request out and the connection is cut before its answer arrives.
Fault = tuple[int, str] | str
FaultRule = Callable[[str, int], Fault | None]  # (action, how many calls of it so far) -> fault or None
AfterHook = Callable[[str, int], None]  # (action, how many calls of it so far), after the answer is sent
# An EventBridge PutEvents entry -> (ErrorCode, ErrorMessage) to refuse it alone, as a partly failed batch does; None accepts it.
EventRule = Callable[[Json], tuple[str, str] | None]
# A DynamoDB BatchGetItem key -> True to leave it unprocessed, as DynamoDB does when a table's read capacity is exceeded.
KeyRule = Callable[[Json], bool]

_MODEL_PATHS = {
    "/v1/submitjob": "submit_job",
    "/v1/describejobs": "describe_jobs",
    "/v1/listjobs": "list_jobs",
    "/v1/terminatejob": "terminate_job",
    "/v1/canceljob": "cancel_job",
    "/v1/registerjobdefinition": "register_job_definition",
    "/v1/deregisterjobdefinition": "deregister_job_definition",
    "/v1/describejobdefinitions": "describe_job_definitions",
}
# The bulk stop calls: answered by the model as real Batch answers them, or (bulk_stop False) passed
# on to moto, which does not know them (it answers HTTP 500), as an older endpoint would not.
_BULK_STOP_PATHS = {"/v1/terminatejobs": "terminate_jobs", "/v1/canceljobs": "cancel_jobs"}
# Compute environment calls moto answers, completed by the model (BatchModel.compute_environment_answer).
_COMPUTE_ENVIRONMENT_PATHS = {
    "/v1/createcomputeenvironment": "CreateComputeEnvironment",
    "/v1/updatecomputeenvironment": "UpdateComputeEnvironment",
    "/v1/deletecomputeenvironment": "DeleteComputeEnvironment",
    "/v1/describecomputeenvironments": "DescribeComputeEnvironments",
}
# Every call that asks Batch to stop jobs, one at a time or in bulk.
STOP_ACTIONS = frozenset({"batch:TerminateJob", "batch:TerminateJobs", "batch:CancelJob", "batch:CancelJobs"})
_CONDITIONAL_WRITES = frozenset(
    {"s3:PutObject", "s3:DeleteObject", "dynamodb:PutItem", "dynamodb:DeleteItem", "dynamodb:UpdateItem", "dynamodb:TransactWriteItems"}
)


@dataclass
class RateLimit:
    """An AWS API rate limit: `rate` calls a second, bursts of `burst`; says whether a call may pass."""

    rate: float
    burst: float
    tokens: float = 0.0
    stamp: float = 0.0

    def admit(self) -> bool:
        """True when the call is within the limit (and uses a token), False when AWS would throttle it."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate) if self.stamp else self.burst
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class SimulatedAWS:
    """moto on loopback with a real-world Batch job model, latency, throttling and faults.

    Use as a context manager; `endpoint` is what AWS_ENDPOINT_URL should point at, `env()` the
    whole environment a client needs. `reset()` empties it for the next test.
    """

    def __init__(self, timing: Timing | None = None, port: int = 0) -> None:
        from moto.core.config import default_user_config

        default_user_config["batch"] = {"use_docker": False}
        self.port, self.endpoint = port, ""
        self._count_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self.default_timing = timing or Timing()
        self._clear()

    def _clear(self) -> None:
        from moto.batch.models import batch_backends

        self.batch = BatchModel(batch_backends[ACCOUNT][REGION], ACCOUNT, REGION, self.default_timing)
        self.latency = 0.0
        self.rate: float | None = None
        self.burst: float | None = None
        self.fault: FaultRule | None = None
        self.after: AfterHook | None = None
        self.refuse_event: EventRule | None = None
        self.unprocessed: KeyRule | None = None
        self.bulk_stop = True  # False: TerminateJobs / CancelJobs unknown, as in moto
        self.refuse_stop: StopRule | None = None  # a per-job error in a TerminateJobs / CancelJobs answer
        self.limits: dict[str, RateLimit] = {}
        self.calls: Counter[str] = Counter()
        self.throttled: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.recorded: list[Call] = []
        self.published: list[Json] = []

    @property
    def stop_calls(self) -> int:
        """Calls that asked Batch to stop jobs (TerminateJob(s), CancelJob(s)), whatever their answer."""
        with self._count_lock:
            return sum(self.calls[a] for a in STOP_ACTIONS)

    def __enter__(self) -> SimulatedAWS:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
        from werkzeug.serving import WSGIRequestHandler, make_server

        from . import dynamodb

        dynamodb.install()  # a transaction's rollback copy costs what it touches, not the whole table

        class QuietHandler(WSGIRequestHandler):
            def log_request(self, *args: Any, **kwargs: Any) -> None:
                pass

            def send_header(self, keyword: str, value: str) -> None:
                if keyword.lower() == "date":  # the answer's own Date (Batch's clock) replaces the server's
                    kept = [h for h in getattr(self, "_headers_buffer", []) if not h.lower().startswith(b"date:")]
                    self._headers_buffer = kept
                super().send_header(keyword, value)

        self._moto = DomainDispatcherApplication(create_backend_app)
        self._server = make_server("127.0.0.1", self.port, self._app, threaded=True, request_handler=QuietHandler)
        self._server.daemon_threads = True  # type: ignore[attr-defined]
        self.endpoint = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.reset()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self, timing: Timing | None = None) -> None:
        """Forget every resource, job, hook and count: a new account for the next test."""
        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")).read()
        if timing is not None:
            self.default_timing = timing
        self._clear()

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

    # -- WSGI ------------------------------------------------------------------------------
    def _app(self, environ: Json, start_response: Any) -> Any:
        raw = _body(environ)
        if raw is None:
            # The client went away mid-body (killed or paused by a test): AWS never gets a whole
            # request, so it neither carries it out nor authorises it, and it is not a call.
            _cut(environ)
            return []
        environ["wsgi.input"], environ["CONTENT_LENGTH"] = io.BytesIO(raw), str(len(raw))  # handed on whole, dechunked
        environ.pop("wsgi.input_terminated", None)
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        action = _action(environ, raw)
        with self._count_lock:
            self.calls[action] += 1
            count = self.calls[action]
        answer = self._answer(environ, self._dated(action, start_response), action, count, raw)
        if self.after:
            self.after(action, count)
        return answer

    def _dated(self, action: str, start_response: Any) -> Any:
        """Batch's answers carry Batch's clock in their Date header, as AWS's do: the one createdAt and
        stoppedAt are on (a test that moves Batch's clock moves its Date too; the runner's stays)."""
        if not action.startswith("batch:"):
            return start_response

        def dated(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            headers = [(k, v) for k, v in headers if k.lower() != "date"] + [("Date", formatdate(self.batch.now(), usegmt=True))]
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        return dated

    def _answer(self, environ: Json, start_response: Any, action: str, count: int, raw: bytes) -> Any:
        if self.latency:
            time.sleep(self.latency)
        if self.rate and action.startswith("batch:") and not self._limit(action).admit():
            with self._count_lock:
                self.throttled[action] += 1
            return _error(start_response, 429, "TooManyRequestsException", "Too Many Requests", xml=False)
        fault = self.fault(action, count) if self.fault else None
        if fault is not None:
            with self._count_lock:
                self.faults[action] += 1
            if isinstance(fault, str):
                if fault == "lost-reply":  # AWS carries the request out; its answer never arrives
                    environ["wsgi.input"] = io.BytesIO(raw)
                    b"".join(self._handle(environ, lambda *a, **k: None, action, raw))
                _cut(environ)
                return []
            status, code = fault
            return _error(
                start_response, status, code, "injected fault", xml=not action.startswith(("batch:", "dynamodb:", "kms:", "events:"))
            )
        if action in _CONDITIONAL_WRITES:
            # moto checks If-Match / If-None-Match and ConditionExpression without a lock; AWS
            # applies each conditional write atomically, so serialise them here.
            with self._write_lock:
                return [b"".join(self._handle(environ, start_response, action, raw))]
        return self._handle(environ, start_response, action, raw)

    def _handle(self, environ: Json, start_response: Any, action: str, raw: bytes) -> Any:
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured.update(status=status, headers=headers)
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        body = b"".join(self._dispatch(environ, capture, raw))
        status = int(str(captured.get("status", "200")).split()[0])
        if "jobguard/" in environ.get("HTTP_USER_AGENT", ""):
            with self._count_lock:
                self.recorded += calls_of(action, environ, raw, status, body, self.batch, ACCOUNT, REGION)
        if action == "events:PutEvents" and status == 200:
            results = json.loads(body or b"{}").get("Entries", [])
            with self._count_lock:
                self.published += [
                    dict(e) for e, r in zip(json.loads(raw or b"{}").get("Entries", []), results, strict=False) if not r.get("ErrorCode")
                ]
        return [body]

    def _dispatch(self, environ: Json, start_response: Any, raw: bytes) -> Any:
        path = environ.get("PATH_INFO", "")
        if _service(environ) == "batch":
            method = _MODEL_PATHS.get(path)
            if method is not None:
                return self._model(start_response, lambda: getattr(self.batch, method)(json.loads(raw or b"{}")))
            bulk = _BULK_STOP_PATHS.get(path)
            if bulk is not None and self.bulk_stop:
                return self._model(start_response, lambda: getattr(self.batch, bulk)(json.loads(raw or b"{}"), self.refuse_stop))
            if path.startswith("/v1/tags/"):
                arn = urllib.parse.unquote(path[len("/v1/tags/") :])
                if ":job/" in arn or ":job-definition/" in arn:
                    return self._model(start_response, lambda: self._tags(environ, arn, raw))
            if path in _COMPUTE_ENVIRONMENT_PATHS:
                return self._compute_environment(environ, start_response, _COMPUTE_ENVIRONMENT_PATHS[path], raw)
            if path == "/v1/deletejobqueue":
                return self._delete_job_queue(environ, start_response, raw)
        if self.refuse_event is not None and environ.get("HTTP_X_AMZ_TARGET", "").endswith(".PutEvents"):
            return self._put_events(environ, start_response, raw, self.refuse_event)
        if self.unprocessed is not None and environ.get("HTTP_X_AMZ_TARGET", "").endswith(".BatchGetItem"):
            return self._batch_get_item(environ, start_response, raw, self.unprocessed)
        return self._moto(environ, start_response)

    def _compute_environment(self, environ: Json, start_response: Any, action: str, raw: bytes) -> Any:
        """A compute environment call: moto answers it, the model completes the request and the answer."""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return self._moto(environ, start_response)
        if action == "CreateComputeEnvironment":
            body = self.batch.compute_environment_request(body)
        status, headers, answer = self._forward(environ, body)
        if status.startswith("200"):
            return _json(start_response, 200, self.batch.compute_environment_answer(action, body, json.loads(answer or b"{}")))
        return _passed_on(start_response, status, headers, answer)

    def _delete_job_queue(self, environ: Json, start_response: Any, raw: bytes) -> Any:
        """DeleteJobQueue as Batch does it: only a DISABLED queue, and its jobs end (`BatchModel.queue_deleted`)."""
        try:
            identifier = str(json.loads(raw or b"{}").get("jobQueue", ""))
        except ValueError:
            return self._moto(environ, start_response)
        queue = self.batch.backend.get_job_queue(identifier)
        if queue is not None and queue.state != "DISABLED":
            message = f"Job queue {identifier} must be DISABLED before it is deleted"
            return _error(start_response, 400, "ClientException", message, xml=False)
        captured: dict[str, str] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured["status"] = status
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        answer = b"".join(self._moto(environ, capture))
        if queue is not None and captured.get("status", "").startswith("200"):
            self.batch.queue_deleted(str(queue.arn))
        return [answer]

    def _put_events(self, environ: Json, start_response: Any, raw: bytes, refuse: EventRule) -> Any:
        """PutEvents answered entry by entry: refused entries get their error, the others go on to moto."""
        entries = json.loads(raw or b"{}").get("Entries", [])
        refusals = [refuse(entry) for entry in entries]
        accepted = [entry for entry, refusal in zip(entries, refusals, strict=True) if refusal is None]
        results: list[Json] = []
        if accepted:
            status, headers, answer = self._forward(environ, {**json.loads(raw), "Entries": accepted})
            if not status.startswith("200"):
                return _passed_on(start_response, status, headers, answer)
            results = json.loads(answer).get("Entries", [])
        merged = iter(results)
        answered = [next(merged) if refusal is None else {"ErrorCode": refusal[0], "ErrorMessage": refusal[1]} for refusal in refusals]
        return _json(start_response, 200, {"FailedEntryCount": sum("ErrorCode" in e for e in answered), "Entries": answered})

    def _batch_get_item(self, environ: Json, start_response: Any, raw: bytes, unprocessed: KeyRule) -> Any:
        """BatchGetItem with the keys `unprocessed` picks left out of the read and answered in UnprocessedKeys."""
        request = json.loads(raw or b"{}")
        left: Json = {}
        for table, spec in request.get("RequestItems", {}).items():
            keys = spec.get("Keys", [])
            spec["Keys"] = [k for k in keys if not unprocessed(k)]
            if len(spec["Keys"]) < len(keys):
                left[table] = {**spec, "Keys": [k for k in keys if unprocessed(k)]}
        request["RequestItems"] = {t: s for t, s in request.get("RequestItems", {}).items() if s["Keys"]}
        answer: Json = {"Responses": {}}
        if request["RequestItems"]:
            status, headers, body = self._forward(environ, request)
            if not status.startswith("200"):
                return _passed_on(start_response, status, headers, body)
            answer = json.loads(body)
        return _json(start_response, 200, {**answer, "UnprocessedKeys": left})

    def _forward(self, environ: Json, request: Json) -> tuple[str, list[tuple[str, str]], bytes]:
        """`request` (a JSON body) sent on to moto in place of the one received: its status, headers and body."""
        body = json.dumps(request).encode()
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
            captured.update(status=status, headers=headers)

        answer = b"".join(self._moto({**environ, "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body))}, capture))
        return str(captured.get("status", "500 Error")), list(captured.get("headers", [])), answer

    def _tags(self, environ: Json, arn: str, raw: bytes) -> Json:
        method = environ.get("REQUEST_METHOD", "GET")
        if method == "POST":
            self.batch.tag_resource(arn, json.loads(raw or b"{}").get("tags") or {})
            return {}
        if method == "DELETE":
            keys = re.findall(r"tagKeys=([^&]+)", environ.get("QUERY_STRING", ""))
            self.batch.untag_resource(arn, [urllib.parse.unquote(k) for k in keys])
            return {}
        return self.batch.list_tags(arn)

    @staticmethod
    def _model(start_response: Any, call: Callable[[], Json]) -> list[bytes]:
        try:
            return _json(start_response, 200, call())
        except ClientException as exc:
            return _error(start_response, 400, "ClientException", str(exc), xml=False)

    def _limit(self, action: str) -> RateLimit:
        with self._count_lock:
            if action not in self.limits:
                self.limits[action] = RateLimit(float(self.rate or 0), float(self.burst or self.rate or 0))
            return self.limits[action]


def _service(environ: Json) -> str:
    scope = re.search(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/", environ.get("HTTP_AUTHORIZATION", ""))
    return scope.group(1) if scope else "unknown"


def _action(environ: Json, raw: bytes) -> str:
    """`service:Action` of a request, as IAM names it."""
    service, method = _service(environ), environ.get("REQUEST_METHOD", "")
    path, query = environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", "")
    if service == "batch":
        name = {"/v1/tags": "TagResource"}.get(path.rsplit("/", 1)[0], "") if path.startswith("/v1/tags/") else ""
        if name and method == "GET":
            name = "ListTagsForResource"
        elif name and method == "DELETE":
            name = "UntagResource"
        return f"batch:{name or _batch_action(path)}"
    if service == "s3":
        return f"s3:{_s3_action(method, path, query)}"
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:
        return f"{service}:{target.rsplit('.', 1)[-1]}"
    in_body = re.search(rb"(?:^|&)Action=([A-Za-z]+)", raw)  # query protocol (STS, SNS): a form-encoded POST
    if in_body:
        return f"{service}:{in_body.group(1).decode()}"
    in_query = re.search(r"(?:^|&)Action=([A-Za-z]+)", query)
    return f"{service}:{in_query.group(1) if in_query else method}"


def _batch_action(path: str) -> str:
    names = {
        "submitjob": "SubmitJob",
        "describejobs": "DescribeJobs",
        "listjobs": "ListJobs",
        "terminatejob": "TerminateJob",
        "canceljob": "CancelJob",
        "terminatejobs": "TerminateJobs",
        "canceljobs": "CancelJobs",
        "registerjobdefinition": "RegisterJobDefinition",
        "deregisterjobdefinition": "DeregisterJobDefinition",
        "describejobdefinitions": "DescribeJobDefinitions",
        "describejobqueues": "DescribeJobQueues",
        "updatejobqueue": "UpdateJobQueue",
        "createjobqueue": "CreateJobQueue",
        "deletejobqueue": "DeleteJobQueue",
        "createcomputeenvironment": "CreateComputeEnvironment",
        "updatecomputeenvironment": "UpdateComputeEnvironment",
        "deletecomputeenvironment": "DeleteComputeEnvironment",
        "describecomputeenvironments": "DescribeComputeEnvironments",
        "createschedulingpolicy": "CreateSchedulingPolicy",
    }
    last = path.rstrip("/").rsplit("/", 1)[-1]
    return names.get(last, last)


def _s3_action(method: str, path: str, query: str) -> str:
    parts = [p for p in path.split("/") if p]
    if len(parts) <= 1:  # the bucket itself
        if method == "GET":
            return "ListBucket"
        return {"PUT": "CreateBucket", "DELETE": "DeleteBucket", "HEAD": "HeadBucket"}.get(method, method)
    return {"GET": "GetObject", "PUT": "PutObject", "DELETE": "DeleteObject", "HEAD": "GetObject"}.get(method, method)


def _body(environ: Json) -> bytes | None:
    """The request's whole body; None when it ended before it was whole. A body sent with
    `Transfer-Encoding: chunked` has no Content-Length: werkzeug dechunks it and ends the stream at
    the last chunk (`wsgi.input_terminated`), and raises when the stream ends before that chunk."""
    stream = environ["wsgi.input"]
    if environ.get("wsgi.input_terminated") and not environ.get("CONTENT_LENGTH"):
        try:
            return bytes(stream.read())
        except (OSError, ValueError):
            return None
    length = int(environ.get("CONTENT_LENGTH") or 0)
    raw = bytes(stream.read(length)) if length else b""
    return raw if len(raw) == length else None


def _cut(environ: Json) -> None:
    """Cut the client's connection, as a network failure would."""
    connection = environ.get("werkzeug.socket")
    if connection is not None:
        with suppress(OSError):
            connection.shutdown(socket.SHUT_RDWR)


def _passed_on(start_response: Any, status: str, headers: list[tuple[str, str]], body: bytes) -> list[bytes]:
    """moto's own answer (an error), as it gave it."""
    start_response(status, [(k, v) for k, v in headers if k.lower() != "content-length"] + [("Content-Length", str(len(body)))])
    return [body]


def _json(start_response: Any, status: int, body: Json) -> list[bytes]:
    payload = json.dumps(body).encode()
    start_response(
        f"{status} {'OK' if status == 200 else 'Error'}", [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
    )
    return [payload]


def _error(start_response: Any, status: int, code: str, message: str, xml: bool) -> list[bytes]:
    """An AWS error answer: JSON for JSON protocols, XML for query and REST-XML ones (S3, STS, SNS)."""
    if xml:
        payload = f"<ErrorResponse><Error><Code>{code}</Code><Message>{message}</Message></Error></ErrorResponse>".encode()
        headers = [("Content-Type", "text/xml")]
    else:
        payload = json.dumps({"__type": code, "message": message}).encode()
        headers = [("Content-Type", "application/json"), ("x-amzn-ErrorType", code)]
    start_response(f"{status} Error", [*headers, ("Content-Length", str(len(payload)))])
    return [payload]
