"""The tables people read: a terminal table for `status`, and the Markdown job summary in Actions.

Each row says what a job ran (its revision), how long it had run when drained, what became of
it, and where its replacement is (a link to the AWS console) on which revision. A summary stays
under GitHub's 1 MiB step-summary limit: the first rows in full, then counts and the manifest's URI.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from ..domain.manifest import RECORDED, TERMINATING, JobRecord, Manifest
from ..domain.window import late_line, window_line
from ..errors import one_line
from .report import Reporter

# GitHub refuses a step summary over 1 MiB; leave room for the other steps' summaries.
SUMMARY_BUDGET = 512 * 1024
MAX_ROWS = 1000


def counts_line(manifest: Manifest) -> str:
    """`N jobs: a resubmitted, b failed, ...`, only the outcomes that occur."""
    counts = {k: v for k, v in manifest.counts().items() if v}
    parts = ", ".join(f"{v} {k}" for k, v in counts.items())
    late = sum(1 for r in manifest if r.late)
    return (
        f"{len(manifest.jobs)} jobs"
        + (f": {parts}" if parts else "")
        + (f" ({late} of them late: submitted during the deploy)" if late else "")
    )


def window_lines(manifest: Manifest) -> list[str]:
    """The deploy window's sentence, then one line per late job (replaced old -> new, or left alone), with why."""
    head = window_line(manifest.deploy_id, manifest.window)
    return ([head] if head else []) + [late_line(r) for r in manifest if r.late][:MAX_ROWS]


def console_url(region: str, job_id: str) -> str:
    """The job's page in the AWS console."""
    return f"https://{region}.console.aws.amazon.com/batch/home?region={region}#jobs/detail/{job_id}"


def ran_for(record: JobRecord) -> str:
    """How long the job had run when it was stopped (or recorded), as 2h 13m; '-' if it had not started."""
    if not record.started_at:
        return "-"
    stopped = record.times.get(TERMINATING) or record.times.get(RECORDED)
    if not stopped:
        return "-"
    from datetime import datetime

    try:
        end = datetime.fromisoformat(stopped.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return "-"
    seconds = max(0, int(end - record.started_at / 1000))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h {rest // 60:02d}m" if hours else f"{rest // 60}m {rest % 60:02d}s"


def revision(record: JobRecord) -> str:
    """rnaseq:1, or rnaseq:1 -> rnaseq:2 once replaced."""
    if record.replacement_job_definition and record.replacement_job_definition != record.job_definition:
        return f"{record.job_definition} -> {record.replacement_job_definition}"
    return record.job_definition


def _row(record: JobRecord, current: Mapping[str, str] | None) -> list[str]:
    row = [
        record.job_name,
        record.queue,
        f"late {record.status_at_drain}" if record.late else record.status_at_drain,
        ran_for(record),
        revision(record),
        record.outcome,
        record.replacement_id or "-",
    ]
    if current is not None:
        row.append(current.get(record.replacement_id or "", "-"))
    return row


def print_table(report: Reporter, manifest: Manifest, current: Mapping[str, str] | None) -> None:
    """The jobs of a manifest as an aligned table, then the counts."""
    columns = ["job name", "queue", "at drain", "ran for", "revision", "outcome", "replacement"] + (["now"] if current is not None else [])
    rows = [_row(r, current) for r in manifest]
    widths = [max([len(c)] + [len(row[i]) for row in rows]) for i, c in enumerate(columns)]
    for row in [columns, *rows]:
        report.line("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip())
    report.line(counts_line(manifest))
    for line in window_lines(manifest):
        report.line(line)


def markdown(
    title: str,
    manifest: Manifest,
    uri: str,
    facts: Sequence[str] = (),
    current: Mapping[str, str] | None = None,
    budget: int = SUMMARY_BUDGET,
) -> str:
    """The job summary section of one manifest, within `budget` bytes (UTF-8, as GitHub counts them)."""
    lines = [f"### jobguard {title}: deploy `{_cell(manifest.deploy_id)}`", "", f"Manifest: `{_cell(uri)}`", ""]
    if manifest.origin.get("run_url"):
        lines += [f"Drained by {_text(manifest.origin['run_url'])}", ""]
    for said, fact in enumerate(facts):  # a quarter of the budget at most: the jobs are what people came for
        line = f"- {_text(fact)}"
        if _size(lines) + _size([line]) > budget // 4:
            lines.append(f"- … and {len(facts) - said} more: see the step's log")
            break
        lines.append(line)
    if facts:
        lines.append("")
    problems = [r for r in manifest if r.error][:50]
    errors = ["<details><summary>Errors</summary>", ""] if problems else []
    errors += [f"- `{_cell(r.job_name)}` ({r.job_id}): {_text(one_line(r.error or '', 500))}" for r in problems]
    errors += ["", "</details>", ""] if problems else []
    columns = ["job", "queue", "at drain", "ran for", "revision", "outcome", "replacement"] + (["now"] if current is not None else [])
    if manifest.jobs:
        lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    size = _size(lines) + _size(errors) + 1024  # room for the counts and the "more jobs" line
    shown = 0
    for record in manifest:
        line = _markdown_row(record, manifest.region, current)
        if shown >= MAX_ROWS or size + _size([line]) > budget:
            break
        lines.append(line)
        size += _size([line])
        shown += 1
    if shown < len(manifest.jobs):
        lines += [
            "",
            f"… and {len(manifest.jobs) - shown} more jobs: every one is in the manifest `{_cell(uri)}` (`jobguard status --json`).",
        ]
    if not manifest.jobs:
        lines.append("No jobs were recorded.")
    lines += ["", f"**{counts_line(manifest)}**", ""]
    told = [f"- {_text(line)}" for line in window_lines(manifest)[:50] if line not in facts]
    lines += [*told, ""] if told else []
    lines += errors
    return "\n".join(lines) + "\n"


def sections(
    title: str,
    manifests: Sequence[Manifest],
    uri: Callable[[str], str],
    facts: Sequence[str] = (),
    current: Mapping[str, str] | None = None,
) -> str:
    """One step's job summary: a section per manifest (the facts in the first), together within SUMMARY_BUDGET."""
    if not manifests:
        return "".join(f"- {_text(fact)}\n" for fact in facts[:MAX_ROWS])
    share = SUMMARY_BUDGET // len(manifests)
    return "".join(markdown(title, m, uri(m.deploy_id), facts if i == 0 else (), current, budget=share) for i, m in enumerate(manifests))


def _size(lines: Sequence[str]) -> int:
    """Bytes of `lines` in the summary file, newlines included."""
    return sum(len(line.encode()) + 1 for line in lines)


def _markdown_row(record: JobRecord, region: str, current: Mapping[str, str] | None) -> str:
    cells = [_cell(c) for c in _row(record, current)]
    cells[0] = f"[{cells[0]}]({console_url(region, record.job_id)})"
    cells[4] = _cell(revision(record).replace(" -> ", " → "))
    if record.replacement_id:
        cells[6] = f"[{cells[6]}]({console_url(region, record.replacement_id)})"
    if record.note:
        cells[5] += f" ({_cell(record.note)})"
    return "| " + " | ".join(cells) + " |"


def _cell(text: str) -> str:
    return _text(text).replace("|", "\\|").replace("`", "'")


def _text(text: str) -> str:
    """Markdown-safe, one line: data from AWS or a manifest cannot open HTML or break the table."""
    return " ".join(text.split()).replace("<", "&lt;").replace(">", "&gt;").replace("[", "\\[").replace("]", "\\]")
