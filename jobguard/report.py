"""What jobguard tells people: one line per job, a summary with counts, and in GitHub Actions
the job summary (GITHUB_STEP_SUMMARY), step outputs (GITHUB_OUTPUT), groups and annotations.

Nothing here prints a job's submission: environment overrides may hold secrets.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TextIO

from .manifest import JobRecord, Manifest

COLUMNS = ("job name", "queue", "status at drain", "outcome", "replacement", "now")


class Reporter:
    """Writes to the terminal, and to GitHub's files when running in Actions."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None, env: Mapping[str, str] | None = None) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.env = os.environ if env is None else env
        self.github = self.env.get("GITHUB_ACTIONS") == "true"

    def line(self, text: str = "") -> None:
        """A plain line of output."""
        print(text, file=self.out, flush=True)

    def job(self, record: JobRecord, verb: str | None = None) -> None:
        """One line for one job: what happened to it."""
        detail = f" -> {record.replacement_id} ({record.replacement_job_definition})" if record.replacement_id else ""
        error = f": {record.error}" if record.error else ""
        self.line(f"  {verb or record.outcome:<12} {record.job_name} [{record.job_id}] on {record.queue}{detail}{error}")

    def warning(self, text: str) -> None:
        """Something the user should know; not a failure."""
        print(f"::warning::{_escape(text)}" if self.github else f"warning: {text}", file=self.err, flush=True)

    def error(self, text: str) -> None:
        """A failure of one job or one step."""
        print(f"::error::{_escape(text)}" if self.github else f"error: {text}", file=self.err, flush=True)

    @contextmanager
    def group(self, title: str) -> Iterator[None]:
        """A foldable group in Actions logs, a heading elsewhere."""
        self.line(f"::group::{title}" if self.github else f"{title}")
        try:
            yield
        finally:
            if self.github:
                self.line("::endgroup::")

    def table(self, manifest: Manifest, current: Mapping[str, str] | None = None) -> None:
        """The jobs of a manifest as an aligned table, then the counts."""
        rows = [_row(r, current or {}) for r in manifest]
        widths = [max([len(c)] + [len(row[i]) for row in rows]) for i, c in enumerate(COLUMNS)]
        for row in [COLUMNS, *rows]:
            self.line("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip())
        self.line(counts_line(manifest))

    def summary(self, title: str, manifest: Manifest, uri: str, current: Mapping[str, str] | None = None) -> None:
        """In Actions, append the manifest as a Markdown table to the job summary."""
        path = self.env.get("GITHUB_STEP_SUMMARY")
        if not (self.github and path):
            return
        lines = [f"### jobguard {title}: deploy `{manifest.deploy_id}`", "", f"Manifest: `{uri}`", ""]
        if manifest.jobs:
            lines += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
            lines += ["| " + " | ".join(_markdown(c) for c in _row(r, current or {})) + " |" for r in manifest]
        else:
            lines.append("No jobs were recorded.")
        lines += ["", f"**{counts_line(manifest)}**", ""]
        errors = [r for r in manifest if r.error]
        if errors:
            lines += ["<details><summary>Errors</summary>", ""]
            lines += [f"- `{r.job_name}` ({r.job_id}): {_markdown(r.error or '')}" for r in errors]
            lines += ["", "</details>", ""]
        with open(path, "a", encoding="utf-8") as stream:
            stream.write("\n".join(lines) + "\n")

    def outputs(self, values: Mapping[str, str | int]) -> None:
        """Step outputs for the action, in GITHUB_OUTPUT's heredoc form."""
        path = self.env.get("GITHUB_OUTPUT")
        if not (self.github and path):
            return
        with open(path, "a", encoding="utf-8") as stream:
            for name, value in values.items():
                marker = f"ghadelimiter_{uuid.uuid4()}"
                stream.write(f"{name}<<{marker}\n{value}\n{marker}\n")


def counts_line(manifest: Manifest) -> str:
    """`N jobs: a resubmitted, b failed, ...`, only the outcomes that occur."""
    counts = {k: v for k, v in manifest.counts().items() if v}
    parts = ", ".join(f"{v} {k}" for k, v in counts.items())
    return f"{len(manifest.jobs)} jobs" + (f": {parts}" if parts else "")


def _row(record: JobRecord, current: Mapping[str, str]) -> tuple[str, ...]:
    replacement = record.replacement_id or "-"
    return (record.job_name, record.queue, record.status_at_drain, record.outcome, replacement, current.get(replacement, "-"))


def _markdown(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _escape(text: str) -> str:
    """Workflow-command data escaping, so a message cannot end early or inject a command."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
