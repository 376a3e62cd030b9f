"""Every error jobguard reports on purpose, each carrying the exit code the CLI returns for it.

Exit codes (the README's table is this one):
  0  done
  1  some jobs could not be drained or resubmitted; the others were, and the manifest says which and why
  2  bad input: a flag, setting, config file, plan or manifest is wrong, unsigned or tampered with; nothing was changed
  3  another jobguard run holds the deploy lease of a queue, or took it over from this run, which stopped
  4  AWS or the manifest store could not be reached, or refused a call, after retries
  5  an internal error (a bug): the message says how to get the traceback
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_JOBS_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_LEASE = 3
EXIT_UNREACHABLE = 4
EXIT_INTERNAL = 5
EXIT_INTERRUPTED = 130


class JobguardError(Exception):
    """Base class: a one-line message for the user, an optional hint, and an exit code."""

    exit_code = EXIT_JOBS_FAILED

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(one_line(message))
        self.hint = one_line(hint) if hint else None


class UsageError(JobguardError):
    """Bad flags, configuration or input: nothing was changed."""

    exit_code = EXIT_BAD_INPUT


class ConfigError(UsageError):
    """The configuration file or a setting is invalid."""


class ManifestError(UsageError):
    """A manifest is damaged, of an unknown schema version, or not this account's or region's."""


class SignatureError(ManifestError):
    """A manifest is unsigned or its signature does not verify: it may have been tampered with."""


class CredentialsError(UsageError):
    """No usable AWS credentials, profile or region."""


class LeaseError(JobguardError):
    """Another jobguard run holds the deploy lease of a queue (or took it over from this run)."""

    exit_code = EXIT_LEASE


class ConflictError(LeaseError):
    """Another writer changed a stored document since it was read."""


class UnreachableError(JobguardError):
    """AWS or the store could not be reached, or refused a call, after retries."""

    exit_code = EXIT_UNREACHABLE


class StoreError(UnreachableError):
    """The manifest store could not be read or written."""


class AwsError(UnreachableError):
    """An AWS call that is not about one job failed after retries."""


class JobCallError(JobguardError):
    """A call about one job failed after retries; the command records it on that job and goes on.

    `uncertain` is True when no answer came (a 5xx, a dropped connection): the call may have
    been carried out.
    """

    def __init__(self, message: str, code: str, uncertain: bool = False) -> None:
        super().__init__(message)
        self.code, self.uncertain = code, uncertain


def one_line(text: str, limit: int = 600) -> str:
    """Text as one printable line: newlines and control characters become spaces, long text is cut."""
    cleaned = "".join(c if c.isprintable() else " " for c in text)
    cleaned = " ".join(cleaned.split())
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"
