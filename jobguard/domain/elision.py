"""Records held without their submissions: what restore keeps of a manifest of 100 000 jobs.

A record read from a stored page keeps every field but its submission, which stays in the page:
restore orders, remaps and checks jobs by ids, outcomes, dependencies and replacements, and needs
a job's whole submission only to send it again. The stand-in (`Elided`) holds the submission's
`dependsOn`, the one part read for every job (waves, dependency remapping, N_TO_N pairing); the
commands read the rest back from the page, checked against the digest the signature covers,
before a SubmitJob is built or the page is written again.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from .manifest import JobRecord

KEPT = ("dependsOn",)  # the parts of a submission read for every job, not only for the ones being submitted


class Elided(dict[str, Any]):
    """A submission not held: only its `KEPT` parts. Never stored, never sent (`whole` refuses it)."""

    __slots__ = ()


_NOTHING = Elided()  # shared by every record without a dependency: records are never changed in place


def elide(record: JobRecord) -> JobRecord:
    """The record without its submission (the same record if it is elided already)."""
    if isinstance(record.submission, Elided):
        return record
    kept = {k: record.submission[k] for k in KEPT if k in record.submission}
    return replace(record, submission=Elided(kept) if kept else _NOTHING)


def elided(record: JobRecord) -> bool:
    """True when the record's submission is not held."""
    return isinstance(record.submission, Elided)


def whole(record: JobRecord) -> dict[str, Any]:
    """The record's submission, to send or store. An elided one here is a bug that would lose the job's inputs: refused."""
    if isinstance(record.submission, Elided):
        raise RuntimeError(f"job {record.job_id}: its submission was not read back from its page before use")
    return record.submission
