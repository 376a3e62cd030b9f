"""Every member of SubmitJob, as botocore's service model defines it, is recovered or said not to be.

The list of members comes from botocore, not from jobguard: when a new botocore adds an override
member, this test fails until recovery covers it (and a corpus case shows it) or
`unrecoverable_members()` states why it cannot be.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from botocore.model import Shape

from jobguard.domain.submission import recover_submission, unrecoverable_members

from .test_submission_corpus import CASES, SUBMIT_JOB


def members(shape: Shape, path: str = "") -> Iterator[str]:
    """Dotted paths of every member of every nested structure; list levels are left out, maps are leaves."""
    if shape.type_name == "list":
        yield from members(shape.member, path)  # type: ignore[attr-defined]
    elif shape.type_name == "structure":
        for name, member in shape.members.items():  # type: ignore[attr-defined]
            yield from [f"{path}{name}", *members(member, f"{path}{name}.")]


def paths(value: Any, path: str = "") -> Iterator[str]:
    """Dotted paths of every member present in a request, in the same form as `members`."""
    if isinstance(value, list):
        for item in value:
            yield from paths(item, path)
    elif isinstance(value, dict) and not path.endswith(MAPS):
        for name, member in value.items():
            yield from [f"{path}{name}", *paths(member, f"{path}{name}.")]


MAPS = tuple(f"{m}." for m in ("parameters", "tags", "labels", "annotations", "limits", "requests"))
RECOVERED = {p for case in CASES.values() for p in paths(recover_submission(case["job"], case["definition"]))}


def test_the_walk_finds_the_nested_override_members() -> None:
    found = set(members(SUBMIT_JOB))
    assert "nodeOverrides.nodePropertyOverrides.eksPropertiesOverride.podProperties.initContainers.resources.limits" in found
    assert "ecsPropertiesOverride.taskProperties.containers.name" in found
    assert len(found) > 100


def test_every_member_has_a_recovery_rule_or_a_stated_reason() -> None:
    reasons = unrecoverable_members()
    missing = [path for path in members(SUBMIT_JOB) if path not in RECOVERED and path not in reasons]
    assert not missing, f"SubmitJob members neither recovered by a corpus case nor explained: {missing}"


def test_every_stated_reason_is_about_a_real_member_that_is_never_recovered() -> None:
    known = set(members(SUBMIT_JOB))
    for path, reason in unrecoverable_members().items():
        assert path in known, path
        assert path not in RECOVERED, path
        assert len(reason) > 20, path


def test_recovered_requests_use_only_real_members() -> None:
    assert not RECOVERED - set(members(SUBMIT_JOB))
