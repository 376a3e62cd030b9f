"""Audit the lock for known vulnerabilities: `python -m tools.audit_lock`.

pip-audit reads every pinned, hashed requirement of requirements/*.txt (nothing is installed or
resolved) and asks the registry's vulnerability data about each. Exit 1 when a locked version has
a known vulnerability. Where the vulnerability service cannot be reached (an offline or
mirror-only machine), the audit is skipped with that reason printed, exit 0: the scheduled lock
refresh runs it where the service answers. Anything else that keeps pip-audit from auditing (it
crashed, it is missing, its report is not one) fails, exit 2: a broken audit is not a skipped one.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .lockfile import LOCKS

FILES = ("test.txt", "checkov.txt")  # test.txt holds runtime.txt and demo.txt; checkov.txt is its own world
TIMEOUT = 300
# How pip-audit's last line reads when the vulnerability service cannot be reached or fails: its own
# advice after a connect timeout, its ServiceError (an HTTP error other than 404), or requests'
# exception left uncaught (connection refused, proxy, TLS, read timeout).
UNREACHABLE = re.compile(
    r"^(ERROR:pip_audit\._cli:Tip: your network may be blocking this service"
    r"|pip_audit\._service\.interface\.(Service|Connection)Error\b"
    r"|requests\.exceptions\.\w+: )"
)


class AuditError(Exception):
    """pip-audit could not audit, for a reason other than the service not answering."""


def audit(path: Path) -> tuple[list[dict[str, Any]], str | None]:
    """The dependencies of one lock file as pip-audit reported them (each audited, or with its
    `skip_reason`), or the reason nothing could be audited (AuditError
    when pip-audit failed for another reason)."""
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "report.json"
        command = [sys.executable, "-m", "pip_audit", "--disable-pip", "--require-hashes", "-r", str(path)]
        try:
            done = subprocess.run([*command, "--format", "json", "--output", str(report)], capture_output=True, text=True, timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            return [], f"pip-audit did not finish within {TIMEOUT} s"
        if not report.exists():
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            if UNREACHABLE.match(last):
                return [], f"the vulnerability service cannot be reached ({last})"
            raise AuditError(f"pip-audit exited {done.returncode} without a report: {last}")
        dependencies = _dependencies(report.read_text())
    if dependencies and all("skip_reason" in d for d in dependencies):
        return [], f"the vulnerability service answered for none of {len(dependencies)} packages ({dependencies[0]['skip_reason']})"
    return dependencies, None


def _dependencies(text: str) -> list[dict[str, Any]]:
    """The report's `dependencies`, each with a name (AuditError for anything else)."""
    try:
        dependencies = json.loads(text).get("dependencies")
    except (ValueError, AttributeError):
        dependencies = None
    if not isinstance(dependencies, list) or not all(isinstance(d, dict) and "name" in d for d in dependencies):
        raise AuditError(f"pip-audit's report is not a list of dependencies: {text[:200]!r}")
    return dependencies


def main() -> int:
    """Audit every lock file; print one line per finding, or why the audit was skipped."""
    found = failed = 0
    for name in FILES:
        try:
            dependencies, skipped = audit(LOCKS / name)
        except AuditError as exc:
            print(f"lock audit of requirements/{name}: FAILED: {exc}")
            failed += 1
            continue
        if skipped:
            print(f"lock audit of requirements/{name}: SKIPPED: {skipped}")
            continue
        audited = [d for d in dependencies if "skip_reason" not in d]
        missed = [d for d in dependencies if "skip_reason" in d]  # each one visible: not audited is not clean
        vulnerable = [d for d in audited if d.get("vulns")]
        for dependency in vulnerable:
            for vuln in dependency["vulns"]:
                fixes = ", ".join(vuln.get("fix_versions") or []) or "no fixed version yet"
                print(f"requirements/{name}: {dependency['name']} {dependency['version']}: {vuln['id']} (fixed in {fixes})")
        found += len(vulnerable)
        print(f"lock audit of requirements/{name}: {len(audited)} packages, {len(vulnerable)} with known vulnerabilities")
        for dependency in missed:
            print(f"lock audit of requirements/{name}: NOT AUDITED: {dependency['name']}: {dependency['skip_reason']}")
    return 2 if failed else 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
