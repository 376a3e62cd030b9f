"""The `jobguard` command line. The one place that turns errors into messages and exit codes."""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

from . import __version__
from .adapters.batch import Batch
from .adapters.store import check_deploy_id, open_store
from .commands.context import Context
from .commands.drain import drain
from .commands.restore import restore_all
from .commands.status import status, watch
from .errors import ConfigError, CredentialsError, JobguardError, UsageError
from .manifest import DRAIN, FAILED, RESTORE, RESUBMITTED, TERMINATED, Manifest
from .notify import Notifier
from .options import DEFAULT_STORE, JOB_DEFINITION_POLICIES, Options, check_notify, duration, github_deploy_id, resolve
from .pacing import Pacer
from .report import Reporter, counts_line
from .retry import error_code

# jobguard's retry policy is the only one: botocore's own retries would resend SubmitJob blindly.
BOTO_CONFIG = Config(
    retries={"total_max_attempts": 1, "mode": "standard"}, connect_timeout=5, read_timeout=30, user_agent_extra=f"jobguard/{__version__}"
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="jobguard", description="Drain AWS Batch jobs before a deploy and resubmit them after, exactly once."
    )
    parser.add_argument("--version", action="version", version=f"jobguard {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument("--store", metavar="URI", help=f"manifest store: file://PATH or s3://BUCKET/PREFIX (default {DEFAULT_STORE})")
        sub.add_argument("--config", metavar="FILE", help="YAML config file (default .jobguard.yml when present)")
        return sub

    drain_cmd = command("drain", "record and terminate every active job of the named queues")
    drain_cmd.add_argument("--queue", dest="queues", action="append", metavar="NAME", help="job queue name or ARN (repeat for more)")
    drain_cmd.add_argument("--deploy-id", metavar="ID", help="deploy id (default: GITHUB_RUN_ID, else a new id that is printed)")
    drain_cmd.add_argument("--dry-run", action="store_true", default=None, help="list what would be drained; change nothing")
    drain_cmd.add_argument("--plan", metavar="PLAN.json", help="`terraform show -json` output: drain only the queues the plan puts at risk")
    drain_cmd.add_argument(
        "--grace", type=_duration, metavar="DURATION", help="drain queued jobs, then let running ones finish this long (90s, 30m, 1h)"
    )
    drain_cmd.add_argument(
        "--freeze", action="store_true", default=None, help="disable the queues for the deploy; restore enables them again"
    )
    drain_cmd.add_argument(
        "--lock-timeout", type=float, metavar="SECONDS", help="wait this long for another run's deploy lock (default 300)"
    )

    notify_help = "send a summary to sns:TOPIC_ARN or a Slack-compatible webhook URL (repeat for more)"
    drain_cmd.add_argument("--notify", action="append", metavar="TARGET", help=notify_help)

    restore_cmd = command("restore", "resubmit drained jobs on the queues and job definitions in place now")
    restore_cmd.add_argument("--notify", action="append", metavar="TARGET", help=notify_help)
    restore_cmd.add_argument(
        "--deploy-id", metavar="ID", help="restore this deploy only (default: GITHUB_RUN_ID, else every manifest with work left)"
    )
    restore_cmd.add_argument(
        "--job-definition", choices=JOB_DEFINITION_POLICIES, help="latest ACTIVE revision (default), or the recorded one while it is active"
    )
    restore_cmd.add_argument("--dry-run", action="store_true", default=None, help="list what would be submitted; change nothing")
    restore_cmd.add_argument(
        "--lock-timeout", type=float, metavar="SECONDS", help="wait this long for another run's deploy lock (default 300)"
    )

    status_cmd = command("status", "show manifests and where their replacements are now")
    status_cmd.add_argument("--deploy-id", metavar="ID", help="show this deploy only (default: every manifest)")
    status_cmd.add_argument("--json", action="store_true", default=None, help="print JSON for scripts")
    status_cmd.add_argument(
        "--watch", action="store_true", default=None, help="follow the replacements until they finish; exit 1 if any failed"
    )
    status_cmd.add_argument("--interval", type=float, metavar="SECONDS", help="--watch: seconds between looks (default 30)")
    status_cmd.add_argument("--timeout", type=float, metavar="SECONDS", help="--watch: give up (exit 1) after this long")

    commands.add_parser(
        "demo",
        help="run a whole drain/deploy/restore cycle against a simulated AWS",
        description="Run a whole cycle against moto (pip install 'jobguard[demo]').",
    )
    return parser


def _duration(text: str) -> float:
    try:
        return duration(text, "--grace")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code."""
    args = build_parser().parse_args(argv)
    report = Reporter()
    try:
        return _run(args, report)
    except JobguardError as exc:
        report.error(str(exc))
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        report.error("interrupted")
        return 130


def _run(args: argparse.Namespace, report: Reporter) -> int:
    if args.command == "demo":
        from .demo import run_demo

        return run_demo(report)
    names = (
        "store",
        "queues",
        "deploy_id",
        "dry_run",
        "job_definition",
        "json",
        "lock_timeout",
        "plan",
        "grace",
        "freeze",
        "watch",
        "interval",
        "notify",
    )
    flags = {k: getattr(args, k, None) for k in names}
    flags["queues"] = tuple(q.strip() for q in flags["queues"] or () if q.strip())
    flags["notify"] = tuple(check_notify(t, "--notify") for t in flags["notify"] or ())
    options = resolve(args.config, flags)
    # Only drain takes the run id by default: restore and status look at every manifest, so a
    # deploy whose restore never ran is picked up by the next one.
    deploy_id = options.deploy_id or (github_deploy_id() if args.command == "drain" else None)
    if deploy_id:
        check_deploy_id(deploy_id)
    if args.command == "drain":
        if not options.queues and not options.plan:
            raise UsageError("drain: name the queues with --queue NAME (or `queues:` in the config), or give --plan PLAN.json")
        return _drain(build_context(options, report), deploy_id or _new_deploy_id())
    if args.command == "restore":
        return _restore(build_context(options, report), deploy_id)
    ctx = build_context(options, report)
    if options.watch:
        return watch(ctx, deploy_id, args.timeout)
    status(ctx, deploy_id)
    return 0


def build_context(options: Options, report: Reporter) -> Context:
    """boto3 from its usual chain, the caller's account and region, and the adapters."""
    # AWS_REGION wins over the rest of the chain, as in the AWS CLI v2; botocore reads only AWS_DEFAULT_REGION.
    session = boto3.session.Session(region_name=os.environ.get("AWS_REGION") or None)
    region = session.region_name
    if not region:
        raise CredentialsError("no AWS region configured", hint="set AWS_REGION (or AWS_DEFAULT_REGION), or a region in your AWS profile")
    try:
        sts = session.client("sts", config=BOTO_CONFIG)
        account = options.retry.call(sts.get_caller_identity)["Account"]
    except (NoCredentialsError, NoRegionError):
        raise CredentialsError(
            "no AWS credentials found", hint="configure credentials as for the AWS CLI: environment, profile, or an assumed role"
        ) from None
    except ClientError as exc:
        raise CredentialsError(f"AWS credentials rejected: {error_code(exc)}") from None
    except BotoCoreError as exc:
        raise CredentialsError(f"cannot reach AWS STS: {exc}") from None
    clients = _ClientFactory(session)
    store = open_store(options.store, clients, options.retry)
    # Enough connections for every worker; botocore's default pool of 10 would queue them.
    batch_config = BOTO_CONFIG.merge(Config(max_pool_connections=max(10, options.workers * 2)))
    batch = Batch(session.client("batch", config=batch_config), options.retry, Pacer(options.rate, options.burst), options.workers)
    notifier = Notifier(options.notify, lambda: clients.client("sns"), options.retry, report)
    return Context(batch=batch, store=store, account=account, region=region, options=options, report=report, notifier=notifier)


class _ClientFactory:
    """Hands the stores clients configured like every other jobguard client."""

    def __init__(self, session: boto3.session.Session) -> None:
        self.session = session

    def client(self, service: str) -> Any:
        return self.session.client(service, config=BOTO_CONFIG)  # type: ignore[call-overload]


def _new_deploy_id() -> str:
    return f"jg-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def _drain(ctx: Context, deploy_id: str) -> int:
    ctx.report.line(
        f"jobguard drain: deploy {deploy_id}, manifest {ctx.store.uri(deploy_id)}" + (" (dry run)" if ctx.options.dry_run else "")
    )
    manifest = drain(ctx, deploy_id)
    return 0 if ctx.options.dry_run else _finish(ctx, "drain", [manifest], failed_stage=DRAIN)


def _restore(ctx: Context, deploy_id: str | None) -> int:
    manifests = restore_all(ctx, deploy_id)
    if not manifests and ctx.options.dry_run:
        ctx.report.line(f"jobguard restore: nothing to restore in {ctx.options.store}")
    return 0 if ctx.options.dry_run else _finish(ctx, "restore", manifests, failed_stage=RESTORE)


def _finish(ctx: Context, title: str, manifests: list[Manifest], failed_stage: str) -> int:
    """Counts, job summary and step outputs; exit 1 when a job failed in this stage."""
    for manifest in manifests:
        ctx.report.line(f"{title} {manifest.deploy_id}: {counts_line(manifest)}")
        ctx.report.summary(title, manifest, ctx.store.uri(manifest.deploy_id))
    records = [r for m in manifests for r in m]
    failed = sum(r.outcome == FAILED and r.stage == failed_stage for r in records)
    last = manifests[-1].deploy_id if manifests else ""
    ctx.notifier.send(title, manifests)
    ctx.report.outputs(
        {
            "deploy-id": last,
            "manifest": ctx.store.uri(last) if last else "",
            "drained": sum(TERMINATED in r.times for r in records),
            "resubmitted": sum(r.outcome == RESUBMITTED for r in records),
            "failed": failed,
        }
    )
    return 1 if failed else 0


def main_exit() -> None:
    """Console-script entry point."""
    sys.exit(main())
