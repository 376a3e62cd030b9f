"""What every command is handed: the adapters, who and where we are, and the options."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..adapters.batch import Batch
from ..adapters.store import ManifestStore
from ..errors import ManifestError
from ..manifest import Manifest, now
from ..notify import Notifier
from ..options import Options
from ..report import Reporter


@dataclass(frozen=True)
class Context:
    """The adapters and settings of one command run."""

    batch: Batch
    store: ManifestStore
    account: str
    region: str
    options: Options
    report: Reporter
    notifier: Notifier

    def new_manifest(self, deploy_id: str) -> Manifest:
        """An empty manifest for this account and region, stamped with where it was made."""
        stamp = now()
        return Manifest(deploy_id, self.account, self.region, stamp, stamp, origin=github_origin())

    def check_owner(self, manifest: Manifest) -> Manifest:
        """A manifest of another account or region must not be acted on from here."""
        if (manifest.account, manifest.region) != (self.account, self.region):
            raise ManifestError(
                f"{self.store.uri(manifest.deploy_id)}: manifest belongs to account {manifest.account} in {manifest.region}, "
                f"but the credentials are for account {self.account} in {self.region}"
            )
        return manifest

    def save(self, manifest: Manifest) -> None:
        """Stamp and write the manifest."""
        manifest.updated_at = now()
        self.store.save(manifest)


def github_origin() -> dict[str, str]:
    """Repository, commit and run URL when running in GitHub Actions."""
    env = os.environ
    if env.get("GITHUB_ACTIONS") != "true":
        return {}
    origin = {
        "repository": env.get("GITHUB_REPOSITORY", ""),
        "commit": env.get("GITHUB_SHA", ""),
        "workflow": env.get("GITHUB_WORKFLOW", ""),
    }
    if env.get("GITHUB_RUN_ID"):
        server = env.get("GITHUB_SERVER_URL", "https://github.com")
        origin["run_url"] = f"{server}/{origin['repository']}/actions/runs/{env['GITHUB_RUN_ID']}"
    return {k: v for k, v in origin.items() if v}
