"""Attacks on issues 27/28 (doubles, leases) that found defects: each test failed before its fix.

- A double left live by a run that died after its deploy's owner had finished was recorded by the
  next deploy's drain like any job, and that deploy's restore resubmitted it: the original then ran
  twice for good, under a mark no reconciliation of the earlier deploy looks for.
- `status` / `status --check` without a deploy id on a store shared by two regions failed (exit 2,
  `error:`) on the other region's manifest, which restore skips with a note.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobguard.adapters.aws import Aws, AwsSettings
from jobguard.adapters.lease import lease_scope, read_lease
from jobguard.adapters.stores import open_store
from jobguard.commands.doubles import DOUBLE_REASON
from jobguard.sim import Seeder, SimulatedAWS
from jobguard.sim.server import ACCOUNT

from .conftest import configure, records
from .test_overlap import _edit_header
from .test_reconcile import _double, _restored


def _live(aws: SimulatedAWS) -> list[str]:
    with aws.batch.lock:
        aws.batch.tick()
        return sorted(j for j, job in aws.batch.jobs.items() if job.status not in ("SUCCEEDED", "FAILED"))


@pytest.mark.slow
def test_a_double_an_earlier_deploy_left_live_is_stopped_by_the_next_drain_never_resubmitted(
    seed: Seeder, run, aws: SimulatedAWS, store: str
) -> None:
    original, record = _restored(seed, run, store)
    double = _double(seed, original, record)  # a paused run's SubmitJob landed after d1's owner finished; that run died
    aws.batch.advance_clock(1)  # ListJobs lags
    drained = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d2")
    assert drained.code == 0, drained.err
    assert "double cancelled" in drained.out and double in drained.out
    assert (aws.batch.jobs[double].reason or "").startswith(DOUBLE_REASON)
    noted = records(store, seed, "d2")[double]
    assert noted["outcome"] == "skipped" and record["replacement_id"] in noted["note"]
    assert run("restore", "--store", store, "--deploy-id", "d2").code == 0
    aws.batch.advance_clock(1)
    (replacement,) = _live(aws)  # d1's replacement, drained by d2 and replaced once; the double never again
    assert replacement == records(store, seed, "d2")[record["replacement_id"]]["replacement_id"]


@pytest.mark.slow
def test_the_recorded_replacement_is_never_taken_for_a_double_by_the_next_drain(seed: Seeder, run, aws: SimulatedAWS, store: str) -> None:
    """The one the earlier deploy records was stopped as a double (a paused run's mistake): the live one is kept and replaced."""
    original, record = _restored(seed, run, store)
    live = _double(seed, original, record)
    seed.batch.terminate_job(jobId=record["replacement_id"], reason=f"{DOUBLE_REASON} of original {original}: by the paused run")
    aws.batch.advance_clock(1)
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d2").code == 0
    assert records(store, seed, "d2")[live]["outcome"] != "skipped"
    assert run("restore", "--store", store, "--deploy-id", "d2").code == 0
    aws.batch.advance_clock(1)
    assert _live(aws) == [records(store, seed, "d2")[live]["replacement_id"]]


def test_status_and_check_skip_another_region_s_manifest(seed: Seeder, run, store: str) -> None:
    seed.queue("eu")
    seed.definition("proc")
    seed.job(jobName="x", jobQueue="eu", jobDefinition="proc")
    assert run("drain", "--store", store, "--queue", "eu", "--deploy-id", "eu-1").code == 0
    _edit_header(store, seed, "eu-1", region="eu-west-1")  # as a jobguard in eu-west-1 wrote it
    checked = run("status", "--store", store, "--check")
    assert checked.code == 0 and "skipped:" in checked.err and "eu-west-1" in checked.err, checked.err
    shown = run("status", "--store", store, "--json")
    assert shown.code == 0 and json.loads(shown.out)["deploys"] == []
    named = run("status", "--store", store, "--check", "--deploy-id", "eu-1")
    assert named.code == 2 and "eu-west-1" in named.err  # named: refused, not skipped


@pytest.mark.slow
def test_check_hands_each_lease_back_as_found(seed: Seeder, run, aws: SimulatedAWS, store: str) -> None:
    """A matrix deploy: leg q1 restored (its lease released), leg q2 still in its apply. A person's
    `status --check` must not lock q1 again for the deploy (until lease-ttl: its q2 leg's restore
    never releases q1), nor give q2's apply a fresh lease-ttl."""
    for queue in ("q1", "q2"):
        seed.queue(queue)
    seed.definition("proc")
    for queue in ("q1", "q2"):
        seed.job(jobName=f"on-{queue}", jobQueue=queue, jobDefinition="proc")
    aws.batch.advance_clock(1)
    assert run("drain", "--store", store, "--queue", "q1", "--queue", "q2", "--deploy-id", "d1").code == 0
    restored = run("restore", "--store", store, "--queue", "q1", "--deploy-id", "d1")
    assert restored.code == 0, restored.err
    leases = open_store(store, Aws(AwsSettings()))
    scope = lease_scope(ACCOUNT, "us-east-1")
    assert read_lease(leases, "q1", scope) is None
    apply_lease = read_lease(leases, "q2", scope)
    assert apply_lease is not None and apply_lease.holder_id is None
    checked = run("status", "--store", store, "--check", "--deploy-id", "d1")
    assert checked.code == 0, checked.err
    assert read_lease(leases, "q1", scope) is None  # free, as the q1 leg's restore left it
    assert read_lease(leases, "q2", scope) == apply_lease  # the apply's lease as it was: not extended


@pytest.mark.slow
def test_check_leaves_alone_a_queue_another_deploy_holds_instead_of_waiting_for_it(
    seed: Seeder, run, aws: SimulatedAWS, store: str, workdir: Path
) -> None:
    """d1 restored; d2 drained the same queue and is in its apply: `status --check` of d1 says so at once (it waited
    lock-timeout, then exit 3) and leaves d2's lease as it was."""
    _restored(seed, run, store)
    aws.batch.advance_clock(1)
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d2").code == 0
    leases = open_store(store, Aws(AwsSettings()))
    scope = lease_scope(ACCOUNT, "us-east-1")
    apply_lease = read_lease(leases, "work", scope)
    configure(workdir, "lock-timeout: 1")
    checked = run("status", "--store", store, "--check", "--deploy-id", "d1")
    assert checked.code == 0, checked.err
    assert "queue work: not checked: deploy d2 holds it" in checked.out
    assert read_lease(leases, "work", scope) == apply_lease
