"""The deploy's own command, run by `jobguard run`: checked before anything is drained, started with
jobguard's environment and terminal, and told of the signals jobguard gets.

Signals: a CI runner or a person stops a job by signalling it. The first SIGINT/SIGTERM is passed
on to the command, and jobguard waits for it to end: Terraform, told once, finishes the calls in
flight and saves its state. A second signal is passed on too (Terraform then stops at once) and
jobguard stops waiting: the caller leaves the deploy open (`Interrupted`).

Interactive use: when jobguard runs in the foreground of a terminal, the command stays in its
process group, so it can read the terminal (`terraform apply` asks for "yes"); Ctrl-C then reaches
it from the terminal already, and is not passed on a second time (Terraform would take two for an
emergency stop). Elsewhere (CI) the command runs in a session of its own: a signal to the whole
group of the job reaches the command once, through jobguard, and never twice.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from ..errors import UsageError

HANDLED = (signal.SIGINT, signal.SIGTERM)
NOT_FOUND, NOT_EXECUTABLE = 127, 126  # what a shell returns for a command it cannot run


class Interrupted(BaseException):
    """A signal that stops what jobguard is doing now (a second one: leave the deploy open). A
    BaseException, as KeyboardInterrupt is: no `except Exception` on the way may swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """128 + the signal, as a shell reports a command a signal ended."""
        return 128 + self.signum


def check_command(argv: Sequence[str]) -> str:
    """The path of the program `argv` runs; UsageError (exit 2) when there is none or it cannot be run."""
    if not argv:
        raise UsageError("run: name the command to run after `--`, e.g. jobguard run --queue NAME -- terraform apply -auto-approve tfplan")
    program = argv[0]
    path = program if os.sep in program else shutil.which(program)
    if path is None:
        raise UsageError(f"run: command {program!r}: not found on PATH; nothing was drained")
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise UsageError(f"run: command {program!r}: {exc.strerror}; nothing was drained") from None
    if stat.S_ISDIR(mode):
        raise UsageError(f"run: command {program!r}: is a directory; nothing was drained")
    if not stat.S_ISREG(mode) or not os.access(path, os.X_OK):
        raise UsageError(
            f"run: command {program!r}: not executable; nothing was drained", hint=f"chmod +x {program}, or name its interpreter first"
        )
    return path


@dataclass
class Signals:
    """SIGINT/SIGTERM while installed: each is passed on to the command, if one runs; the first calls
    `on_first` (which may raise `Interrupted`), the second raises `Interrupted`. Use as a context
    manager; the previous handlers come back."""

    on_first: Callable[[int], None]
    received: list[int] = field(default_factory=list)
    child: subprocess.Popen[Any] | None = None
    terminal_group: bool = False  # the command shares jobguard's group in a terminal: Ctrl-C reached it already
    _previous: dict[int, Any] = field(default_factory=dict)

    def __enter__(self) -> Signals:
        for signum in HANDLED:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)
        self.forward(signum)
        if len(self.received) > 1:
            raise Interrupted(signum)
        self.on_first(signum)

    def forward(self, signum: int) -> None:
        """Pass `signum` on to the running command (unless the terminal already gave it the same)."""
        if self.child is None or self.child.poll() is not None:
            return
        if self.terminal_group and signum == signal.SIGINT:
            return
        with suppress(ProcessLookupError):  # it ended just now
            self.child.send_signal(signum)


def in_terminal_foreground() -> bool:
    """True when jobguard is the foreground job of a terminal (a person at the keyboard)."""
    try:
        return os.isatty(sys.stdin.fileno()) and os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (OSError, ValueError):
        return False


def start(argv: Sequence[str], signals: Signals) -> subprocess.Popen[Any]:
    """Start the command with jobguard's environment, stdin, stdout and stderr (OSError if it cannot start)."""
    sys.stdout.flush()
    sys.stderr.flush()
    signals.terminal_group = in_terminal_foreground()
    child = subprocess.Popen(list(argv), start_new_session=not signals.terminal_group)
    signals.child = child
    if signals.received:  # it came while the command was being started: pass it on now
        signals.forward(signals.received[0])
    return child


def exit_code(returncode: int) -> int:
    """The command's exit code as a shell says it: 128 + N for a command that signal N ended."""
    return 128 - returncode if returncode < 0 else returncode
