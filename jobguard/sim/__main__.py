"""`python -m jobguard.sim`: serve a simulated AWS on a fixed port until interrupted.

For trying the action or the CLI against something that behaves like AWS Batch:

    python -m jobguard.sim --port 5000 --queue work --jobs 3 --ready-file /tmp/aws-ready

prints the endpoint and writes the ready file only once every queue and job exists.
"""

from __future__ import annotations

import argparse
import threading
from contextlib import suppress
from pathlib import Path

from .batch import Timing
from .seeder import Seeder
from .server import ACCOUNT, REGION, SimulatedAWS


def main(argv: list[str] | None = None) -> None:
    """Serve until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m jobguard.sim", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--queue", action="append", default=[], help="create this queue with running jobs (repeat for more)")
    parser.add_argument("--jobs", type=int, default=3, help="running jobs per queue")
    parser.add_argument("--stop-seconds", type=float, default=2.0, help="how long a terminated running job keeps running")
    parser.add_argument("--ready-file", type=Path, help="write the endpoint here once everything is seeded")
    args = parser.parse_args(argv)
    with SimulatedAWS(timing=Timing(stop_seconds=args.stop_seconds, cancel_seconds=0.2, list_lag_seconds=0.5), port=args.port) as aws:
        seed = Seeder(aws)
        if args.queue:
            seed.definition("demo-job")
        for queue in args.queue:
            seed.queue(queue)
            for index in range(args.jobs):
                seed.job(jobName=f"{queue}-job-{index}", jobQueue=queue, jobDefinition="demo-job")
        print(f"simulated AWS on {aws.endpoint} (account {ACCOUNT}, region {REGION})", flush=True)
        if args.ready_file:  # whole or absent: a waiting reader never sees it half written
            partial = args.ready_file.with_name(args.ready_file.name + ".partial")
            partial.write_text(aws.endpoint + "\n")
            partial.replace(args.ready_file)
        with suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
