"""Where a large manifest's memory goes: write one, then read it as restore does, measuring peak RSS.

  python -m bench.memory write FOLDER [--jobs 100000]      a signed manifest "bench" of N records in a folder store
                         [--variables 1]                   each submission with this many environment variables
  python -m bench.memory load FOLDER [--trace 15]          read it as restore does (twice: to choose, then under
                                                           the leases); peak RSS, and tracemalloc's top allocators
  python -m bench.memory restore FOLDER [--whole]          read it, then mark and save it page by page as restore's
                                                           submissions do (`submitting`, then `resubmitted`), without
                                                           Batch: the manifest's share of restore's peak RSS; --whole
                                                           holds every record with its submission (as before elision)
  ... [--table NAME]                                       the manifest in a DynamoDB table (created by `write`) at
                                                           AWS_ENDPOINT_URL (a `python -m jobguard.sim` of its own,
                                                           so that the table's memory is not counted), not FOLDER's
                                                           store; FOLDER still holds the signing key

The records are shaped as `bench.run` leaves them after a real drain (a job seeded as its `_seed` does,
drained and seen to end; the record below was copied from such a run), with ids, names, inputs and
times varied per job. Each `load` runs in its own process, so its peak RSS (VmHWM) is its own.
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc
import uuid
from contextlib import suppress
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import boto3

from jobguard.adapters.aws import Aws, AwsSettings
from jobguard.adapters.signing import FileSigner
from jobguard.adapters.stores import Store
from jobguard.adapters.stores.dynamodb import DynamoDBStore
from jobguard.adapters.stores.file import FileStore
from jobguard.commands.manifests import Manifests
from jobguard.domain.manifest import RESTORE, RESUBMITTED, SUBMITTING, JobRecord
from jobguard.output.report import Reporter
from jobguard.sim import ACCOUNT, REGION

from .peak import _peak_kb

DEPLOY = "bench"


def _stamp(ms: float) -> str:
    """A stamp `ms` after the drain began. As a real drain stamps them: `recorded` as each job's record is made (about
    0.4 ms of CPU a job), `terminating` once for a page of 500, `terminated` as the wait finds a hundred ended at once."""
    return (
        (datetime(2026, 12, 7, 10, 3, tzinfo=timezone.utc) + timedelta(milliseconds=ms))
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def record(index: int, variables: int = 1) -> JobRecord:
    """One drained job as `bench.run` seeds and drains it (RUNNING, then terminated); `variables` > 1: its submission
    carries that many inputs (real jobs' overrides hold commands, variables, parameters and tags: kilobytes)."""
    environment = [{"name": "INPUT", "value": f"s3://in/{index}"}]
    environment += [{"name": f"SETTING_{k}", "value": f"s3://bucket/prefix/{index}/setting-{k}.json"} for k in range(1, variables)]
    job_id = str(uuid.UUID(int=index + 1, version=4))
    started = 1796637769778 + index
    return JobRecord(
        job_id=job_id,
        job_arn=f"arn:aws:batch:{REGION}:{ACCOUNT}:job/{job_id}",
        job_name=f"job-{index}",
        queue="bench",
        job_definition="work:1",
        status_at_drain="RUNNING",
        submission={"containerOverrides": {"environment": environment}, "jobName": f"job-{index}"},
        outcome="terminated",
        stage="drain",
        times={
            "recorded": _stamp(index * 0.4),
            "terminating": _stamp(index // 500 * 200 + 210),
            "terminated": _stamp(index // 100 * 50 + 30000),
        },
        created_at=started,
        started_at=started + 30000,
        reason="configured",
    )


def _manifests(folder: Path, table: str | None = None) -> Manifests:
    signer = FileSigner(folder / "signing.key", create=True)
    store: Store = FileStore(folder / "manifests") if table is None else DynamoDBStore(Aws(AwsSettings()), table)
    return Manifests(store, signer, ACCOUNT, REGION, Reporter())


def _create_table(name: str) -> None:
    """The table as the Terraform module creates it (pk/sk strings), unless it exists."""
    dynamodb = boto3.client("dynamodb")
    with suppress(dynamodb.exceptions.ResourceInUseException):
        dynamodb.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )


def write(folder: Path, jobs: int, variables: int = 1, table: str | None = None) -> None:
    """A signed, paged manifest of `jobs` records, saved as drain saves it (one page of records at a time)."""
    if table is not None:
        _create_table(table)
    manifests = _manifests(folder, table)
    manifest = manifests.new(DEPLOY, {})
    manifest.queues = ["bench"]
    for start in range(0, jobs, 500):
        manifest.put(record(i, variables) for i in range(start, min(jobs, start + 500)))
        manifests.save(manifest)
    print(f"wrote {jobs} records to {manifests.store.uri(DEPLOY)}")


def load(folder: Path, trace: int, table: str | None = None) -> None:
    """Read the manifest as restore reads it, and say what it cost."""
    if trace:
        tracemalloc.start(1)
    before = _peak_kb()
    started = time.monotonic()
    manifests = _manifests(folder, table)
    manifests.elide = True  # as restore reads: records held without their submissions
    chosen = manifests.load(DEPLOY)  # restore: the candidates
    fresh = manifests.load(DEPLOY)  # restore: read again under the leases
    assert chosen is not None and fresh is not None
    seconds = time.monotonic() - started
    gc.collect()
    print(
        f"{len(fresh.jobs)} records read in {seconds:.1f} s; peak RSS {_peak_kb() / 1024:.0f} MB (before reading: {before / 1024:.0f} MB)"
    )
    if trace:
        snapshot = tracemalloc.take_snapshot()
        current, peak = tracemalloc.get_traced_memory()
        print(f"tracemalloc: {current / 2**20:.0f} MB held, {peak / 2**20:.0f} MB at the peak")
        for stat in snapshot.statistics("lineno")[:trace]:
            print(f"  {stat.size / 2**20:7.1f} MB {stat.count:9d} blocks  {stat.traceback[0]}")
    _ = chosen, fresh


def restore(folder: Path, whole: bool, table: str | None = None) -> None:
    """Read the manifest as restore does, then move every record as restore's pages of submissions do: each page's
    submissions read back (`Manifests.whole`), marked `submitting` and saved, then `resubmitted` and saved."""
    before = _peak_kb()
    started = time.monotonic()
    manifests = _manifests(folder, table)
    manifests.elide = not whole
    manifest = manifests.load(DEPLOY)
    assert manifest is not None
    ids = list(manifest.jobs)
    for start in range(0, len(ids), 500):
        page = manifests.whole(manifest, [manifest.jobs[i] for i in ids[start : start + 500]])
        marked = [r.moved_to(SUBMITTING, RESTORE) for r in page]
        manifest.put(marked)
        manifests.save(manifest)
        manifest.put(r.moved_to(RESUBMITTED, RESTORE, replacement_id=r.job_id) for r in marked)
        manifests.save(manifest)
    seconds = time.monotonic() - started
    print(
        f"{len(ids)} records resubmitted (store side) in {seconds:.1f} s, {'whole' if whole else 'elided'}; "
        f"peak RSS {_peak_kb() / 1024:.0f} MB (before reading: {before / 1024:.0f} MB)"
    )


def main(argv: list[str] | None = None) -> Any:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("write", "load", "restore"))
    parser.add_argument("folder", type=Path)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--variables", type=int, default=1, help="write: environment variables per job's submission")
    parser.add_argument("--whole", action="store_true", help="restore: hold every record whole (as before elision)")
    parser.add_argument("--trace", type=int, default=0, help="show this many of tracemalloc's top allocators (slower)")
    parser.add_argument("--table", help="the manifest in this DynamoDB table at AWS_ENDPOINT_URL, not in FOLDER")
    args = parser.parse_args(argv)
    args.folder.mkdir(parents=True, exist_ok=True)
    if args.what == "write":
        write(args.folder, args.jobs, args.variables, args.table)
    elif args.what == "restore":
        restore(args.folder, args.whole, args.table)
    else:
        load(args.folder, args.trace, args.table)


if __name__ == "__main__":
    main()
