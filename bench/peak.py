"""Run a module as __main__ and write its own peak RSS (VmHWM, which exec resets) to a file.

  python -m bench.peak OUTFILE MODULE ARGS...

getrusage's maxrss would also count the memory of the process that forked this one. The second
line of OUTFILE is how many bytes the folder store wrote (every file it put in place: manifest
heads, pages, leases, index entries), counted where it writes them.
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


def _count_store_bytes() -> list[int]:
    """Count the bytes FileStore writes (its one way of putting a file in place)."""
    from jobguard.adapters.stores.file import FileStore

    written = [0]
    write = FileStore._write_atomically

    def counted(self: FileStore, path: Path, body: bytes) -> None:
        write(self, path, body)
        written[0] += len(body)

    FileStore._write_atomically = counted  # type: ignore[method-assign]
    return written


if __name__ == "__main__":
    out, module, *rest = sys.argv[1:]
    written = _count_store_bytes()
    atexit.register(lambda: Path(out).write_text(f"{_peak_kb()}\n{written[0]}"))
    sys.argv = [module, *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
