"""Run a module as __main__ and write its own peak RSS (VmHWM, which exec resets) to a file.

  python -m bench.peak OUTFILE MODULE ARGS...

getrusage's maxrss would also count the memory of the process that forked this one.
"""

from __future__ import annotations

import atexit
import runpy
import sys
from pathlib import Path


def _peak_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


if __name__ == "__main__":
    out, module, *rest = sys.argv[1:]
    atexit.register(lambda: Path(out).write_text(str(_peak_kb())))
    sys.argv = [module, *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
