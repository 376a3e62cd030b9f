"""Resume instead of restart: a checkpoint helper for the code inside an AWS Batch job.

Standard library and boto3 only, so a job image needs nothing else from jobguard::

    from jobguard.checkpoint import Checkpoint

    checkpoint = Checkpoint()                 # bucket from JOBGUARD_CHECKPOINT_BUCKET
    state = checkpoint.load() or {"next": 0}  # where the job (or its predecessor) stopped
    for item in range(state["next"], total):
        work(item)
        state["next"] = item + 1
        if checkpoint.should_stop:            # SIGTERM: Batch sends SIGKILL 30 s later
            checkpoint.save(state)
            raise SystemExit(143)
    checkpoint.clear()

Batch terminates a container with SIGTERM and SIGKILL 30 seconds later. The helper installs a
SIGTERM handler that only sets a flag; the job's loop asks `should_stop` and saves. jobguard's
restore sets JOBGUARD_LINEAGE_ID, JOBGUARD_PREVIOUS_JOB_ID, JOBGUARD_DEPLOY_ID and
JOBGUARD_RESUME_COUNT on each replacement, so the replacement loads what its predecessor saved:
checkpoints are keyed by lineage (the first job's id), plus the original array index for array children.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from types import FrameType
from typing import Any

import boto3
from botocore.exceptions import ClientError

LINEAGE_ENV = "JOBGUARD_LINEAGE_ID"
PREVIOUS_ENV = "JOBGUARD_PREVIOUS_JOB_ID"
DEPLOY_ENV = "JOBGUARD_DEPLOY_ID"
RESUME_ENV = "JOBGUARD_RESUME_COUNT"
ARRAY_INDEXES_ENV = "JOBGUARD_ARRAY_INDEXES"


def array_index() -> int | None:
    """This array child's index in the array as first submitted.

    A restore with `arrays: unfinished` resubmits only the children that had not succeeded, as a
    smaller array: JOBGUARD_ARRAY_INDEXES maps its indexes back to the original ones. Job code
    that reads AWS_BATCH_JOB_ARRAY_INDEX directly must call this instead.
    """
    index = os.environ.get("AWS_BATCH_JOB_ARRAY_INDEX")
    originals = os.environ.get(ARRAY_INDEXES_ENV)
    if originals:
        mapped = originals.split(",")
        return int(mapped[int(index or 0)])
    return int(index) if index is not None and index.isdigit() else None


class Checkpoint:
    """Save and load one job lineage's progress in S3, and notice SIGTERM."""

    def __init__(self, bucket: str | None = None, prefix: str | None = None, client: Any = None, install: bool = True) -> None:
        self.bucket = bucket or os.environ.get("JOBGUARD_CHECKPOINT_BUCKET", "")
        if not self.bucket:
            raise ValueError("no checkpoint bucket: pass bucket= or set JOBGUARD_CHECKPOINT_BUCKET")
        self.prefix = (prefix if prefix is not None else os.environ.get("JOBGUARD_CHECKPOINT_PREFIX", "checkpoints")).strip("/")
        self.lineage = os.environ.get(LINEAGE_ENV) or os.environ.get("AWS_BATCH_JOB_ID", "local").split(":")[0]
        self.previous_job_id = os.environ.get(PREVIOUS_ENV)
        self.deploy_id = os.environ.get(DEPLOY_ENV)
        self.resume_count = int(os.environ.get(RESUME_ENV, "0") or 0)
        index = array_index()
        self.key = "/".join(p for p in (self.prefix, self.lineage, f"index-{index}" if index is not None else "", "checkpoint") if p)
        self.client = client or boto3.client("s3")
        self._stop = threading.Event()
        if install:
            self.install()

    def install(self) -> None:
        """Handle SIGTERM by setting `should_stop`; the previous handler is called too, if any."""
        previous = signal.getsignal(signal.SIGTERM)

        def handler(signum: int, frame: FrameType | None) -> None:
            self._stop.set()
            if callable(previous):  # SIG_DFL and SIG_IGN are not
                previous(signum, frame)

        signal.signal(signal.SIGTERM, handler)

    @property
    def should_stop(self) -> bool:
        """True once the job was asked to stop: save now, there are 30 seconds left."""
        return self._stop.is_set()

    def save(self, state: Any) -> None:
        """Store the state: bytes as they are, anything else as JSON."""
        body, kind = (state, "application/octet-stream") if isinstance(state, bytes) else (json.dumps(state).encode(), "application/json")
        self.client.put_object(Bucket=self.bucket, Key=self.key, Body=body, ContentType=kind)

    def load(self) -> Any:
        """The state the lineage saved last (JSON decoded, or bytes), or None for a fresh start."""
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        body = answer["Body"].read()
        return json.loads(body) if answer.get("ContentType") == "application/json" else body

    def clear(self) -> None:
        """Forget the checkpoint once the work is done, so a later run starts afresh."""
        self.client.delete_object(Bucket=self.bucket, Key=self.key)
