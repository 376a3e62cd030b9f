"""Helpers of the hostile-input tests (test_bad_input, test_tampering, test_injection): a drained
world, snapshots of Batch and of every store kind, direct edits of a stored manifest (re-signed
or not), and the one-line-error check."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobguard.adapters.signing import default_key_file
from jobguard.domain.pages import PAGED, manifest_digest, page_digest
from jobguard.sim import Seeder, SimulatedAWS

from .conftest import BUCKET, TABLE, configure, create_table, dynamodb_document, load_manifest, signing_key

Json = dict[str, Any]
MUTATING = ("batch:SubmitJob", "batch:TerminateJob", "batch:TerminateJobs", "batch:CancelJob", "batch:CancelJobs", "batch:UpdateJobQueue")


def world(seed: Seeder) -> tuple[str, str]:
    """Queue `work`, job definition `proc`, and two jobs: `first` (queued), `second` PENDING on it."""
    seed.queue("work")
    seed.definition("proc")
    first = seed.job(status="RUNNABLE", jobName="first", jobQueue="work", jobDefinition="proc")
    second = seed.job(status="PENDING", jobName="second", jobQueue="work", jobDefinition="proc", dependsOn=[{"jobId": first}])
    return first, second


def aws_store(seed: Seeder, workdir: Path, kind: str) -> str:
    """An S3 or DynamoDB store with a KMS signing key configured (as the `store` fixture makes them)."""
    configure(workdir, f"signing-key: kms:{signing_key(seed)}")
    if kind == "dynamodb":
        create_table(seed, TABLE)
        return f"dynamodb://{TABLE}"
    seed.client("s3").create_bucket(Bucket=BUCKET)
    return f"s3://{BUCKET}/deploys"


# -- what must not change ---------------------------------------------------------------------
def store_contents(store: str, seed: Seeder) -> dict[str, bytes]:
    """Everything in a store, by name: files of a folder, objects of a bucket, items of a table."""
    if store.startswith("file://"):
        folder = Path(store[len("file://") :])
        found: dict[str, bytes] = {}
        for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
            if path.is_symlink() or not path.is_file():
                found[str(path.relative_to(folder))] = b"<not a regular file>"
            elif path.name not in (".lock", ".clock"):
                found[str(path.relative_to(folder))] = path.read_bytes()
        return found
    if store.startswith("s3://"):
        s3 = seed.client("s3")
        bucket = store[len("s3://") :].split("/", 1)[0]
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
        return {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}
    table = store[len("dynamodb://") :]
    items = seed.client("dynamodb").scan(TableName=table)["Items"]
    return {f"{i['pk']['S']} {i['sk']['S']}": json.dumps(i, sort_keys=True).encode() for i in items}


def temp_files(store: str) -> list[str]:
    """Temporary files a write left behind in a folder store."""
    if not store.startswith("file://"):
        return []
    folder = Path(store[len("file://") :])
    return [str(p) for p in folder.rglob("*") if p.name.startswith(".tmp-")] if folder.is_dir() else []


def batch_state(aws: SimulatedAWS) -> Json:
    """What a run could change in Batch: every job's status and stop flags, every queue's state, mutating calls."""
    with aws.batch.lock:
        jobs = {j.job_id: (j.status, bool(j.terminated), bool(j.cancelled)) for j in aws.batch.jobs.values()}
    queues = {q["jobQueueName"]: q["state"] for q in aws.batch.backend.describe_job_queues()}  # not through boto3: the env may be broken
    return {"jobs": jobs, "queues": queues, "calls": {a: aws.calls[a] for a in MUTATING}}


def snapshot(aws: SimulatedAWS, seed: Seeder, *stores: str) -> Json:
    """Batch and stores, to compare before and after a refused run."""
    return {"batch": batch_state(aws), "stores": {s: store_contents(s, seed) for s in stores}}


def assert_unchanged(before: Json, aws: SimulatedAWS, seed: Seeder) -> None:
    """Nothing in Batch or in the stores changed, and no temporary file was left."""
    after = snapshot(aws, seed, *before["stores"])
    assert after["batch"] == before["batch"], "Batch changed"
    for store in before["stores"]:
        assert after["stores"][store] == before["stores"][store], f"{store} changed"
        assert temp_files(store) == []


# -- the one-line error -----------------------------------------------------------------------
def one_error(result: Any, code: int, *words: str) -> str:
    """Exit `code`, exactly one `error:` line (plus at most one `hint:`), no traceback; the error line."""
    text = result.out + result.err
    assert "Traceback" not in text and 'File "' not in text, text
    assert result.code == code, f"exit {result.code}, expected {code}:\n{text}"
    lines = result.err.splitlines()
    errors = [line for line in lines if line.startswith(("error:", "::error::"))]
    hints = [line for line in lines if line.startswith("hint:")]
    assert len(errors) == 1, result.err
    assert len(hints) <= 1, result.err
    for word in words:
        assert word in errors[0], f"{word!r} not in {errors[0]!r}"
    return str(errors[0])


# -- editing what is stored -------------------------------------------------------------------
def digest(document: Json) -> bytes:
    """What a signature covers (as Manifests computes it, for a document that may not be a valid manifest)."""
    if document.get("signature", {}).get("algorithm") == PAGED and isinstance(document.get("jobs"), list):
        size = int(document.get("page_records", 500))
        header = {k: v for k, v in document.items() if k not in ("signature", "jobs", "page_records")}
        jobs = document["jobs"]
        return manifest_digest(header, size, [page_digest(jobs[start : start + size]) for start in range(0, len(jobs), size)])
    unsigned = {k: v for k, v in document.items() if k != "signature"}
    if isinstance(unsigned.get("jobs"), list):
        unsigned["jobs"] = sorted(unsigned["jobs"], key=lambda job: str(job.get("job_id")) if isinstance(job, dict) else "")
    canonical = json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).digest()


def file_mac(document: Json, key_file: Path | None = None) -> str:
    """The MAC a file key makes of the document."""
    secret = base64.b64decode((key_file or default_key_file()).read_bytes().strip())
    return base64.b64encode(hmac.new(secret, digest(document), hashlib.sha256).digest()).decode()


def kms_mac(seed: Seeder, key: str, document: Json) -> str:
    """The MAC a KMS key makes of the document."""
    answer = seed.client("kms").generate_mac(KeyId=key, Message=digest(document), MacAlgorithm="HMAC_SHA_256")
    return base64.b64encode(answer["Mac"]).decode()


def resign(document: Json, seed: Seeder) -> None:
    """Sign the document again with the key that signed it (as a jobguard with a bug, or the key's holder, would)."""
    key = str(document.get("signature", {}).get("key", ""))
    mac = kms_mac(seed, key[len("kms:") :], document) if key.startswith("kms:") else file_mac(document, Path(key[len("file:") :]))
    document["signature"] = {**document["signature"], "mac": mac}


def read_document(store: str, seed: Seeder, deploy_id: str) -> Json:
    """The stored manifest document."""
    return load_manifest(store, seed, deploy_id)


def write_document(store: str, seed: Seeder, deploy_id: str, document: Any, raw: bytes | None = None) -> None:
    """Put a document (or raw bytes) where the manifest of `deploy_id` lives, as someone with write access would."""
    body = raw if raw is not None else json.dumps(document).encode()
    if store.startswith("file://"):
        Path(store[len("file://") :], f"{deploy_id}.json").write_bytes(body)
        return
    if store.startswith("s3://"):
        bucket, _, prefix = store[len("s3://") :].partition("/")
        seed.client("s3").put_object(Bucket=bucket, Key=f"{prefix}/{deploy_id}.json", Body=body)
        return
    table = store[len("dynamodb://") :]
    dynamodb = seed.client("dynamodb")
    old = dynamodb.get_item(TableName=table, Key={"pk": {"S": "deploys"}, "sk": {"S": deploy_id}}).get("Item", {})
    version = old.get("version", {"N": "1"})
    for item in dynamodb.query(
        TableName=table, KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": {"S": f"deploy#{deploy_id}"}}
    )["Items"]:
        dynamodb.delete_item(TableName=table, Key={"pk": item["pk"], "sk": item["sk"]})
    if raw is not None or not isinstance(document, dict) or not isinstance(document.get("jobs"), list):
        header_body = body.decode("utf-8", "replace")
        jobs: list[Any] = []
    else:
        header_body = json.dumps({k: v for k, v in document.items() if k != "jobs"})
        jobs = document["jobs"]
    header = {"pk": {"S": "deploys"}, "sk": {"S": deploy_id}, "body": {"S": header_body}, "version": version}
    dynamodb.put_item(TableName=table, Item=header)
    for seq, job in enumerate(jobs):
        job_id = job.get("job_id") if isinstance(job, dict) else None
        item = {
            "pk": {"S": f"deploy#{deploy_id}"},
            "sk": {"S": f"job#{job_id if isinstance(job_id, str) else seq}"},
            "body": {"S": json.dumps(job)},
            "seq": {"N": str(seq)},
        }
        dynamodb.put_item(TableName=table, Item=item)


def edit(store: str, seed: Seeder, deploy_id: str, change: Callable[[Json], Any], sign: bool = True) -> Json:
    """Change the stored manifest; `sign`: sign it again with its own key, so only the checks can catch the change."""
    document = copy.deepcopy(read_document(store, seed, deploy_id))
    signature = copy.deepcopy(document.get("signature"))
    change(document)
    if sign and isinstance(document, dict) and document.get("signature") == signature and signature is not None:
        resign(document, seed)  # (a change of the signature itself is kept as made)
    write_document(store, seed, deploy_id, document)
    return document


def mark_open(store: str, seed: Seeder, deploy_id: str) -> None:
    """Index a deploy as open, as jobguard does before its manifest holds work."""
    body = json.dumps({"deploy_id": deploy_id, "opened_at": "2024-01-01T00:00:00.000Z"})
    if store.startswith("file://"):
        folder = Path(store[len("file://") :], "open")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{deploy_id}.json").write_text(body)
    elif store.startswith("s3://"):
        bucket, _, prefix = store[len("s3://") :].partition("/")
        seed.client("s3").put_object(Bucket=bucket, Key=f"{prefix}/open/{deploy_id}.json", Body=body.encode())
    else:
        item = {"pk": {"S": "open"}, "sk": {"S": deploy_id}, "body": {"S": body}, "version": {"N": "1"}}
        seed.client("dynamodb").put_item(TableName=store[len("dynamodb://") :], Item=item)


def copy_manifest(store: str, seed: Seeder, source: str, target: str) -> None:
    """Copy a stored manifest (its head and pages), byte for byte (items for DynamoDB), under another deploy id, and index it."""
    if store.startswith("dynamodb://"):
        write_document(store, seed, target, dynamodb_document(seed, store[len("dynamodb://") :], source))
    elif store.startswith("file://"):
        folder = Path(store[len("file://") :])
        (folder / f"{target}.json").write_bytes((folder / f"{source}.json").read_bytes())
        if (folder / "pages" / source).is_dir():
            shutil.copytree(folder / "pages" / source, folder / "pages" / target)
    else:
        bucket, _, prefix = store[len("s3://") :].partition("/")
        s3 = seed.client("s3")
        for listed in s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/pages/{source}/").get("Contents", []):
            name = listed["Key"].rsplit("/", 1)[-1]
            s3.copy_object(Bucket=bucket, Key=f"{prefix}/pages/{target}/{name}", CopySource={"Bucket": bucket, "Key": listed["Key"]})
        s3.put_object(
            Bucket=bucket, Key=f"{prefix}/{target}.json", Body=s3.get_object(Bucket=bucket, Key=f"{prefix}/{source}.json")["Body"].read()
        )
    mark_open(store, seed, target)


def job_named(document: Json, name: str) -> Json:
    """The record of the job called `name`."""
    return next(j for j in document["jobs"] if j["job_name"] == name)


def env_without(*names: str) -> dict[str, str]:
    """This process's environment without `names`."""
    return {k: v for k, v in os.environ.items() if k not in names}
