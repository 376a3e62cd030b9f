"""What jobguard tells people on the terminal, and in GitHub Actions through workflow commands:
groups, annotations, masks, step outputs (GITHUB_OUTPUT) and the job summary (see summary.py).

Text that came from AWS or from a manifest is never trusted: every line is made one line, and in
Actions no data can form a workflow command (`::`), so a job name or an error message cannot
inject `::add-mask::`, `::error::` or `::stop-commands::`. Nothing here prints a job's submission.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import TextIO
from urllib.parse import urlsplit

from ..domain.manifest import JobRecord
from ..errors import one_line

# A zero-width space between the colons: shown the same, never parsed as a workflow command.
_BROKEN_COMMAND = ":\u200b:"
# The runner also reads the legacy form `##[command]data` anywhere in a line, not only at its start.
_LEGACY_COMMAND, _BROKEN_LEGACY = "##[", "#\u200b#["


class Reporter:
    """Writes to the terminal, and to GitHub's files when running in Actions."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None, env: Mapping[str, str] | None = None) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.env = os.environ if env is None else env
        self.github = self.env.get("GITHUB_ACTIONS") == "true"
        self.job_lines: int | None = None  # plain per-job lines shown in full; past it, only those that say something
        self._jobs = 0

    def line(self, text: str = "") -> None:
        """A plain line of output (data in it is made safe)."""
        self._print(self.safe(text), self.out)

    def safe(self, text: str) -> str:
        """One line (control characters become spaces, alignment is kept); in Actions, no `::` a runner would read."""
        cleaned = text if text.isprintable() else "".join(c if c.isprintable() else " " for c in text)
        return _unparsable(cleaned) if self.github else cleaned

    def job(self, record: JobRecord, verb: str | None = None, detail: str = "") -> None:
        """One line for one job: what happened to it."""
        replacement = f" -> {record.replacement_id} ({record.replacement_job_definition})" if record.replacement_id else ""
        said = record.error or record.note
        self._jobs += not said
        if self.job_lines is not None and not said and self._jobs > self.job_lines:
            if self._jobs == self.job_lines + 1:  # 100 000 jobs would be 100 000 lines of a CI log
                self.line(f"  ... past {self.job_lines} jobs, only those with an error or a note get a line here")
            return
        tail = f": {said}" if said else ""
        verb = f"late {verb or record.outcome}" if record.late else verb or record.outcome
        self.line(f"  {verb:<12} {record.job_name} [{record.job_id}] on {record.queue}{replacement}{detail}{tail}")

    def notice(self, text: str) -> None:
        """A waiting or progress line (to stderr, so scripts reading stdout are not disturbed)."""
        self._print(self.safe(text), self.err)

    def warning(self, text: str) -> None:
        """Something the user should know; not a failure."""
        self._print(f"::warning::{_escape(text)}" if self.github else f"warning: {self.safe(text)}", self.err)

    def error(self, text: str) -> None:
        """A failure of one job or one step."""
        self._print(f"::error::{_escape(text)}" if self.github else f"error: {self.safe(text)}", self.err)

    def hint(self, text: str) -> None:
        """How to fix what an error said."""
        self._print(f"hint: {self.safe(text)}", self.err)

    def mask(self, secret: str) -> None:
        """In Actions, keep `secret` out of the log from now on."""
        if self.github and secret and "\n" not in secret and "\r" not in secret:
            # The runner unescapes %25, %0D and %0A in the data: escape `%`, or a URL holding %0A masks another string.
            self._print(f"::add-mask::{secret.replace('%', '%25')}", self.out)

    @contextmanager
    def group(self, title: str) -> Iterator[None]:
        """A foldable group in Actions logs, a heading elsewhere."""
        self._print(f"::group::{_escape(title)}" if self.github else self.safe(title), self.out)
        try:
            yield
        finally:
            if self.github:
                self._print("::endgroup::", self.out)

    def outputs(self, values: Mapping[str, str | int]) -> None:
        """Step outputs for the action, in GITHUB_OUTPUT's heredoc form; a file that cannot be written is a warning."""
        path = self.env.get("GITHUB_OUTPUT")
        if not (self.github and path):
            return
        try:
            with open(path, "a", encoding="utf-8", opener=_without_waiting) as stream:
                for name, value in values.items():
                    marker = f"ghadelimiter_{uuid.uuid4()}"
                    stream.write(f"{name}<<{marker}\n{value}\n{marker}\n")
        except OSError as exc:
            self.warning(f"could not write the step outputs to GITHUB_OUTPUT ({exc.strerror or exc}); the work itself is done")

    def append_summary(self, markdown: str) -> None:
        """Append to the job summary (GITHUB_STEP_SUMMARY); a file that cannot be written is a warning."""
        path = self.env.get("GITHUB_STEP_SUMMARY")
        if not (self.github and path):
            return
        try:
            with open(path, "a", encoding="utf-8", opener=_without_waiting) as stream:
                stream.write(markdown)
        except OSError as exc:
            self.warning(f"could not write the job summary ({exc.strerror or exc}); the work itself is done")

    def _print(self, text: str, stream: TextIO) -> None:
        with suppress(OSError, ValueError):  # a closed pipe must not turn finished work into a failure
            print(text, file=stream, flush=True)


def _without_waiting(path: str, flags: int) -> int:
    """Open for appending without blocking: a FIFO nobody reads fails at once (ENXIO) instead of hanging the run."""
    return os.open(path, flags | os.O_NONBLOCK)


def shown_url(url: str) -> str:
    """A URL as it may be printed: scheme and host only (user-info, path and query may carry secrets)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(a URL)"
    return f"{parts.scheme}://{host}{port}/…"


def _escape(text: str) -> str:
    """Workflow-command data escaping, so a message cannot end early or inject a command."""
    return _unparsable(one_line(text, limit=4000).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A"))


def _unparsable(text: str) -> str:
    """Text in which the runner finds no workflow command: no `::`, no legacy `##[`."""
    return text.replace("::", _BROKEN_COMMAND).replace(_LEGACY_COMMAND, _BROKEN_LEGACY)
