"""`jobguard run -- COMMAND`: the two steps around an apply as one process, for any CI or a shell.

1. drain, exactly as `jobguard drain` (leases, plan, policies), but the leases stay held by this
   process (renewed by their heartbeat) for as long as the command runs: a long apply never looks
   like a deploy that died, and no other run takes the queues meanwhile;
2. COMMAND, with jobguard's environment and terminal (child.py), while the watcher (watcher.py)
   records every job submitted to the queues at risk before the apply can take its queue away;
   not started when the drain did not finish cleanly (its jobs are restored, as a workflow's
   `if: always()` restore step does after a failed drain);
3. restore of this deploy, whatever the command's exit: the jobs drained, and the late jobs the
   apply killed, each exactly once.

The exit code is the command's when it failed, else jobguard's own. The first SIGINT/SIGTERM stops
a drain (what it stopped is restored, nothing else is started), or is passed on to the command and
waited for; a second one, or a kill, leaves the deploy open: the line printed before anything
happens says how to restore it by hand.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..adapters.lease import Leases, lease_scope
from ..errors import EXIT_INTERNAL, JobguardError
from ..options import DEFAULT_STORE
from . import child
from .context import Context
from .drain import Drained, drain
from .restore import Restored, restore
from .watcher import Watcher

DRAINING, STARTING, RUNNING, RESTORING = "draining", "starting", "running", "restoring"


@dataclass
class Steps:
    """What the CLI does after each step (counts, job summary, outputs, notifications): the step's exit code."""

    drained: Callable[[Drained], int]
    restored: Callable[[Restored], int]


def run(ctx: Context, deploy_id: str, argv: Sequence[str], steps: Steps) -> int:
    """Drain, run `argv` while watching the queues at risk, restore; the exit code (see the module)."""
    return _Run(ctx, deploy_id, list(argv), steps).go()


def restore_hint(ctx: Context, deploy_id: str) -> str:
    """The command that restores this deploy by hand."""
    options = ctx.options
    store = "" if options.store == DEFAULT_STORE else f" --store {options.store}"
    key = " --unsigned" if options.unsigned else f" --signing-key {options.signing_key}" if options.signing_key else ""
    return f"jobguard restore --deploy-id {deploy_id}{store}{key}"


