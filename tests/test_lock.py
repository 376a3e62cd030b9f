"""The lock (requirements/*.txt) and pyproject.toml agree, and this environment is the locked one.

CI, the README's commands and the action install only from the lock (`pip --require-hashes`,
nothing resolved at install time). A dependency added to pyproject.toml but not locked, a range
the locked version falls outside, two lock files that disagree on a version or a file's hash, or
an environment that was not installed from the lock fails here, naming the command that mends it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tools import audit_lock
from tools.lockfile import LOCKS, ROOT, Pin, read_lock

if sys.version_info >= (3, 11):
    import tomllib
else:  # mypy checks for the oldest Python jobguard supports
    import tomli as tomllib

REFRESH = "run `tools/refresh-lock --no-upgrade` (README: Dependencies)"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
GROUPS = PYPROJECT["dependency-groups"]
# What each lock file serves, and the pyproject requirements it must satisfy.
USES = {
    "runtime.txt": [*PROJECT["dependencies"], *GROUPS["build"]],  # the action
    "demo.txt": [*PROJECT["dependencies"], *PROJECT["optional-dependencies"]["demo"], *GROUPS["build"]],
    "test.txt": [
        *PROJECT["dependencies"],
        *PROJECT["optional-dependencies"]["demo"],
        *PROJECT["optional-dependencies"]["test"],
        *GROUPS["build"],
        *GROUPS["maint"],
    ],
}


def _lock(name: str) -> dict[str, Pin]:
    return read_lock(LOCKS / name)


@pytest.mark.parametrize("name", sorted(USES))
def test_every_requirement_of_pyproject_is_locked_within_its_range(name: str) -> None:
    pins = _lock(name)
    for text in USES[name]:
        requirement = Requirement(text)
        if canonicalize_name(requirement.name) == "jobguard":
            continue  # jobguard[demo] inside the test extra: its requirements are listed on their own
        pin = pins.get(canonicalize_name(requirement.name))
        assert pin is not None, f"{text} (pyproject.toml) is not in requirements/{name}: {REFRESH}"
        assert requirement.specifier.contains(pin.version, prereleases=True), (
            f"requirements/{name} locks {pin.name}=={pin.version}, outside pyproject.toml's {text}: {REFRESH}"
        )
        assert pin.hashes, f"requirements/{name}: {pin.name} has no hash"


def test_the_lock_files_agree_on_every_version_and_hash() -> None:
    """runtime.txt and demo.txt are cut from test.txt's resolution: one version, one set of files each."""
    everything = _lock("test.txt")
    for name in ("runtime.txt", "demo.txt"):
        for pin in _lock(name).values():
            assert everything.get(pin.name) == pin, f"requirements/{name} and requirements/test.txt differ on {pin.name}: {REFRESH}"


def test_the_action_installs_no_test_tool() -> None:
    """The deploy role's credentials are in the action's process: only what jobguard needs runs there."""
    runtime = set(_lock("runtime.txt"))
    assert {"boto3", "pyyaml", "tenacity", "setuptools"} <= runtime
    assert not runtime & {"moto", "pytest", "uv", "pip-audit", "werkzeug"}


def test_checkov_is_locked_at_the_version_asked_for() -> None:
    (wanted,) = [Requirement(line) for line in (LOCKS / "checkov.in").read_text().split() if line]
    assert _lock("checkov.txt")["checkov"].version in wanted.specifier, f"requirements/checkov.txt: {REFRESH}"


def test_this_environment_is_the_locked_one() -> None:
    """Tests that compare with what a tool generates (the submission schema from botocore) mean
    something only in the locked environment: a different version here is noise, not a change."""
    differ = []
    for pin in _lock("test.txt").values():
        if pin.marker and not Marker(pin.marker).evaluate():
            continue
        try:
            installed = metadata.version(pin.name)
        except metadata.PackageNotFoundError:
            installed = "none"
        if installed != pin.version:
            differ.append(f"{pin.name} {installed} (lock: {pin.version})")
    assert not differ, f"not installed from the lock: {', '.join(differ)}; install with `bash tools/install.sh` (README)"


def _pip_audit_answers(monkeypatch: pytest.MonkeyPatch, dependencies: list[dict[str, Any]]) -> None:
    """pip-audit, as seen by tools/audit_lock, writes this report (the vulnerability service is not reached from tests)."""

    def run(command: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        Path(command[command.index("--output") + 1]).write_text(json.dumps({"dependencies": dependencies}))
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(subprocess, "run", run)


def test_the_audit_fails_on_a_known_vulnerability(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    vulnerable = {"name": "urllib3", "version": "2.8.0", "vulns": [{"id": "GHSA-xxxx", "fix_versions": ["2.8.1"]}]}
    _pip_audit_answers(monkeypatch, [vulnerable, {"name": "boto3", "version": "1.44.18", "vulns": []}])
    assert audit_lock.main() == 1
    assert "requirements/test.txt: urllib3 2.8.0: GHSA-xxxx (fixed in 2.8.1)" in capsys.readouterr().out


def test_the_audit_is_skipped_visibly_where_the_service_does_not_answer(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _pip_audit_answers(monkeypatch, [{"name": "boto3", "version": "1.44.18", "skip_reason": "Dependency not found on PyPI"}])
    assert audit_lock.main() == 0
    assert (
        "lock audit of requirements/test.txt: SKIPPED: the vulnerability service answered for none of 1 packages" in capsys.readouterr().out
    )
