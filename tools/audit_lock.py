"""Audit the lock for known vulnerabilities: `python -m tools.audit_lock`.

pip-audit reads every pinned, hashed requirement of requirements/*.txt (nothing is installed or
resolved) and asks the registry's vulnerability data about each. Exit 1 when a locked version has
a known vulnerability. Where the vulnerability service cannot be reached (an offline or
mirror-only machine), the audit is skipped with that reason printed, exit 0: the scheduled lock
refresh runs it where the service answers.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .lockfile import LOCKS

FILES = ("test.txt", "checkov.txt")  # test.txt holds runtime.txt and demo.txt; checkov.txt is its own world
TIMEOUT = 300


def audit(path: Path) -> tuple[list[dict[str, Any]], str | None]:
    """The audited dependencies of one lock file, or the reason nothing could be audited."""
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "report.json"
        command = [sys.executable, "-m", "pip_audit", "--disable-pip", "--require-hashes", "-r", str(path)]
        try:
            done = subprocess.run([*command, "--format", "json", "--output", str(report)], capture_output=True, text=True, timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            return [], f"pip-audit did not finish within {TIMEOUT} s"
        if not report.exists():
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            return [], f"pip-audit failed: {last}"
        dependencies: list[dict[str, Any]] = json.loads(report.read_text()).get("dependencies", [])
    audited = [d for d in dependencies if "skip_reason" not in d]
    if not audited and dependencies:
        return [], f"the vulnerability service answered for none of {len(dependencies)} packages ({dependencies[0]['skip_reason']})"
    return audited, None


def main() -> int:
    """Audit every lock file; print one line per finding, or why the audit was skipped."""
    found = 0
    for name in FILES:
        audited, skipped = audit(LOCKS / name)
        if skipped:
            print(f"lock audit of requirements/{name}: SKIPPED: {skipped}")
            continue
        vulnerable = [d for d in audited if d.get("vulns")]
        for dependency in vulnerable:
            for vuln in dependency["vulns"]:
                fixes = ", ".join(vuln.get("fix_versions") or []) or "no fixed version yet"
                print(f"requirements/{name}: {dependency['name']} {dependency['version']}: {vuln['id']} (fixed in {fixes})")
        found += len(vulnerable)
        print(f"lock audit of requirements/{name}: {len(audited)} packages, {len(vulnerable)} with known vulnerabilities")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