class _Run:
    def __init__(self, ctx: Context, deploy_id: str, argv: list[str], steps: Steps) -> None:
        self.ctx, self.deploy_id, self.argv, self.steps = ctx, deploy_id, argv, steps
        self.leases = Leases(ctx.store, deploy_id, ctx.options.lease, ctx.report.notice, lease_scope(ctx.account, ctx.region))
        self.signals = child.Signals(on_first=self._first_signal)
        self.phase = DRAINING
        self.hint = restore_hint(ctx, deploy_id)

    def go(self) -> int:
        report = self.ctx.report
        report.line(f"jobguard run: deploy {self.deploy_id}, manifest {self.ctx.store.uri(self.deploy_id)}")
        report.line(f"if jobguard is stopped before it restores, restore by hand: {self.hint}")
        with self.signals:
            try:
                return self._steps()
            except child.Interrupted as stop:
                # The deploy keeps its queues (the command may still run); a restore by hand takes them at once.
                self.leases.release(keep_for_deploy=True, raise_errors=False)
                report.error(f"interrupted twice ({stop}): deploy {self.deploy_id} left open; the command may still be running")
                report.hint(f"once it has ended: {self.hint}")
                return stop.exit_code

    def _steps(self) -> int:
        drained, drain_code = self._drain()
        if drained is None and not self.leases.held:
            return drain_code  # it failed before it took a queue: nothing was drained, nothing to restore
        command_code: int | None = None
        if self.signals.received:
            self.ctx.report.line("jobguard run: the command was not started (stopped by a signal); restoring")
        elif drained is None or drain_code:
            self.ctx.report.error(f"the command was not started: the drain did not finish cleanly (exit {drain_code}); restoring")
        else:
            try:
                command_code = self._command(drained)
            except Exception as exc:  # a bug of jobguard's while the command ran: its drained jobs are still restored
                self.ctx.report.error(f"run: internal error while the command ran: {type(exc).__name__}: {exc}; restoring")
                command_code = EXIT_INTERNAL
        restore_code = self._restore()
        return command_code or drain_code or restore_code

    def _drain(self) -> tuple[Drained | None, int]:
        try:
            try:
                result = drain(self.ctx, self.deploy_id, self.leases)
            finally:
                self.phase = STARTING  # from here a first signal only keeps the command from starting
                self.ctx.events.deliver()
        except JobguardError as exc:
            return None, self._said(exc)
        except child.Interrupted as stop:  # the first signal, during the drain: what it stopped is restored now
            return None, stop.exit_code
        return result, self.steps.drained(result)

    def _command(self, drained: Drained) -> int:
        self.phase = RUNNING
        manifest = drained.manifest
        queues = list(dict.fromkeys([*manifest.queues, *manifest.queue_successors.values()]))
        watcher = Watcher(self.ctx, manifest, queues, self.ctx.options.watch_interval)
        watcher.start()
        try:
            code = child.exit_code(child.wait(child.start(self.argv, self.signals), self.signals, self.ctx.report.line))
            if not code and self.signals.received:  # it was stopped (what it left behind, or it exited 0 on the signal):
                code = 128 + self.signals.received[0]  # a cancelled deploy never reads as a success
        except child.Interrupted:
            watcher.stop(final=False)
            raise
        except OSError as exc:  # gone, or changed, since it was checked
            watcher.stop(final=False)
            self.ctx.report.error(f"run: command {self.argv[0]!r}: {exc.strerror or exc}")
            return child.NOT_FOUND if isinstance(exc, FileNotFoundError) else child.NOT_EXECUTABLE
        watcher.stop()
        said = f"ended with exit code {code}" if code else "succeeded"
        self.ctx.report.line(f"jobguard run: the command {said}; restoring deploy {self.deploy_id}")
        return code

    def _restore(self) -> int:
        self.phase = RESTORING
        try:
            try:
                result = restore(self.ctx, self.deploy_id, named=False, leases=self.leases)
            finally:
                self.ctx.events.deliver()
        except JobguardError as exc:
            self.leases.release(keep_for_deploy=False, raise_errors=False)  # as a restore that fails lets them go
            return self._said(exc, f"restore again when the cause is fixed: {self.hint}")
        try:
            self.leases.release(keep_for_deploy=False)
        except JobguardError as exc:  # restored, but a queue's lease is still held: the next deploy would wait for it
            failed = self._said(exc)
            return self.steps.restored(result) or failed
        return self.steps.restored(result)

    def _said(self, exc: JobguardError, hint: str | None = None) -> int:
        """One error line and at most one hint (the error's own, else `hint`); its exit code."""
        self.ctx.report.error(str(exc))
        if exc.hint or hint:
            self.ctx.report.hint(exc.hint or hint or "")
        return exc.exit_code

    def _first_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        from_terminal = self.signals.terminal_group and signum == signal.SIGINT
        told = "the command got it from the terminal" if from_terminal else "passed to the command"
        then = {
            DRAINING: "the drain stops here and the command will not be started; what it stopped is restored",
            STARTING: "the command will not be started; what the drain stopped is restored",
            RUNNING: f"{told}; waiting for it to end (Terraform saves its state), then restoring",
            RESTORING: "finishing the restore",
        }[self.phase]
        self.ctx.report.line(f"jobguard run: {name}: {then} (a second signal leaves the deploy open)")
        if self.phase == DRAINING:  # drain is safe to stop anywhere (as a kill would), and nothing runs yet
            raise child.Interrupted(signum)
