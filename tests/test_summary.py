"""The job summary people read in GitHub Actions: the revision each job ran and came back on, how long
it had run, links to the AWS console, what happened to each queue, and a size within GitHub's limit."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from jobguard.domain.manifest import RESUBMITTED, TERMINATED, TERMINATING, JobRecord, Manifest
from jobguard.output.summary import markdown, sections
from jobguard.sim import Seeder, SimulatedAWS, Timing

from .conftest import replacements_of

PLANS = Path(__file__).parent / "plans"
CONSOLE = "https://us-east-1.console.aws.amazon.com/batch/home?region=us-east-1#jobs/detail/"
MIB = 1024 * 1024


@pytest.fixture
def summary(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """GitHub Actions' job summary file for this step."""
    path = workdir / "step-summary.md"
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(path))
    monkeypatch.setenv("GITHUB_OUTPUT", str(workdir / "outputs"))
    return path


def _plan(workdir: Path) -> Path:
    """A plan that replaces the science queue and deletes the legacy one."""
    plan = json.loads((PLANS / "queue-replace.json").read_text())
    plan["resource_changes"] += [
        c for c in json.loads((PLANS / "queue-delete.json").read_text())["resource_changes"] if c["address"] == "aws_batch_job_queue.legacy"
    ]
    path = workdir / "plan.json"
    path.write_text(json.dumps(plan))
    return path


def _row(text: str, name: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"| [{name}]"))


@pytest.mark.slow
def test_the_summary_shows_revisions_run_time_links_and_what_happened_to_each_queue(
    seed: Seeder, aws: SimulatedAWS, run: Any, workdir: Path, summary: Path
) -> None:
    aws.batch.timing = Timing(stop_seconds=0.0, cancel_seconds=0.0, list_lag_seconds=0.0)
    for queue in ("science-queue", "etl-queue", "legacy-queue"):
        seed.queue(queue)
    seed.definition("rnaseq")
    ran = 2 * 3600 + 13 * 60 + 20
    align = seed.job(jobName="align", jobQueue="science-queue", jobDefinition="rnaseq", age=2 * ran)  # started `ran` s ago
    waiting = seed.job(status="RUNNABLE", jobName="waiting", jobQueue="science-queue", jobDefinition="rnaseq")
    quick = seed.job(jobName="quick", jobQueue="science-queue", jobDefinition="rnaseq")
    # quick finishes while drain gives running jobs their grace period (DescribeJobs 1 records the queued job; 2 is a poll)
    aws.after = lambda action, n: aws.batch.set_status(quick, "SUCCEEDED") if action == "batch:DescribeJobs" and n == 2 else None
    store = f"file://{workdir}/manifests"
    queues = ("--queue", "science-queue", "--queue", "etl-queue")
    drained = run("drain", "--store", store, *queues, "--plan", str(_plan(workdir)), "--freeze", "--grace", "1s", "--deploy-id", "d1")
    assert drained.code == 0, drained.err
    text = summary.read_text()
    assert "### jobguard drain: deploy `d1`" in text and f"Manifest: `{store}/d1.json`" in text
    for fact in (
        "- queue science-queue: frozen (disabled) until restore",
        "- 1 jobs finished within the grace period (1 s): nothing to resubmit",
        "- queue etl-queue: not at risk: the plan deletes, replaces or rebuilds nothing it runs on",
        "- queue legacy-queue: at risk (aws_batch_job_queue.legacy will be deleted) but not one of the configured queues: left alone",
    ):
        assert fact in text.splitlines(), fact
    assert "| job | queue | at drain | ran for | revision | outcome | replacement |" in text  # no `now` column to leave empty
    assert _row(text, "align") == f"| [align]({CONSOLE}{align}) | science-queue | RUNNING | 2h 13m | rnaseq:1 | terminated | - |"
    assert _row(text, "waiting") == f"| [waiting]({CONSOLE}{waiting}) | science-queue | RUNNABLE | - | rnaseq:1 | terminated | - |"
    assert "quick" not in text and "**2 jobs: 2 terminated**" in text

    seed.definition("rnaseq", containerProperties={"image": "rnaseq:2", "command": ["align"]})  # the deploy
    summary.write_text("")
    restored = run("restore", "--store", store, "--deploy-id", "d1")
    assert restored.code == 0, restored.err
    text = summary.read_text()
    replacement = replacements_of(aws)[align][0]
    row = _row(text, "align")
    assert row.startswith(f"| [align]({CONSOLE}{align}) | science-queue | RUNNING | 2h 13m | rnaseq:1 → rnaseq:2 | resubmitted")
    assert row.endswith(f"| [{replacement}]({CONSOLE}{replacement}) |")
    assert "took rnaseq:2's" in row  # the values the new revision changed, in the outcome cell
    assert "**2 jobs: 2 resubmitted**" in text
    outputs = {m[1]: m[3] for m in re.finditer(r"^(\S+)<<(ghadelimiter_\S+)\n(.*?)\n\2$", (workdir / "outputs").read_text(), re.M | re.S)}
    assert json.loads(outputs["replacements"]) == {align: replacement, waiting: replacements_of(aws)[waiting][0]}

    aws.batch.set_status(replacement, "RUNNING")
    summary.write_text("")
    assert run("status", "--store", store, "--deploy-id", "d1").code == 0
    text = summary.read_text()
    assert "| job | queue | at drain | ran for | revision | outcome | replacement | now |" in text
    assert _row(text, "align").endswith(f"| [{replacement}]({CONSOLE}{replacement}) | RUNNING |")  # the `now` column, filled


