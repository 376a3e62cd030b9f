"""Cost that must not grow with history (issue 12, item 7), counted on the simulated AWS.

  python -m bench.history [--deploys 1,100,1000] [--jobs 300,3000] [--stores file,s3,dynamodb]

(a) A restore with nothing to do, as a person runs it (no deploy id) and as the action runs it
    (its run's deploy id, which has no manifest), in a store that has seen 1, 100 and 1 000
    past deploys, all closed. Counted: the Store operations jobguard makes (every store kind) and
    the S3 / DynamoDB calls the simulation answers.
(b) The lookup after a killed restore: N jobs of the same name on one queue, drained, then a
    restore killed after it marked every one `submitting` and sent SubmitJob for every other
    one. The next restore must look each up before it sends anything again; counted: its
    ListJobs and DescribeJobs calls (and the SubmitJobs, which must be N/2), for N = 300, 3 000.

(c) The deploy window's sweep (issue 23): a deploy that drained Q queues (nothing running), then
    L late jobs per queue submitted during it (half succeeded, half killed by the apply taking
    their compute environment away), then restore. Counted: its Batch calls by action, and per
    queue; L = 0 is a quiet deploy's no-op restore.

Figures are call counts, not timings: they do not depend on the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from jobguard.adapters.stores.dynamodb import DynamoDBStore
from jobguard.adapters.stores.file import FileStore
from jobguard.adapters.stores.s3 import S3Store
from jobguard.cli import build_context, main
from jobguard.domain.manifest import RESTORE, SUBMITTING
from jobguard.domain.tags import MARK_TAG, Mark
from jobguard.options import resolve
from jobguard.output.report import Reporter
from jobguard.sim import Seeder, SimulatedAWS, Timing

TABLE = "jobguard-manifests"
BUCKET = "jobguard-manifests"
STORE_METHODS = ("load", "version", "save", "deploy_ids", "read", "write", "delete", "keys")
CONFIG = "lock-ttl: 5\nlease-ttl: 60\nlookup-window: 1\nrate: 1000\nburst: 1000\nretry:\n  initial-wait: 0.001\n  max-wait: 0.01\n"

STORE_OPERATIONS: Counter[str] = Counter()


def _count_store_operations() -> None:
    """Count every Store operation jobguard makes, whichever the store (the file store makes no AWS calls)."""
    for kind in (FileStore, S3Store, DynamoDBStore):
        for name in STORE_METHODS:
            method = getattr(kind, name)

            def counted(self: object, *args: object, _method: object = method, _name: str = name, **kwargs: object) -> object:
                STORE_OPERATIONS[_name] += 1
                return _method(self, *args, **kwargs)  # type: ignore[operator]

            setattr(kind, name, counted)


@contextlib.contextmanager
def _world(aws: SimulatedAWS, kind: str) -> Iterator[tuple[Seeder, str]]:
    """An emptied simulation, a working folder with the config, and a store of `kind`; (seeder, store URI)."""
    aws.reset(Timing.instant())
    seed = Seeder(aws)
    folder = Path(tempfile.mkdtemp(prefix="jobguard-history-"))
    config = CONFIG
    if kind == "file":
        store = f"file://{folder}/manifests"
    else:
        key = seed.client("kms").create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["Arn"]
        config += f"signing-key: kms:{key}\n"
        if kind == "s3":
            seed.client("s3").create_bucket(Bucket=BUCKET)
            store = f"s3://{BUCKET}/deploys"
        else:
            seed.client("dynamodb").create_table(
                TableName=TABLE,
                KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
                AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
            )
            store = f"dynamodb://{TABLE}"
    (folder / ".jobguard.yml").write_text(config)
    here = os.getcwd()
    saved = {k: os.environ.get(k) for k in ("XDG_CONFIG_HOME", "GITHUB_ACTIONS", "GITHUB_RUN_ID")}
    os.chdir(folder)
    os.environ["XDG_CONFIG_HOME"] = str(folder / "config")
    for name in ("GITHUB_ACTIONS", "GITHUB_RUN_ID"):
        os.environ.pop(name, None)
    try:
        yield seed, store
    finally:
        os.chdir(here)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _jobguard(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run the CLI in this process; (exit code, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    saved = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return code, err.getvalue()


def _check(code: int, err: str, what: str) -> None:
    if code != 0:
        raise SystemExit(f"{what} exited {code}: {err.strip()[-2000:]}")


def _past_deploys(seed: Seeder, store: str, count: int) -> None:
    """`count` closed deploys in the store: one real drain and restore, then signed copies of its manifest."""
    seed.queue("work")
    seed.definition("proc")
    seed.job(jobName="nightly", jobQueue="work", jobDefinition="proc")
    _check(*_jobguard("drain", "--store", store, "--queue", "work", "--deploy-id", "past-00000"), "drain")
    _check(*_jobguard("restore", "--store", store, "--deploy-id", "past-00000"), "restore")
    ctx = build_context(resolve(None, {"store": store}), Reporter(out=io.StringIO(), err=io.StringIO()), creating=False)
    template = ctx.manifests.load("past-00000")
    assert template is not None and not template.has_work_left
    for index in range(1, count):
        deploy_id = f"past-{index:05d}"
        copy = dataclasses.replace(template, deploy_id=deploy_id, changed=dict.fromkeys(template.jobs))
        ctx.manifests.versions[deploy_id] = None
        ctx.manifests.save(copy)
    assert len(ctx.store.deploy_ids()) == count and not ctx.manifests.open_ids()


def idle_restore(aws: SimulatedAWS, kinds: list[str], sizes: list[int]) -> list[dict[str, object]]:
    """(a): the calls of a restore with nothing to do, by store kind and number of past deploys."""
    rows: list[dict[str, object]] = []
    for kind in kinds:
        for size in sizes:
            with _world(aws, kind) as (seed, store):
                _past_deploys(seed, store, size)
                for who, env in (("person", {}), ("action", {"GITHUB_ACTIONS": "true", "GITHUB_RUN_ID": "99999"})):
                    STORE_OPERATIONS.clear()
                    before = Counter(aws.calls)
                    code, err = _jobguard("restore", "--store", store, env=env)
                    _check(code, err, f"restore ({who})")
                    calls = Counter(aws.calls)
                    calls.subtract(before)
                    store_calls = sum(n for action, n in calls.items() if action.startswith(("s3:", "dynamodb:")))
                    rows.append(
                        {
                            "store": kind,
                            "past deploys": size,
                            "restore": who,
                            "store operations": sum(STORE_OPERATIONS.values()),
                            "S3/DynamoDB calls": store_calls if kind != "file" else "-",
                            "all AWS calls": sum(calls.values()),
                        }
                    )
                    print(rows[-1], file=sys.stderr)
    return rows


def lookup_after_killed_restore(aws: SimulatedAWS, sizes: list[int]) -> list[dict[str, object]]:
    """(b): the calls of the restore after a killed one, N jobs of one name on one queue (file store)."""
    rows: list[dict[str, object]] = []
    for size in sizes:
        with _world(aws, "file") as (seed, store):
            queue = seed.queue("work")
            seed.definition("proc")
            originals = []
            for _ in range(size):  # straight into the simulation: seeding through the API is slow
                job_id = str(aws.batch.submit_job({"jobName": "same", "jobQueue": "work", "jobDefinition": "proc"})["jobId"])
                aws.batch.set_status(job_id, "RUNNING")
                originals.append(job_id)
            aws.batch.advance_clock(60)
            _check(*_jobguard("drain", "--store", store, "--queue", "work", "--deploy-id", "d1"), "drain")
            # The killed restore: every record marked `submitting` (one save), SubmitJob sent for every other one.
            ctx = build_context(resolve(None, {"store": store}), Reporter(out=io.StringIO(), err=io.StringIO()), creating=False)
            manifest = ctx.manifests.load("d1")
            assert manifest is not None and len(manifest.jobs) == size
            manifest.put([r.moved_to(SUBMITTING, RESTORE) for r in manifest])
            ctx.manifests.save(manifest)
            for index, job_id in enumerate(originals):
                if index % 2 == 0:
                    mark = Mark("d1", job_id, job_id, 1)
                    replacement = {"jobName": "same", "jobQueue": queue, "jobDefinition": "proc", "tags": {MARK_TAG: mark.tag_value()}}
                    aws.batch.submit_job(replacement)
            before = Counter(aws.calls)
            _check(*_jobguard("restore", "--store", store, "--deploy-id", "d1"), "restore")
            calls = Counter(aws.calls)
            calls.subtract(before)
            replaced: Counter[str] = Counter()
            with aws.batch.lock:
                for job in aws.batch.jobs.values():
                    value = aws.batch.tags.get(aws.batch.job_arn(job.job_id), {}).get(MARK_TAG, "")
                    if value:
                        replaced[value.split(" o=")[1].split()[0]] += 1
            lost = sum(replaced[j] == 0 for j in originals)
            doubled = sum(replaced[j] > 1 for j in originals)
            rows.append(
                {
                    "same-named jobs": size,
                    "ListJobs": calls["batch:ListJobs"],
                    "DescribeJobs": calls["batch:DescribeJobs"],
                    "SubmitJob": calls["batch:SubmitJob"],
                    "lookup calls per job": round((calls["batch:ListJobs"] + calls["batch:DescribeJobs"]) / size, 3),
                    "lost": lost,
                    "doubled": doubled,
                }
            )
            print(rows[-1], file=sys.stderr)
    return rows


def window_sweep(aws: SimulatedAWS, queues: list[int], late: list[int]) -> list[dict[str, object]]:
    """(c): the calls of restore's deploy-window sweep (file store), by queues and late jobs per queue."""
    rows: list[dict[str, object]] = []
    for count in queues:
        for per_queue in late:
            with _world(aws, "file") as (seed, store):
                names = [f"w{i}" for i in range(count)]
                for name in names:
                    seed.queue(name)
                seed.definition("proc")
                _check(*_jobguard("drain", "--store", store, *[f"--queue={n}" for n in names], "--deploy-id", "d1"), "drain")
                killed = 0
                for name in names:
                    for index in range(per_queue):  # straight into the simulation: seeding through the API is slow
                        job_id = str(aws.batch.submit_job({"jobName": f"late{index}", "jobQueue": name, "jobDefinition": "proc"})["jobId"])
                        aws.batch.set_status(job_id, "RUNNING" if index % 2 else "SUCCEEDED")
                        killed += index % 2
                    aws.batch.lose_hosts(f"{name}-ce")  # the apply: instant timing, they end at once
                aws.batch.tick()
                before = Counter(aws.calls)
                _check(*_jobguard("restore", "--store", store, "--deploy-id", "d1"), "restore")
                calls = Counter(aws.calls)
                calls.subtract(before)
                batch = {a.split(":", 1)[1]: n for a, n in calls.items() if a.startswith("batch:") and n}
                rows.append(
                    {
                        "queues": count,
                        "late jobs": count * per_queue,
                        "killed": killed,
                        "ListJobs": batch.get("ListJobs", 0),
                        "DescribeJobs": batch.get("DescribeJobs", 0),
                        "DescribeJobQueues": batch.get("DescribeJobQueues", 0),
                        "SubmitJob": batch.get("SubmitJob", 0),
                        "all Batch calls": sum(batch.values()),
                        "Batch calls per queue": round(sum(batch.values()) / count, 2),
                    }
                )
                print(rows[-1], file=sys.stderr)
    return rows


