"""An example AWS Batch job that resumes from a checkpoint instead of restarting.

It adds up f(i) for i in 0..N-1, slowly, as a stand-in for hours of work. On SIGTERM (a deploy
drained it) it saves how far it got; its replacement, which jobguard's restore gives the same
lineage, picks up there. Run it as the container's command:

    python checkpointed_sum.py N SECONDS_PER_STEP

with JOBGUARD_CHECKPOINT_BUCKET set and an S3 role that can read and write the bucket.
"""

from __future__ import annotations

import sys
import time

from jobguard.checkpoint import Checkpoint


def f(i: int) -> int:
    return i * i % 7919


def main(total: int, step_seconds: float) -> int:
    checkpoint = Checkpoint()
    state = checkpoint.load() or {"next": 0, "sum": 0}
    print(f"lineage {checkpoint.lineage}, resume {checkpoint.resume_count}: starting at step {state['next']}", flush=True)
    for i in range(state["next"], total):
        state = {"next": i + 1, "sum": state["sum"] + f(i)}
        print(f"step {i}", flush=True)
        time.sleep(step_seconds)
        if checkpoint.should_stop:
            checkpoint.save(state)
            print(f"stopping: saved at step {state['next']}", flush=True)
            return 143
    checkpoint.clear()
    print(f"result {state['sum']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), float(sys.argv[2])))
