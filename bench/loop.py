"""The hand-written loop a team would otherwise write: one boto3 call after another, default retries.

python -m bench.loop drain QUEUE SAVED.json    list, describe (to save what to resubmit), terminate
python -m bench.loop restore QUEUE SAVED.json  submit each saved job again
"""

from __future__ import annotations

import json
import sys

import boto3

ACTIVE = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING")


def drain(batch: object, queue: str, saved: str) -> None:
    """List the active jobs, save name and definition, terminate each."""
    ids = []
    for status in ACTIVE:
        for page in batch.get_paginator("list_jobs").paginate(jobQueue=queue, jobStatus=status):  # type: ignore[attr-defined]
            ids += [j["jobId"] for j in page["jobSummaryList"]]
    jobs = []
    for start in range(0, len(ids), 100):
        jobs += batch.describe_jobs(jobs=ids[start : start + 100])["jobs"]  # type: ignore[attr-defined]
    with open(saved, "w", encoding="utf-8") as stream:
        json.dump([{"jobName": j["jobName"], "jobDefinition": j["jobDefinition"].rsplit("/", 1)[-1].split(":")[0]} for j in jobs], stream)
    for job_id in ids:
        batch.terminate_job(jobId=job_id, reason="deploy")  # type: ignore[attr-defined]


def restore(batch: object, queue: str, saved: str) -> None:
    """Submit every saved job again, on the latest revision."""
    with open(saved, encoding="utf-8") as stream:
        for job in json.load(stream):
            batch.submit_job(jobQueue=queue, **job)  # type: ignore[attr-defined]


if __name__ == "__main__":
    {"drain": drain, "restore": restore}[sys.argv[1]](boto3.client("batch"), sys.argv[2], sys.argv[3])
