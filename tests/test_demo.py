"""The README's first command ends with `jobguard demo`: it must pass on a fresh install, as a new user runs it."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.slow
def test_the_demo_passes_as_the_readme_runs_it() -> None:
    done = subprocess.run([sys.executable, "-m", "jobguard", "demo"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.rstrip().endswith("Demo complete: every drained job was resubmitted exactly once.")
    assert "queue science-queue: 1 queued jobs left queued" in done.stdout  # the plan replaces only the compute environment
