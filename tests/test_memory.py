"""A manifest of 100 000 jobs must fit in a few hundred MB (README: peak RSS at 100 000 jobs): the records
read from the store share their repeated values, and reading costs a bounded number of bytes a record."""

from __future__ import annotations

import tracemalloc
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from bench.memory import DEPLOY, _manifests, write
from jobguard.domain.manifest import RESTORE, RESUBMITTED

JOBS = 2000
BUDGET = 1750  # bytes a record read (bench.run's records: 1 630 measured; 2 290 before records shared their values)


def test_records_read_share_their_repeated_values_and_cost_a_bounded_size(tmp_path: Path) -> None:
    write(tmp_path, JOBS)
    tracemalloc.start()
    try:
        manifest = _manifests(tmp_path).load(DEPLOY)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert manifest is not None and len(manifest.jobs) == JOBS
    assert held / JOBS < BUDGET, f"{held / JOBS:.0f} bytes a record"
    first, second, *_ = manifest
    for name in ("queue", "job_definition", "status_at_drain", "outcome", "stage", "job_type", "reason"):
        assert getattr(first, name) is getattr(second, name), name
    assert first.dependencies is second.dependencies and first.array_succeeded is second.array_succeeded
    assert first.times["terminating"] is second.times["terminating"]  # stamped in the same millisecond
    assert first.submission["jobName"] is first.job_name


def test_a_shared_empty_value_is_never_changed_through_a_record(tmp_path: Path) -> None:
    write(tmp_path, 2)
    manifest = _manifests(tmp_path).load(DEPLOY)
    assert manifest is not None
    first, second = manifest
    copied = asdict(first)  # a copy: changing it changes no record
    copied["dependencies"]["other"] = "RUNNING"
    copied["array_succeeded"].append(1)
    moved = replace(first.moved_to(RESUBMITTED, RESTORE), dependencies={"other": "RUNNING"}, array_succeeded=[1])
    assert (first.dependencies, first.array_succeeded, second.dependencies, second.array_succeeded) == ({}, [], {}, [])
    assert (moved.dependencies, moved.array_succeeded) == ({"other": "RUNNING"}, [1])


def _held_a_record(folder: Path, variables: int) -> float:
    """Bytes a record read as restore reads it (submissions elided), for records whose submissions carry `variables` inputs."""
    write(folder, JOBS, variables)
    manifests = _manifests(folder)
    manifests.elide = True
    tracemalloc.start()
    try:
        manifest = manifests.load(DEPLOY)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert manifest is not None and len(manifest.jobs) == JOBS
    return held / JOBS


@pytest.mark.slow
def test_records_read_for_restore_cost_the_same_however_large_their_submissions(tmp_path: Path) -> None:
    small, large = _held_a_record(tmp_path / "small", 1), _held_a_record(tmp_path / "large", 40)  # 40 inputs: about 3.5 KB of JSON
    assert large - small < 100, f"{small:.0f} bytes a record with 1 input, {large:.0f} with 40"
    assert small < BUDGET - 500, f"{small:.0f} bytes a record"  # the submission's dicts and lists are not held


def test_the_listing_read_at_the_start_of_a_drain_costs_a_bounded_size_a_job() -> None:
    """Without a plan, drain lists the configured queues while it learns its account (commands/drain.py
    `list_early`) and holds that listing until its first pass: what it keeps of a summary is bounded (at
    100 000 jobs, whole summaries took drain's peak from 256 to 302 MB), its job definition shared."""
    import threading
    import uuid
    from typing import Any

    from jobguard.commands.drain import list_early

    arn = "arn:aws:batch:us-east-1:123456789012:job-definition/work:1"

    class Listing:
        def list_jobs(self, queue: str, status: str) -> Any:
            for _ in range(JOBS if status == "RUNNING" else 0):
                yield {
                    "jobId": str(uuid.uuid4()),
                    "jobArn": f"arn:aws:batch:us-east-1:123456789012:job/{uuid.uuid4()}",
                    "jobName": "a-job-name-of-some-length",
                    "jobDefinition": "".join(arn),  # a new string each, as JSON parsing makes them
                    "status": status,
                    "createdAt": 1765000000000,
                    "startedAt": 1765000000000,
                    "container": {"exitCode": None},
                }

    class Serial:
        def parallel(self, call: Any, items: Any) -> list[Any]:
            return [call(item) for item in items]

    tracemalloc.start()
    try:
        kept = list_early(Listing(), Serial(), ["work"], threading.Event())  # type: ignore[arg-type]
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    running = kept["work"]["RUNNING"]
    assert len(running) == JOBS
    assert held / JOBS < 200, f"{held / JOBS:.0f} bytes a job"  # the job id alone is about 85
    assert running[0][1] is running[1][1]
