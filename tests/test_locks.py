"""The deploy lock: a second drain or restore waits, then fails naming the holder; a killed
run's lock expires; two drains started together never both take a job."""

from __future__ import annotations

import time
from pathlib import Path

import boto3
import pytest

from jobguard.adapters.store import open_store
from jobguard.commands.lock import DeployLock
from jobguard.report import Reporter
from jobguard.retry import RetryPolicy
from jobguard.simulated_aws import Seeder, SimulatedAWS

from .conftest import jobs_by_original, load_manifest, run_process


class _Clients:
    def client(self, service: str) -> object:
        return boto3.client(service)


def _store(uri: str):
    return open_store(uri, _Clients(), RetryPolicy(initial_wait=0.001, max_wait=0.01))


def _world(seed: Seeder, jobs: int = 4) -> list[str]:
    seed.queue("work")
    seed.definition("proc")
    return [seed.job(jobName=f"j{i}", jobQueue="work", jobDefinition="proc") for i in range(jobs)]


def test_second_run_waits_then_fails_naming_the_holder(
    seed: Seeder, store: str, run, aws: SimulatedAWS, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = _world(seed)
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_RUN_ID", "777")
    monkeypatch.setenv("GITHUB_REPOSITORY", "org/pipeline")
    with DeployLock(_store(store), ["work"], timeout=1, ttl=60, report=Reporter()):
        monkeypatch.delenv("GITHUB_ACTIONS")
        started = time.monotonic()
        result = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d2", "--lock-timeout", "0.5")
        waited = time.monotonic() - started
    assert result.code == 1 and waited >= 0.5
    assert "queue work: another jobguard run holds the deploy lock: https://github.com/org/pipeline/actions/runs/777" in result.err
    assert "waiting up to 0.5 s for the lock on work" in result.out
    assert not any(aws.batch.jobs[j].terminated for j in jobs)
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d2").code == 0  # released on exit
    assert all(aws.batch.jobs[j].terminated for j in jobs)


def test_restore_takes_the_lock_of_its_queues(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    _world(seed)
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    with DeployLock(_store(store), ["work"], timeout=1, ttl=60, report=Reporter()):
        result = run("restore", "--store", store, "--lock-timeout", "0.2")
    assert result.code == 1 and "holds the deploy lock" in result.err
    assert jobs_by_original(aws) == {}


def test_lock_of_a_killed_run_expires(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    jobs = _world(seed)
    abandoned = DeployLock(_store(store), ["work"], timeout=1, ttl=0.3, report=Reporter())
    abandoned.__enter__()
    abandoned._stop.set()  # the process died: nobody renews or releases it
    started = time.monotonic()
    assert run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1").code == 0
    assert time.monotonic() - started < 10
    assert all(aws.batch.jobs[j].terminated for j in jobs)


def test_heartbeat_keeps_a_long_run_locked(seed: Seeder, store: str, workdir: Path) -> None:
    _world(seed, jobs=0)
    with DeployLock(_store(store), ["work"], timeout=1, ttl=0.4, report=Reporter()) as held:
        time.sleep(1.2)  # three times the time to live
        other = DeployLock(_store(store), ["work"], timeout=0, ttl=0.4, report=Reporter())
        assert _store(store).try_lock("queue-work", other.record.renewed(0.4)) is not None
    assert held.held == []
    assert _store(store).try_lock("queue-work", other.record.renewed(0.4)) is None


def test_two_drains_started_together_never_both_take_a_job(seed: Seeder, store: str, run, aws: SimulatedAWS) -> None:
    jobs = _world(seed, jobs=30)
    first = run_process("drain", "--store", store, "--queue", "work", "--deploy-id", "left")
    second = run_process("drain", "--store", store, "--queue", "work", "--deploy-id", "right")
    for process in (first, second):
        _out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
    recorded = [r["job_id"] for deploy in ("left", "right") for r in load_manifest(store, seed, deploy)["jobs"]]
    assert sorted(recorded) == sorted(jobs)  # each job in exactly one manifest
    assert run("restore", "--store", store).code == 0
    assert {j: len(v) for j, v in jobs_by_original(aws).items()} == dict.fromkeys(jobs, 1)
