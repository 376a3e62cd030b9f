"""Checks of the repository itself: lint, format, types, the action and workflow schemas,
zizmor, shellcheck, and third-party actions pinned by commit SHA with their version."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WORKFLOWS = sorted([*ROOT.glob(".github/workflows/*.yml"), *ROOT.glob("examples/workflows/*.yml")])


def _tool(name: str) -> str:
    path = BIN / name if (BIN / name).exists() else shutil.which(name)
    assert path, f"{name} is not installed: bash tools/install.sh"
    return str(path)


def _run(*command: str) -> None:
    process = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert process.returncode == 0, f"{' '.join(command)}\n{process.stdout}\n{process.stderr}"


CODE = ("jobguard", "tests", "bench", "tools", "examples")


def test_ruff_lint() -> None:
    _run(_tool("ruff"), "check", *CODE)


def test_ruff_format() -> None:
    _run(_tool("ruff"), "format", "--check", *CODE)


def test_mypy() -> None:
    _run(_tool("mypy"))


def test_action_schema() -> None:
    _run(_tool("check-jsonschema"), "--builtin-schema", "vendor.github-actions", "action.yml")


def test_workflow_schemas() -> None:
    assert len(WORKFLOWS) >= 4
    _run(_tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS))


def test_zizmor_reports_nothing() -> None:
    # Files by name: given a folder that is not a repository root, zizmor audits nothing in it.
    files = ["action.yml", ".github/dependabot.yml", *(str(p.relative_to(ROOT)) for p in WORKFLOWS)]
    process = subprocess.run(
        [_tool("zizmor"), "--offline", "--config", ".github/zizmor.yml", *files], cwd=ROOT, capture_output=True, text=True
    )
    assert process.returncode == 0, process.stdout + process.stderr
    audited = {line.split("completed ", 1)[1].strip() for line in process.stderr.splitlines() if "completed " in line}
    assert audited == set(files), f"zizmor audited {sorted(audited)}, not {files}"


def test_dependabot_schema() -> None:
    _run(_tool("check-jsonschema"), "--builtin-schema", "vendor.dependabot", ".github/dependabot.yml")


def test_shellcheck() -> None:
    scripts = [*ROOT.glob("action/*.sh"), *ROOT.glob("examples/*/*.sh")]
    _run(_tool("shellcheck"), *map(str, scripts), ".ci/run", "tools/install.sh", "tools/refresh-lock")


@pytest.mark.parametrize("path", [ROOT / "action.yml", *WORKFLOWS], ids=lambda p: p.name)
def test_third_party_actions_pinned_with_version_comment(path: Path) -> None:
    for line in path.read_text().splitlines():
        match = re.search(r"uses:\s*([^\s#]+)(.*)", line)
        if not match or match.group(1).startswith(("./", "org/jobguard@")):
            continue
        assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", match.group(1)), line
        assert re.search(r"#\s*v?\d+(\.\d+)*", match.group(2)), f"no version comment: {line}"


def test_the_lock_refresh_starts_ci_on_its_pull_request() -> None:
    """A pull request opened with GITHUB_TOKEN starts no workflow run (GitHub's 'Triggering a workflow
    from a workflow'): the refresh dispatches ci.yml on its branch, which ci.yml must accept."""
    ci = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    assert "workflow_dispatch" in ci[True]  # YAML 1.1 reads the key `on` as True
    refresh = yaml.safe_load((ROOT / ".github" / "workflows" / "refresh-lock.yml").read_text())
    (job,) = refresh["jobs"].values()
    assert job["permissions"].get("actions") == "write"
    assert 'gh workflow run ci.yml --ref "$branch"' in job["steps"][-1]["run"]
