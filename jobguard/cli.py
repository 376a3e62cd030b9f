"""The `jobguard` command line: flags into Options, the adapters wired, a command run, and the one
place that turns errors into one-line messages and exit codes (see errors.py for the codes)."""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import secrets
import sys
import traceback
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, NoReturn

from . import __version__
from .adapters.aws import Aws
from .adapters.batch import Batch
from .adapters.eventbridge import publish
from .adapters.signing import Signer, default_key_file, open_signer
from .adapters.stores import Store, open_store
from .commands.context import Context
from .commands.manifests import Manifests
from .domain.manifest import FAILED, RESTORE, RESUBMITTED, TERMINATED, Manifest, replacements
from .errors import EXIT_INTERNAL, EXIT_INTERRUPTED, CredentialsError, JobguardError, UsageError
from .options import DEFAULT_STORE, Options, parse_flags, resolve
from .options import deploy_id as parse_deploy_id
from .output.events import Events
from .output.notify import Notifier
from .output.report import Reporter
from .output.summary import counts_line, sections

if TYPE_CHECKING:
    from .commands.drain import Drained, EarlyReads
    from .commands.restore import Restored

JOB_LINES = 1000  # per-job lines a drain or restore prints in full (the summary, `status` and the manifest have every job)


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is a one-line UsageError like every other bad input."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}", hint=f"see `{self.prog} --help`")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = _Parser(prog="jobguard", description="Drain AWS Batch jobs before a deploy and resubmit them after, exactly once.")
    parser.add_argument("--version", action="version", version=f"jobguard {__version__}")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an internal error")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument(
            "--store", metavar="URI", help=f"manifest store: file://PATH, s3://BUCKET/PREFIX or dynamodb://TABLE (default {DEFAULT_STORE})"
        )
        sub.add_argument("--config", metavar="FILE", help="YAML config file (default .jobguard.yml when present)")
        sub.add_argument("--deploy-id", metavar="ID", help="the deploy (default: GITHUB_RUN_ID in Actions)")
        sub.add_argument(
            "--signing-key", metavar="KEY", help="kms:KEY_ID_OR_ARN or file:PATH (file store default: ~/.config/jobguard/signing.key)"
        )
        sub.add_argument(
            "--unsigned", action="store_const", const="true", help="write unsigned manifests and accept unsigned ones (warned)"
        )
        sub.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
        return sub

    def lease_flags(sub: argparse.ArgumentParser, dry_run: bool = True) -> None:
        sub.add_argument("--lock-timeout", metavar="SECONDS", help="wait this long for another run's deploy lease (default 300)")
        sub.add_argument("--stop-timeout", metavar="DURATION", help="wait this long for stopped jobs to end (default 180s)")
        sub.add_argument(
            "--notify", action="append", metavar="TARGET", help="send a summary to sns:TOPIC_ARN or a webhook URL (repeatable)"
        )
        sub.add_argument("--event-bus", metavar="NAME", help="publish one EventBridge event per job to this bus")
        sub.add_argument("--events-file", metavar="PATH", help="append one JSON line per job event to this file")
        if dry_run:
            sub.add_argument("--dry-run", action="store_const", const="true", help="list what would be done; change nothing")

    def drain_flags(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--queue", dest="queues", action="append", metavar="NAME", help="job queue name or ARN jobguard may act on (repeatable)"
        )
        sub.add_argument("--plan", metavar="PLAN.json", help="`terraform show -json` output: drain only the queues it puts at risk")
        sub.add_argument("--grace", metavar="DURATION", help="drain queued jobs, then let running ones finish this long (90s, 30m, 1h)")
        sub.add_argument("--freeze", action="store_const", const="true", help="disable the queues for the deploy; restore enables them")
        sub.add_argument(
            "--no-freeze", dest="freeze", action="store_const", const="false", help="do not disable even the queues the plan deletes"
        )

    def job_definition_flag(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--job-definition", metavar="latest|recorded", help="newest ACTIVE revision (default), or the recorded one while ACTIVE"
        )

    drain_cmd = command("drain", "record, stop and wait for every active job of the queues at risk")
    drain_flags(drain_cmd)
    lease_flags(drain_cmd)

    restore_cmd = command("restore", "resubmit drained jobs on the queues and job definitions in place now")
    restore_cmd.add_argument("--queue", dest="queues", action="append", metavar="NAME", help="only submit to these queues (repeatable)")
    job_definition_flag(restore_cmd)
    lease_flags(restore_cmd)

    run_cmd = command("run", "drain, run COMMAND (the apply) while watching the queues at risk, then restore, whatever its exit")
    drain_flags(run_cmd)
    job_definition_flag(run_cmd)
    lease_flags(run_cmd, dry_run=False)
    run_cmd.add_argument(
        "--watch-interval", metavar="DURATION", help="seconds between two looks at the queues while COMMAND runs (default 2s)"
    )
    run_cmd.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]", help="the deploy's command, after --")

    status_cmd = command("status", "show the open deploys and where their replacements are now")
    status_cmd.add_argument("--all", action="store_const", const="true", help="every manifest in the store, not only open deploys")
    status_cmd.add_argument("--json", action="store_const", const="true", help="print JSON for scripts")
    status_cmd.add_argument(
        "--watch", action="store_const", const="true", help="follow the replacements until they finish; exit 1 if any failed"
    )
    status_cmd.add_argument(
        "--check",
        action="store_const",
        const="true",
        help="find replacements made twice (a paused run) and stop all but the recorded one; exit 1 if a job is owed again",
    )
    status_cmd.add_argument("--interval", metavar="SECONDS", help="--watch: seconds between looks (default 30)")
    status_cmd.add_argument("--timeout", metavar="SECONDS", help="--watch: give up (exit 1) after this long")

    commands.add_parser("demo", help="run a whole drain/deploy/restore cycle against a simulated AWS")
    return parser


