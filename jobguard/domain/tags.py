"""How a replacement is marked, so it can be traced back to its original and found again.

A replacement carries ONE tag, `jobguard`, whose value holds the deploy, the original job, the
lineage and the resubmission count (SubmitJob allows 50 tags: one for jobguard leaves a job
49 of its own). The same facts go into the job's environment as JOBGUARD_* variables (when
`lineage-env` is on), which is also how a replacement is found when its tags are full.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

MARK_TAG = "jobguard"
MAX_TAGS = 50  # SubmitJob's limit
LINEAGE_ENV = "JOBGUARD_LINEAGE_ID"
PREVIOUS_ENV = "JOBGUARD_PREVIOUS_JOB_ID"
DEPLOY_ENV = "JOBGUARD_DEPLOY_ID"
RESUME_ENV = "JOBGUARD_RESUME_COUNT"
ARRAY_INDEXES_ENV = "JOBGUARD_ARRAY_INDEXES"
# Tag values allow letters, digits, spaces and _ . : / = + - @ only.
_FIELDS = {"d": "deploy_id", "o": "original_id", "l": "lineage_id", "n": "resubmits"}


@dataclass(frozen=True)
class Mark:
    """Where a replacement came from."""

    deploy_id: str
    original_id: str
    lineage_id: str
    resubmits: int

    def tag_value(self) -> str:
        """The `jobguard` tag's value."""
        return f"d={self.deploy_id} o={self.original_id} l={self.lineage_id} n={self.resubmits}"

    def environment(self) -> dict[str, str]:
        """The JOBGUARD_* variables job code reads (see jobguard.checkpoint)."""
        return {
            LINEAGE_ENV: self.lineage_id,
            PREVIOUS_ENV: self.original_id,
            DEPLOY_ENV: self.deploy_id,
            RESUME_ENV: str(self.resubmits),
        }


def parse_mark(value: str) -> Mark | None:
    """A mark from a `jobguard` tag value; None when it is not one."""
    fields = dict(part.split("=", 1) for part in value.split() if "=" in part)
    if set(_FIELDS) - set(fields) or not fields["n"].isdigit():
        return None
    return Mark(fields["d"], fields["o"], fields["l"], int(fields["n"]))


def mark_of(job: Mapping[str, Any]) -> Mark | None:
    """The mark of a JobDetail: its `jobguard` tag, else its JOBGUARD_* variables (tags were full)."""
    tag = (job.get("tags") or {}).get(MARK_TAG)
    if isinstance(tag, str):
        mark = parse_mark(tag)
        if mark:
            return mark
    env = dict(_environment(job))
    if PREVIOUS_ENV in env and DEPLOY_ENV in env:
        count = env.get(RESUME_ENV, "0")
        return Mark(env[DEPLOY_ENV], env[PREVIOUS_ENV], env.get(LINEAGE_ENV, env[PREVIOUS_ENV]), int(count) if count.isdigit() else 0)
    return None


def is_jobguard_tag(key: str) -> bool:
    """jobguard's own tags (this one and the four of earlier versions): never replayed as the job's."""
    return key == MARK_TAG or key.startswith("jobguard:")


def with_mark(tags: Mapping[str, str], mark: Mark) -> tuple[dict[str, str], str | None]:
    """The job's own tags plus the mark; a note when the job already has every tag it may have."""
    own = {k: v for k, v in tags.items() if not is_jobguard_tag(k)}
    if len(own) >= MAX_TAGS:
        return own, f"has {len(own)} tags of its own, the most SubmitJob allows: its replacement is marked by its JOBGUARD_* variables only"
    return {**own, MARK_TAG: mark.tag_value()}, None


def _environment(job: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """Every environment entry of a JobDetail, whatever its job type."""
    containers: list[Any] = [job.get("container") or {}]
    for node_range in (job.get("nodeProperties") or {}).get("nodeRangeProperties") or []:
        containers.append(node_range.get("container") or {})
    for task in (job.get("ecsProperties") or {}).get("taskProperties") or []:
        containers += task.get("containers") or []
    pod = (job.get("eksProperties") or {}).get("podProperties") or {}
    for container in containers:
        for entry in container.get("environment") or []:
            yield str(entry.get("name", "")), str(entry.get("value", ""))
    for container in pod.get("containers") or []:
        for entry in container.get("env") or []:
            yield str(entry.get("name", "")), str(entry.get("value", ""))


SAFE_TAG_VALUE = re.compile(r"[\w .:/=+\-@]*")
