"""What an AWS call asks IAM for: the action, the resource ARN and the condition keys.

The simulation records this for every call jobguard makes, so a test can evaluate the Terraform
module's policy against what jobguard really does instead of a hand-written list.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

Json = dict[str, Any]


@dataclass(frozen=True)
class Call:
    """One authorisation IAM makes for a call: `action` on `resource` with `context` keys.

    `missing_key` marks an S3 GetObject of a key that does not exist: real S3 answers it with 404
    only when the caller may also list the bucket, else with 403.
    """

    action: str
    resource: str
    context: dict[str, str] = field(default_factory=dict)
    missing_key: bool = False


def calls_of(action: str, environ: Json, raw: bytes, status: int, answer: bytes, batch: Any, account: str, region: str) -> list[Call]:
    """The authorisations one answered request needed."""
    service = action.split(":", 1)[0]
    if service == "batch":
        return _batch(action, raw, answer, batch, account, region)
    if service == "s3":
        return _s3(action, environ, status)
    if service == "dynamodb":
        return _dynamodb(action, raw, account, region)
    body = _json(raw)
    if service == "kms":
        return [Call(action, _key_arn(str(body.get("KeyId", "")), account, region))]
    if service == "events":
        buses = {str(e.get("EventBusName") or "default") for e in body.get("Entries", [])}
        return [Call(action, b if b.startswith("arn:") else f"arn:aws:events:{region}:{account}:event-bus/{b}") for b in sorted(buses)]
    if service == "sns":
        form = urllib.parse.parse_qs(raw.decode(errors="replace"))
        return [Call(action, form.get("TopicArn", ["*"])[0])]
    return [Call(action, "*")]


def _batch(action: str, raw: bytes, answer: bytes, batch: Any, account: str, region: str) -> list[Call]:
    body = _json(raw)
    prefix = f"arn:aws:batch:{region}:{account}"
    if action == "batch:SubmitJob":
        queue = str(body.get("jobQueue", ""))
        calls = [
            Call(action, queue if queue.startswith("arn:") else f"{prefix}:job-queue/{queue}"),
            Call(action, _definition_arn(str(body.get("jobDefinition", "")), prefix)),
        ]
        job_id = _json(answer).get("jobId")
        if body.get("tags") and job_id:
            calls.append(Call("batch:TagResource", f"{prefix}:job/{job_id}"))
        return calls
    if action in ("batch:TerminateJob", "batch:CancelJob"):
        return [Call(action, f"{prefix}:job/{body.get('jobId', '')}")]
    if action in ("batch:TerminateJobs", "batch:CancelJobs"):
        # No IAM action of their own: authorised as TerminateJob / CancelJob on each job of the call.
        single = action[:-1]
        return [Call(single, f"{prefix}:job/{job_id}") for job_id in body.get("jobs") or []]
    if action == "batch:UpdateJobQueue":
        queue = str(body.get("jobQueue", ""))
        return [Call(action, queue if queue.startswith("arn:") else f"{prefix}:job-queue/{queue}")]
    return [Call(action, "*")]


def _definition_arn(identifier: str, prefix: str) -> str:
    return identifier if identifier.startswith("arn:") else f"{prefix}:job-definition/{identifier}"


def _s3(action: str, environ: Json, status: int) -> list[Call]:
    parts = [urllib.parse.unquote(p) for p in environ.get("PATH_INFO", "").split("/") if p]
    if not parts:
        return [Call(action, "*")]
    bucket = parts[0]
    if action == "s3:ListBucket":
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        context = {"s3:prefix": query["prefix"][0]} if "prefix" in query else {}
        return [Call(action, f"arn:aws:s3:::{bucket}", context)]
    key = "/".join(parts[1:])
    return [Call(action, f"arn:aws:s3:::{bucket}/{key}", missing_key=action == "s3:GetObject" and status == 404)]


def _dynamodb(action: str, raw: bytes, account: str, region: str) -> list[Call]:
    body = _json(raw)

    def table(name: str) -> str:
        return f"arn:aws:dynamodb:{region}:{account}:table/{name}"

    if action == "dynamodb:TransactWriteItems":  # authorised per contained operation
        names = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem", "ConditionCheck": "ConditionCheckItem"}
        return [
            Call(f"dynamodb:{names[kind]}", table(str(spec.get("TableName", ""))))
            for item in body.get("TransactItems", [])
            for kind, spec in item.items()
            if kind in names
        ]
    if action == "dynamodb:BatchGetItem":  # authorised per table read
        return [Call(action, table(str(name))) for name in body.get("RequestItems", {})]
    return [Call(action, table(str(body.get("TableName", ""))))]


def _key_arn(key: str, account: str, region: str) -> str:
    if key.startswith("arn:"):
        return key
    if key.startswith("alias/"):
        return f"arn:aws:kms:{region}:{account}:{key}"
    return f"arn:aws:kms:{region}:{account}:key/{key}" if re.fullmatch(r"[0-9a-f-]{36}", key) else key


def _json(raw: bytes) -> Json:
    try:
        value = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
