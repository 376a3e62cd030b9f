"""What every command is handed: the adapters, who and where we are, and the options."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..adapters.aws import Aws
from ..adapters.batch import Batch
from ..adapters.stores import Store
from ..options import Options
from ..output.events import Events
from ..output.notify import Notifier
from ..output.report import Reporter
from .manifests import Manifests


@dataclass(frozen=True)
class Context:
    """The adapters and settings of one command run."""

    aws: Aws
    batch: Batch
    store: Store
    manifests: Manifests
    account: str
    region: str
    options: Options
    report: Reporter
    notifier: Notifier
    events: Events


def github_origin() -> dict[str, str]:
    """Repository, commit, workflow and run URL when running in GitHub Actions."""
    env = os.environ
    if env.get("GITHUB_ACTIONS") != "true":
        return {}
    origin = {
        "repository": env.get("GITHUB_REPOSITORY", ""),
        "commit": env.get("GITHUB_SHA", ""),
        "workflow": env.get("GITHUB_WORKFLOW", ""),
    }
    if env.get("GITHUB_RUN_ID") and env.get("GITHUB_REPOSITORY"):
        server = env.get("GITHUB_SERVER_URL", "https://github.com")
        origin["run_url"] = f"{server}/{origin['repository']}/actions/runs/{env['GITHUB_RUN_ID']}"
    return {k: v[:256] for k, v in origin.items() if v and v.isprintable()}
