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
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
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
        """Pass `signum` on to the running command (unless the terminal already gave it the same); once
        it has exited, to the processes it left running in its process group (`wait`)."""
        if self.child is None or (self.terminal_group and signum == signal.SIGINT):
            return
        if self.child.poll() is None:
            with suppress(ProcessLookupError):  # it ended just now
                self.child.send_signal(signum)
        elif not self.terminal_group:
            with suppress(ProcessLookupError, PermissionError):  # none left
                os.killpg(self.child.pid, signum)


def in_terminal_foreground() -> bool:
    """True when jobguard is the foreground job of a terminal (a person at the keyboard)."""
    if sys.stdin is None:  # started with no stdin at all (`<&-`): Python has none to give
        return False
    try:
        return os.isatty(sys.stdin.fileno()) and os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (OSError, ValueError):
        return False


def start(argv: Sequence[str], signals: Signals) -> subprocess.Popen[Any]:
    """Start the command with jobguard's environment, stdin, stdout and stderr (OSError if it cannot start)."""
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:  # None when jobguard was started with that descriptor closed
            stream.flush()
    signals.terminal_group = in_terminal_foreground()
    child = subprocess.Popen(list(argv), start_new_session=not signals.terminal_group)
    signals.child = child
    if signals.received:  # it came while the command was being started: pass it on now
        signals.forward(signals.received[0])
    return child


def wait(child: subprocess.Popen[Any], signals: Signals, say: Callable[[str], None]) -> int:
    """The command's return code, once it and every process it left in its process group have ended.

    A command that starts the apply in the background and exits (`terraform apply &` in a script, a
    wrapper that forks) leaves the apply running: restoring then would submit jobs to queues the apply
    is still deleting. Outside a terminal the command leads a process group of its own, so what it
    left behind is found there (a process that made a session of its own is not: a daemon is not the
    apply). In a terminal it shares jobguard's group: only the command itself is waited for.
    """
    code = child.wait()
    if signals.terminal_group:
        return code
    told = False
    while _group_alive(child.pid):
        if not told:
            said = f"exited with code {exit_code(code)}" if code else "exited"
            say(
                f"jobguard run: the command {said}, but processes of the command still run (its process group {child.pid}): "
                "waiting for them before restoring (they may still be applying); a signal is passed on to them"
            )
            told = True
        time.sleep(0.2)
    return code


def _group_alive(pgid: int) -> bool:
    """True while a live process (not a zombie no one reaped) is in process group `pgid`."""
    proc = Path("/proc")
    if not proc.is_dir():  # no /proc (macOS): ask the kernel, zombies count
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for stat_file in proc.glob("[0-9]*/stat"):
        with suppress(OSError, ValueError, IndexError):
            # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                return True
    return False


def exit_code(returncode: int) -> int:
    """The command's exit code as a shell says it: 128 + N for a command that signal N ended."""
    return 128 - returncode if returncode < 0 else returncode
