"""Tell people what happened: a short summary after drain and after restore, to an SNS topic
and/or a webhook (Slack-compatible JSON). A failed notification is a warning, never a failure.
No submitted values are sent: only names, counts, errors and a link to the run."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from .manifest import FAILED, Manifest
from .report import Reporter, counts_line
from .retry import RetryPolicy

MAX_LISTED = 10


def summary_text(title: str, manifests: Sequence[Manifest]) -> str:
    """The message: counts per deploy, the first failures, the run to look at."""
    lines = []
    for manifest in manifests:
        lines.append(f"jobguard {title}, deploy {manifest.deploy_id}: {counts_line(manifest)}")
        problems = [r for r in manifest if r.outcome == FAILED or r.error]
        for record in problems[:MAX_LISTED]:
            lines.append(f"  - {record.job_name} ({record.queue}): {record.outcome}: {record.error}")
        if len(problems) > MAX_LISTED:
            lines.append(f"  - and {len(problems) - MAX_LISTED} more")
        if manifest.origin.get("run_url"):
            lines.append(f"  run: {manifest.origin['run_url']}")
    if not manifests:
        lines.append(f"jobguard {title}: nothing to do")
    return "\n".join(lines)


class Notifier:
    """Sends the summary to every target; reports, never raises, when one fails."""

    def __init__(self, targets: Sequence[str], sns: Callable[[], Any], retry: RetryPolicy, report: Reporter) -> None:
        self.targets, self.sns, self.retry, self.report = targets, sns, retry, report

    def send(self, title: str, manifests: Sequence[Manifest]) -> None:
        """Notify every target of the outcome of `title` (drain or restore)."""
        if not self.targets:
            return
        text = summary_text(title, manifests)
        for target in self.targets:
            try:
                self.retry.call(partial(self._deliver, target, title, text), retryable=lambda exc: isinstance(exc, OSError))
            except Exception as exc:  # a notification must never fail the deploy
                self.report.warning(f"notification to {_shown(target)} failed: {type(exc).__name__}: {exc}")

    def _deliver(self, target: str, title: str, text: str) -> None:
        if target.startswith("sns:"):
            self.sns().publish(TopicArn=target[len("sns:") :], Subject=f"jobguard {title}"[:100], Message=text)
            return
        request = urllib.request.Request(
            target, data=json.dumps({"text": text}).encode(), headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            answer.read()


def _shown(target: str) -> str:
    """A target as it may be printed: webhook URLs carry their secret in the path."""
    if target.startswith("sns:"):
        return target
    scheme, _, rest = target.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}/…"
