"""Every error jobguard reports on purpose, each carrying the exit code the CLI returns for it.

Exit codes: 0 all done; 1 some jobs could not be drained or resubmitted, or AWS failed
beyond what retries could absorb; 2 bad usage, configuration or input (nothing changed).
"""

from __future__ import annotations


class JobguardError(Exception):
    """Base class: a message for the user, an optional hint, and an exit code."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class UsageError(JobguardError):
    """Bad flags, configuration or input: nothing was changed."""

    exit_code = 2


class ConfigError(UsageError):
    """The configuration file or a setting is invalid."""


class ManifestError(UsageError):
    """A manifest is damaged, of an unknown schema version, or belongs to another account."""


class CredentialsError(UsageError):
    """No usable AWS credentials or region."""


class StoreError(JobguardError):
    """The manifest store could not be read or written."""


class ConflictError(StoreError):
    """Another process changed the manifest since we read it."""


class LockError(JobguardError):
    """Another drain or restore holds the deploy lock."""


class AwsError(JobguardError):
    """An AWS call that is not about one job failed after retries."""