_FLAG_KEYS = (
    "store", "queues", "deploy-id", "dry-run", "job-definition", "json", "all", "plan", "grace", "freeze", "stop-timeout",
    "notify", "event-bus", "events-file", "interval", "timeout", "watch", "check", "lock-timeout", "signing-key", "unsigned",
    "watch-interval",
)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code. Every failure is one line on stderr (a traceback only with --debug)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    report = Reporter()
    try:
        args = build_parser().parse_args(arguments)
        return _dispatch(args, report)
    except JobguardError as exc:
        report.error(str(exc))
        if exc.hint:
            report.hint(exc.hint)
        return exc.exit_code
    except KeyboardInterrupt:
        report.error("interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:  # the last resort: a bug is still one line, and says how to learn more
        report.error(
            f"internal error: {type(exc).__name__}: {exc} (this is a bug in jobguard {__version__}; rerun with --debug for the traceback)"
        )
        if "--debug" in arguments:
            traceback.print_exc()
        return EXIT_INTERNAL


def _dispatch(args: argparse.Namespace, report: Reporter) -> int:
    # Each command's module is imported when that command runs: a drain's start pays for no other command's.
    if args.command == "demo":
        from .demo import run_demo

        return run_demo(report, main)
    argv: list[str] = []
    if args.command == "run":  # checked first: a command that cannot start drains nothing
        from .commands.child import check_command

        argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        check_command(argv)
    given = {key: getattr(args, key.replace("-", "_"), None) for key in _FLAG_KEYS}
    options = resolve(args.config, parse_flags({k: v for k, v in given.items() if v is not None}))
    in_actions = os.environ.get("GITHUB_ACTIONS") == "true"
    run_id = None
    if in_actions and "GITHUB_RUN_ID" in os.environ and options.deploy_id is None:  # --deploy-id wins
        # The same check as --deploy-id: it names files and keys. Set but empty is a broken
        # environment, not "no run": restore would take every open deploy, drain make up a new one.
        run_id = parse_deploy_id(os.environ["GITHUB_RUN_ID"], "GITHUB_RUN_ID (environment)")
    if args.command == "run" and options.dry_run:  # a dry drain stops nothing: the command would run unguarded
        raise UsageError(
            "run: dry-run is set (config file): it would run the command with nothing drained; nothing was done",
            hint="see what a drain would take with `jobguard drain --dry-run`",
        )
    if args.command in ("drain", "restore", "run"):
        report.job_lines = JOB_LINES  # `status` lists every job asked for
    if args.command == "drain":
        from .commands.drain import reads_early

        aws = Aws(options.aws, notice=report.notice)
        with reads_early(Batch(aws, ""), aws, options) as early:  # beside GetCallerIdentity: reads that need no account
            try:
                return _drain(
                    build_context(options, report, creating=True, aws=aws), options.deploy_id or run_id or _new_deploy_id(), early
                )
            except BaseException:
                aws.abort.set()  # nothing uses this Aws after a failed drain: early reads still retrying stop now
                raise
    if args.command == "run":
        from .commands.run import Steps, run

        deploy_id = options.deploy_id or run_id or _new_deploy_id()
        ctx = build_context(options, report, creating=True)
        return run(ctx, deploy_id, argv, Steps(lambda result: _drained(ctx, result), lambda result: _restored(ctx, result, deploy_id)))
    ctx = build_context(options, report, creating=False)
    if args.command == "restore":
        # In Actions a restore is its own run's (and what that run adopted); elsewhere, every open deploy.
        return _restore(ctx, options.deploy_id or run_id, named=options.deploy_id is not None)
    from .commands.status import check, status, watch

    # In Actions, status looks at the run's own deploy first (a step after restore follows its replacements).
    if options.watch:
        return watch(ctx, options.deploy_id, preferred=run_id)
    if options.check:
        try:
            return check(ctx, options.deploy_id, preferred=run_id)
        finally:
            ctx.events.deliver()
    return status(ctx, options.deploy_id, preferred=run_id)


def _new_deploy_id() -> str:
    return f"jg-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def build_context(options: Options, report: Reporter, creating: bool, aws: Aws | None = None) -> Context:
    """boto3 from its usual chain (`aws`, if made already), the caller's account and region, and the adapters."""
    aws = aws or Aws(options.aws, notice=report.notice)
    identity = aws.call("sts", "get_caller_identity", "find the AWS account of the credentials")
    account = str(identity.get("Account", ""))
    if not account:
        raise CredentialsError("the AWS credentials name no account")
    store = open_store(options.store, aws, options.lease.wait)
    signer = _signer(options, aws, store, report, creating)
    for target in options.notify:
        if not target.startswith("sns:"):
            report.mask(target)
    events = Events(report, bus=options.event_bus, file=options.events_file, publish=lambda entries: publish(aws, entries))
    return Context(
        aws=aws,
        batch=Batch(aws, account),
        store=store,
        manifests=Manifests(store, signer, account, aws.region, report),
        account=account,
        region=aws.region,
        options=options,
        report=report,
        notifier=Notifier(options.notify, lambda arn, subject, text: _sns(aws, arn, subject, text), options.aws.retry, report),
        events=events,
    )


def _signer(options: Options, aws: Aws, store: Store, report: Reporter, creating: bool) -> Signer | None:
    if options.unsigned:
        report.warning(
            "manifests are neither signed nor checked (unsigned: true): whoever can write to the store can change what restore submits"
        )
        return None
    if options.signing_key:
        signer = open_signer(options.signing_key, aws, create=creating)
        if creating and options.signing_key.startswith("kms:"):  # a key that cannot sign fails now, before a lease is taken
            signer.sign(hashlib.sha256(b"jobguard: can this key sign?").digest())
        return signer
    if options.store.startswith("file:"):
        return open_signer(f"file:{default_key_file()}", aws, create=True)
    raise UsageError(
        f"store {options.store}: set signing-key (kms:KEY from the Terraform module's signing_key output) so manifests are signed",
        hint="or unsigned: true to write and accept unsigned manifests",
    )


def _sns(aws: Aws, arn: str, subject: str, text: str) -> None:
    aws.call("sns", "publish", f"publish to {arn}", TopicArn=arn, Subject=subject, Message=text)


def _drain(ctx: Context, deploy_id: str, early: EarlyReads) -> int:
    from .commands.drain import drain

    dry = " (dry run)" if ctx.options.dry_run else ""
    ctx.report.line(f"jobguard drain: deploy {deploy_id}, manifest {ctx.store.uri(deploy_id)}{dry}")
    try:
        result = drain(ctx, deploy_id, early=early)
    finally:
        ctx.events.deliver()
    return _drained(ctx, result)


def _drained(ctx: Context, result: Drained) -> int:
    if ctx.options.dry_run:
        return 0
    return _finish(ctx, "drain", [result.manifest], result.facts, failed=result.problems)


def _restore(ctx: Context, deploy_id: str | None, named: bool) -> int:
    from .commands.restore import restore

    try:
        result = restore(ctx, deploy_id, named)
    finally:
        ctx.events.deliver()
    return _restored(ctx, result, deploy_id, named)


def _restored(ctx: Context, result: Restored, deploy_id: str | None, named: bool = False) -> int:
    if not result.manifests:
        scope = f" for deploy {deploy_id} (it drained nothing, and adopted nothing)" if deploy_id and not named else ""
        ctx.report.line(f"jobguard restore: nothing to restore{scope} in {ctx.store.location()}")
    if ctx.options.dry_run:
        return 0
    failed = sum(r.outcome == FAILED and r.stage == RESTORE for m in result.manifests for r in m)
    return _finish(ctx, "restore", result.manifests, result.facts, failed=max(failed, result.problems))


def _finish(ctx: Context, title: str, manifests: list[Manifest], facts: list[str], failed: int) -> int:
    """Counts, job summary, step outputs and notifications (each independent of the others); 1 when a job failed."""
    for manifest in manifests:
        ctx.report.line(f"{title} {manifest.deploy_id}: {counts_line(manifest)}")
    if manifests or facts:  # one summary for the step: several deploys share GitHub's 1 MiB
        ctx.report.append_summary(sections(title, manifests, ctx.store.uri, facts))
    records = [r for m in manifests for r in m]
    last = manifests[-1].deploy_id if manifests else ""
    ctx.report.outputs(
        {
            "deploy-id": last,
            "manifest": ctx.store.uri(last) if last else "",
            "drained": sum(TERMINATED in r.times for r in records),
            "resubmitted": sum(r.outcome == RESUBMITTED for r in records),
            "failed": failed,
            "replacements": json.dumps(replacements(manifests), sort_keys=True),
        }
    )
    ctx.notifier.send(title, manifests)
    return 1 if failed else 0


def main_exit() -> NoReturn:
    """Console-script entry point, and `python -m jobguard`."""
    code = main()
    # The interpreter's last garbage collection, at exit, walks every object left (50-100 ms after a drain,
    # in a step each deploy waits for); frozen, they are left to the process's end. atexit still runs.
    gc.freeze()
    sys.exit(code)
