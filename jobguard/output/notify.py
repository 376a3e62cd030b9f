"""Tell people what happened: a short summary after drain and after restore, to an SNS topic
and/or a webhook (Slack-compatible JSON). A failed notification is a warning, never a failure.

No submitted values are sent: only names, counts, errors and a link to the run. Webhook URLs
carry their secret in the URL: only their scheme and host are ever printed.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from ..adapters.retry import RetrySettings, call_with_retries
from ..domain.manifest import FAILED, Manifest
from ..errors import JobguardError, one_line
from .report import Reporter, shown_url
from .summary import counts_line

MAX_LISTED = 10


def summary_text(title: str, manifests: Sequence[Manifest]) -> str:
    """The message: counts per deploy, the first failures, the run to look at."""
    lines = []
    for manifest in manifests:
        lines.append(f"jobguard {title}, deploy {manifest.deploy_id}: {counts_line(manifest)}")
        problems = [r for r in manifest if r.outcome == FAILED or r.error]
        for record in problems[:MAX_LISTED]:
            lines.append(f"  - {record.job_name} ({record.queue}): {record.outcome}: {one_line(record.error or '', 300)}")
        if len(problems) > MAX_LISTED:
            lines.append(f"  - and {len(problems) - MAX_LISTED} more")
        if manifest.origin.get("run_url"):
            lines.append(f"  run: {manifest.origin['run_url']}")
    if not manifests:
        lines.append(f"jobguard {title}: nothing to do")
    return "\n".join(lines)


def _slack(text: str) -> str:
    """Slack reads <...> as links and mentions (<!channel>): escape what came from AWS or a manifest."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@dataclass
class Notifier:
    """Sends the summary to every target; reports, never raises, when one fails."""

    targets: Sequence[str]
    publish_sns: Callable[[str, str, str], None]  # (topic ARN, subject, message)
    retry: RetrySettings
    report: Reporter

    def send(self, title: str, manifests: Sequence[Manifest]) -> None:
        """Notify every target of the outcome of `title` (drain or restore)."""
        if not self.targets:
            return
        text = summary_text(title, manifests)
        for target in self.targets:
            try:
                if target.startswith("sns:"):
                    self.publish_sns(target[len("sns:") :], f"jobguard {title}"[:100], text)
                else:
                    call_with_retries(self.retry, partial(self._post, target, text), retryable=lambda exc: isinstance(exc, OSError))
            except (JobguardError, OSError, ValueError) as exc:
                self.report.warning(f"notification to {_shown(target)} failed: {_reason(exc)}")

    @staticmethod
    def _post(url: str, text: str) -> None:
        body = json.dumps({"text": _slack(text)}).encode()
        headers = {"Content-Type": "application/json"}
        parts = urlsplit(url)
        if parts.username is not None:  # credentials in the URL go in a header, as urllib does not send them
            secret = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(secret).decode()
            url = urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        with _OPENER.open(request, timeout=10) as answer:
            answer.read()


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is a failed delivery (HTTPError 3xx), not followed: urllib would carry the
    Authorization header to the other host and turn the POST into a GET, losing the message."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def _shown(target: str) -> str:
    return target if target.startswith("sns:") else shown_url(target)


def _reason(exc: BaseException) -> str:
    """Why delivery failed, without the URL (urllib's messages can contain it)."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        return f"cannot reach it ({type(exc.reason).__name__})"
    if isinstance(exc, JobguardError):
        return str(exc)
    return type(exc).__name__
