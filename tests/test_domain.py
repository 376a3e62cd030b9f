"""Unit tests of the domain layer (no AWS, no simulation): plan reading, policies, jobguard's mark,
manifest records and merging, and the option parsers every flag and config value goes through."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from jobguard.domain.manifest import (
    DRAIN,
    FAILED,
    RECORDED,
    RESTORE,
    RESUBMITTED,
    TERMINATED,
    TERMINATING,
    JobRecord,
    Manifest,
)
from jobguard.domain.plan import Change, read_plan, risks
from jobguard.domain.policies import ABANDON, RESUBMIT, WAIT, Policy, action_for
from jobguard.domain.tags import MARK_TAG, Mark, mark_of, parse_mark, with_mark
from jobguard.errors import ConfigError, ManifestError, UsageError
from jobguard.options import duration, notify_target, number, queue, read_config

# -- plan ------------------------------------------------------------------------------------


def _change(kind: str, actions: list[str], before: dict[str, Any], after: dict[str, Any], address: str = "x.y") -> Change:
    return Change(address, kind, tuple(actions), before, after)


def _ce(kind: str = "EC2", **resources: Any) -> dict[str, Any]:
    return {"compute_environment_name": "ce", "compute_resources": [{"type": kind, "max_vcpus": 8, **resources}]}


@pytest.mark.parametrize(
    ("change", "at_risk"),
    [
        (_change("aws_batch_job_queue", ["delete"], {"name": "q"}, {}), "q"),
        (_change("aws_batch_job_queue", ["delete", "create"], {"name": "q"}, {"name": "q"}), "q"),
        (_change("aws_batch_job_queue", ["update"], {"name": "q", "priority": 1}, {"name": "q", "priority": 2}), None),
        (_change("aws_batch_compute_environment", ["delete", "create"], _ce(), _ce()), "ce"),
        (_change("aws_batch_compute_environment", ["update"], _ce(instance_type=["m5"]), _ce(instance_type=["c5"])), "ce"),
        (_change("aws_batch_compute_environment", ["update"], _ce(max_vcpus=8), _ce(max_vcpus=64)), None),  # scaling only
        (_change("aws_batch_compute_environment", ["update"], _ce("FARGATE", subnets=["a"]), _ce("FARGATE", subnets=["b"])), None),
        (_change("aws_batch_job_definition", ["delete", "create"], {"name": "d"}, {"name": "d"}), None),
        (_change("aws_batch_compute_environment", ["no-op"], _ce(), _ce()), None),
    ],
    ids=["queue-deleted", "queue-replaced", "queue-updated", "ce-replaced", "ce-infra", "ce-scaling", "fargate-network", "jd", "no-op"],
)
def test_what_a_plan_puts_at_risk(change: Change, at_risk: str | None) -> None:
    found = risks([change], ())
    names = [r.queue or r.compute_environment for r in found]
    assert names == ([at_risk] if at_risk else [])


def test_a_renamed_queue_is_at_risk_with_its_successor() -> None:
    (risk,) = risks([_change("aws_batch_job_queue", ["create", "delete"], {"name": "old"}, {"name": "new"}, "q.r")], ())
    assert (risk.queue, risk.successor) == ("old", "new") and "renamed new" in risk.reason


def test_a_trigger_puts_every_queue_at_risk_and_patterns_match() -> None:
    changes = [_change("aws_db_instance", ["update"], {}, {}, "module.db.aws_db_instance.main")]
    assert risks(changes, ("module.api.*",)) == []
    (risk,) = risks(changes, ("module.db.*",))
    assert risk.every_queue and "is a trigger" in risk.reason


@pytest.mark.parametrize(
    ("document", "words"),
    [
        (b"[]", "no format_version"),
        (b'{"format_version": "1", "resource_changes": {}}', "resource_changes: expected a list"),
        (b'{"format_version": "1", "resource_changes": [7]}', "resource_changes[0]: expected an object"),
        (b'{"format_version": "1", "resource_changes": [{"change": {"before": "x"}}]}', "resource_changes[0].change.before"),
        (b'{"format_version": "1", "resource_changes": [{"change": {"actions": "update"}}]}', "change.actions"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_anything_that_is_not_a_plan_is_named(document: bytes, words: str) -> None:
    with pytest.raises(UsageError) as raised:
        read_plan(document, "plan.json")
    assert words in str(raised.value) and "plan.json" in str(raised.value)


# -- policies --------------------------------------------------------------------------------


def test_the_first_matching_policy_wins_and_resubmit_is_the_default() -> None:
    policies = (Policy(WAIT, job_name="publish-*"), Policy(ABANDON, queue="scratch"), Policy(WAIT, job_definition="rnaseq"))
    assert action_for(policies, "science", "publish-daily", "etl:3") == WAIT
    assert action_for(policies, "scratch", "publish-daily", "etl:3") == WAIT
    assert action_for(policies, "scratch", "tmp", "etl:3") == ABANDON
    assert action_for(policies, "science", "align", "rnaseq:7") == WAIT  # by name, whatever the revision
    assert action_for(policies, "science", "align", "etl:3") == RESUBMIT


# -- jobguard's mark -------------------------------------------------------------------------


def test_the_mark_fits_one_tag_and_reads_back() -> None:
    mark = Mark("123456789", "a" * 36, "b" * 36, 2)
    assert len(mark.tag_value()) <= 256 and parse_mark(mark.tag_value()) == mark
    assert parse_mark("d=x o=y l=z n=two") is None and parse_mark("nonsense") is None


def test_a_job_with_fifty_tags_is_marked_by_its_variables_only() -> None:
    mark = Mark("d1", "orig", "line", 1)
    tags, note = with_mark({f"k{i}": "v" for i in range(49)} | {"jobguard:old": "x"}, mark)
    assert note is None and len(tags) == 50 and tags[MARK_TAG] == mark.tag_value() and "jobguard:old" not in tags
    full, note = with_mark({f"k{i}": "v" for i in range(50)}, mark)
    assert MARK_TAG not in full and len(full) == 50 and note is not None and "JOBGUARD_* variables" in note
    job = {"container": {"environment": [{"name": k, "value": v} for k, v in mark.environment().items()]}}
    assert mark_of(job) == mark  # found again by its variables


# -- manifest records ------------------------------------------------------------------------


def _record(job_id: str, outcome: str = RECORDED, stage: str = DRAIN, **fields: Any) -> JobRecord:
    return JobRecord(
        job_id=job_id,
        job_arn=f"arn:aws:batch:us-east-1:123456789012:job/{job_id}",
        job_name="j",
        queue="work",
        job_definition="proc:1",
        status_at_drain="RUNNING",
        submission={"jobName": "j"},
        outcome=outcome,
        stage=stage,
        times={outcome: "2026-01-01T00:00:00.000Z"},
        **fields,
    )


def _manifest(*records: JobRecord) -> Manifest:
    manifest = Manifest("d1", "123456789012", "us-east-1", "2026-01-01T00:00:00.000Z", "2026-01-01T00:00:00.000Z")
    manifest.put(records)
    manifest.changed.clear()
    return manifest


def test_what_restore_still_owes() -> None:
    owed = {RECORDED, TERMINATING, TERMINATED, "submitting"}
    for outcome in ("recorded", "terminating", "terminated", "kept", "finished", "submitting", "resubmitted", "failed", "skipped"):
        assert _record("a", outcome).owed is (outcome in owed)
    assert _record("a", FAILED, RESTORE).owed and not _record("a", FAILED, DRAIN).owed
    assert _record("a", RECORDED).moved_to(TERMINATING, DRAIN).stop_asked and not _record("a").stop_asked


def test_a_conflicting_write_is_merged_record_by_record() -> None:
    ours = _manifest(_record("a"), _record("b"))
    ours.put([ours.jobs["a"].moved_to(TERMINATED, DRAIN)])
    ours.frozen_queues["work"] = "ENABLED"
    theirs = _manifest(_record("a"), _record("b"), _record("c"))  # another matrix leg recorded c meanwhile
    theirs.frozen_queues["etl"] = "ENABLED"
    merged = ours.merged_onto(theirs)
    assert [r.job_id for r in merged] == ["a", "b", "c"] and merged.jobs["a"].outcome == TERMINATED
    assert merged.frozen_queues == {"etl": "ENABLED", "work": "ENABLED"} and list(merged.changed) == ["a"]


def test_the_digest_covers_every_field_but_not_the_order_of_jobs() -> None:
    one, two = _manifest(_record("a"), _record("b")), _manifest(_record("b"), _record("a"))
    assert one.digest() == two.digest()
    two.put([two.jobs["a"].moved_to(RESUBMITTED, RESTORE, replacement_id="r")])
    assert one.digest() != two.digest()


def test_a_manifest_reads_back_what_it_wrote_and_refuses_duplicates() -> None:
    manifest = _manifest(_record("a", array_succeeded=[1, 2], dependencies={"x": "SUCCEEDED"}))
    again = Manifest.from_document(json.loads(json.dumps(manifest.to_document())), "m.json")
    assert again.jobs == manifest.jobs
    document = manifest.to_document()
    document["jobs"] = document["jobs"] * 2
    with pytest.raises(ManifestError, match="recorded twice"):
        Manifest.from_document(document, "m.json")


# -- option parsers --------------------------------------------------------------------------


@pytest.mark.parametrize("value", [math.nan, math.inf, -1, "nan", "inf", True, "1e999", [], None])
def test_numbers_are_finite_and_in_range(value: Any) -> None:
    with pytest.raises(ConfigError, match="--rate"):
        number(0, 100, low_open=True)(value, "--rate")


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("30m", 1800), ("1h30m", 5400), (45, 45), ("2.5s", 2.5)])
def test_durations(text: Any, seconds: float) -> None:
    assert duration()(text, "grace") == seconds


@pytest.mark.parametrize("text", ["soon", "", "1d", "-5s", "1h1h", "nan"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ConfigError, match="grace"):
        duration()(text, "grace")


@pytest.mark.parametrize("text", ["0", "0.5s", 0.2])
def test_durations_below_their_floor_are_refused(text: Any) -> None:
    with pytest.raises(ConfigError, match="lookup-window: expected a number at least 1"):
        duration(1)(text, "lookup-window")


def test_queue_names_and_arns() -> None:
    assert queue(" work ", "q") == "work"
    assert queue("arn:aws:batch:us-east-1:123456789012:job-queue/work", "q").endswith("/work")
    with pytest.raises(ConfigError):
        queue("work;rm -rf", "q")


def test_a_bad_notify_target_is_never_echoed() -> None:
    with pytest.raises(ConfigError) as raised:
        notify_target("slack://hunter2@x", "notify[0]")
    assert "hunter2" not in str(raised.value)
    assert notify_target("https://hooks.example.com/T/B/secret", "n") == "https://hooks.example.com/T/B/secret"
    assert notify_target("http://127.0.0.1:8080/hook", "n") == "http://127.0.0.1:8080/hook"  # this machine only
    with pytest.raises(ConfigError, match="http:// only to localhost") as raised:
        notify_target("http://hooks.example.com/T/B/secret", "notify[0]")
    assert "secret" not in str(raised.value).replace("may hold a secret", "")


def test_config_merge_keys_are_not_keys_given_twice(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("retry:\n  <<: {attempts: 3, max-wait: 5}\n  max-wait: 7\n")  # YAML merge: the key's own value wins
    assert read_config(path)["retry"] == {"attempts": 3, "max_wait": 7.0}