def _table(rows: list[dict[str, object]]) -> str:
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(r[h]) for h in header) + " |" for r in rows]
    return "\n".join(lines)


def main_bench(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--deploys", default="1,100,1000", help="past deploys in the store (default 1,100,1000)")
    parser.add_argument("--jobs", default="300,3000", help="same-named jobs for the lookup (default 300,3000)")
    parser.add_argument("--stores", default="file,s3,dynamodb", help="store kinds for (a)")
    parser.add_argument("--window-queues", default="1,5,20", help="queues drained for (c) (default 1,5,20)")
    parser.add_argument("--window-late", default="0,200", help="late jobs per queue for (c) (default 0,200)")
    args = parser.parse_args(argv)
    _count_store_operations()
    with SimulatedAWS(Timing.instant()) as aws, aws.environment():
        idle = idle_restore(aws, args.stores.split(","), [int(n) for n in args.deploys.split(",")])
        lookup = lookup_after_killed_restore(aws, [int(n) for n in args.jobs.split(",")]) if args.jobs else []
        window = window_sweep(aws, [int(n) for n in args.window_queues.split(",")], [int(n) for n in args.window_late.split(",")])
    print("(a) a restore with nothing to do\n")
    print(_table(idle))
    if lookup:
        print("\n(b) the lookup after a killed restore\n")
        print(_table(lookup))
    print("\n(c) the deploy window's sweep\n")
    print(_table(window))


if __name__ == "__main__":
    main_bench()