def test_a_restore_left_alone_says_so_in_the_summary(seed: Seeder, aws: SimulatedAWS, run: Any, workdir: Path, summary: Path) -> None:
    seed.queue("work")
    seed.definition("proc")
    seed.job(jobName="j", jobQueue="work", jobDefinition="proc")
    store = f"file://{workdir}/manifests"
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    summary.write_text("")
    assert run("restore", "--store", store).code == 0  # by hand, while d1 is in its apply
    assert "- queue work: left alone: deploy d1 holds it" in summary.read_text()


def _manifest(jobs: int, deploy_id: str = "d1") -> Manifest:
    """A manifest of `jobs` resubmitted jobs with the longest names, notes and errors a record may hold."""
    manifest = Manifest(deploy_id, "123456789012", "us-east-1", "2024-06-01T00:00:00.000Z", "2024-06-01T01:00:00.000Z")
    for i in range(jobs):
        job_id = f"{i:08d}-1111-2222-3333-444444444444"
        manifest.put(
            [
                JobRecord(
                    job_id=job_id,
                    job_arn=f"arn:aws:batch:us-east-1:123456789012:job/{job_id}",
                    job_name=f"{'n' * 119}-{i:08d}",
                    queue="q" * 128,
                    job_definition=f"{'d' * 118}:123456789",
                    status_at_drain="RUNNING",
                    submission={"jobName": "x"},
                    outcome=RESUBMITTED if i % 2 else TERMINATED,
                    stage="restore",
                    times={TERMINATING: "2024-06-01T00:30:00.000Z"},
                    started_at=1717200000000,
                    replacement_id=f"{i:08d}-5555-6666-7777-888888888888" if i % 2 else None,
                    replacement_job_definition=f"{'d' * 118}:123456790",
                    note="é…" * 1000,  # the longest note, in characters that take more than a byte each
                    error="ü" * 2000 if i % 3 == 0 else None,
                )
            ]
        )
    return manifest


def test_a_10000_job_summary_fits_githubs_limit() -> None:
    manifest = _manifest(10_000)
    facts = [f"queue {'q' * 120}-{i}: not at risk: the plan deletes, replaces or rebuilds nothing it runs on" for i in range(100)]
    text = markdown("restore", manifest, "s3://bucket/deploys/d1.json", facts)
    assert len(text.encode()) < MIB
    shown = [line for line in text.splitlines() if line.startswith("| [")]
    assert 0 < len(shown) < 10_000
    assert shown[0].startswith(f"| [{'n' * 119}-00000000]")  # the first rows in full
    assert f"… and {10_000 - len(shown)} more jobs: every one is in the manifest `s3://bucket/deploys/d1.json`" in text
    assert "**10000 jobs: 5000 terminated, 5000 resubmitted**" in text


def test_summaries_of_several_deploys_together_fit_githubs_limit() -> None:
    """A restore that adopted other deploys writes one section each into the same step summary."""
    manifests = [_manifest(3000, f"d{i}") for i in range(4)]
    text = sections("restore", manifests, lambda deploy_id: f"s3://bucket/deploys/{deploy_id}.json", ["a fact"])
    assert len(text.encode()) < MIB
    assert all(f"### jobguard restore: deploy `d{i}`" in text for i in range(4))


def test_a_cell_cannot_break_the_table_or_open_html() -> None:
    manifest = _manifest(1)
    (record,) = manifest
    manifest.put([replace(record, note="a | b <script>x</script> [link](http://evil) `code`\nnext")])
    row = next(line for line in markdown("drain", manifest, "file:///m").splitlines() if line.startswith("| ["))
    assert row.count(" | ") == 6 and "<script>" not in row and "[link](http://evil)" not in row and "\n" not in row
    assert re.search(r"a \\\| b &lt;script&gt;", row)


def test_drain_and_restore_print_a_line_for_each_of_the_first_jobs_then_only_those_that_say_something(
    seed: Seeder, aws: SimulatedAWS, run: Any, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """100 000 jobs would be 100 000 lines of a CI log: past `JOB_LINES` plain job lines (3 here), drain and
    restore say once that they leave them out, and still print the counts. `status` lists every job."""
    monkeypatch.setattr("jobguard.cli.JOB_LINES", 3)
    aws.batch.timing = Timing.instant()
    seed.queue("work")
    seed.definition("proc")
    jobs = [seed.job(status="RUNNING", jobName=f"j{i}", jobQueue="work", jobDefinition="proc") for i in range(6)]
    store = f"file://{workdir}/m"
    drained = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1")
    assert drained.code == 0, drained.err
    assert sum(line.startswith("  terminated ") for line in drained.out.splitlines()) == 3, drained.out
    assert drained.out.count("only those with an error or a note get a line here") == 1
    assert "6 jobs: 6 terminated" in drained.out, drained.out
    restored = run("restore", "--store", store, "--deploy-id", "d1")
    assert restored.code == 0, restored.err
    assert sum(line.startswith("  resubmitted ") for line in restored.out.splitlines()) == 3, restored.out
    assert len(replacements_of(aws)) == 6
    shown = run("status", "--store", store, "--deploy-id", "d1")
    assert all(f"j{i}  " in shown.out for i in range(len(jobs))), shown.out
