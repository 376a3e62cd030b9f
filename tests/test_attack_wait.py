"""Attacks on commit 7b08c08: the pass for jobs ListJobs was slow to show runs DURING the wait for the
stops (once `lookup-window` has passed, or when the wait ends if sooner), the first pass lists the waiting
jobs beside its listing, and TerminateJobs probes with up to PROBE_PAGES calls at once. Each test checks
the promise itself: no job lost, none doubled, no replacement beside its original, one line per error."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jobguard.adapters.batch import PROBE_PAGES, STOP_PAGE
from jobguard.sim import Seeder, SimulatedAWS

from .conftest import asked_to_stop, configure, overlapping, records, replacements_of
from .conftest import exactly_once as _exactly_once
from .conftest import job_of as _job

pytestmark = pytest.mark.slow  # attacks that wait out stops, lags and retries: the full suite runs them

PLANS = Path(__file__).parent / "plans"


def _hide(aws: SimulatedAWS, monkeypatch: pytest.MonkeyPatch, hidden: set[str], until: Callable[[], bool]) -> None:
    """ListJobs is slow to show the `hidden` jobs: left out of every answer until `until()` holds."""
    list_jobs = aws.batch.list_jobs

    def lagging(body: dict[str, Any]) -> dict[str, Any]:
        answer = list_jobs(body)
        if until():
            return answer
        return {**answer, "jobSummaryList": [s for s in answer.get("jobSummaryList", []) if s.get("jobId") not in hidden]}

    monkeypatch.setattr(aws.batch, "list_jobs", lagging)


def _in_the_wait(aws: SimulatedAWS, monkeypatch: pytest.MonkeyPatch, ended: tuple[str, ...] = ()) -> Callable[[], bool]:
    """True once the drain has looked at the jobs it awaits (the wait for the stops has begun) and each of
    `ended` has ended: a job ListJobs shows from then on is found by no pass but the one in the wait."""
    from jobguard.commands.drain import _Drain

    polled: list[bool] = []
    poll_ended = _Drain._poll_ended

    def polling(self: _Drain, waiting: dict[str, Any]) -> None:
        poll_ended(self, waiting)
        polled.append(True)

    monkeypatch.setattr(_Drain, "_poll_ended", polling)

    def until() -> bool:
        with aws.batch.lock:
            aws.batch.tick()
            return bool(polled) and all(aws.batch.jobs[j].status in ("SUCCEEDED", "FAILED") for j in ended)

    return until


def _error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "error" in line.lower()]


# -- 1. the wait ends (stop-timeout) before lookup-window has passed -------------------------------------
def test_stop_timeout_shorter_than_lookup_window_still_runs_the_pass_for_jobs_listing_was_slow_to_show(
    seed: Seeder, store: str, run: Any, aws: SimulatedAWS, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stop-timeout 1.5 s, lookup-window 6 s; `steady` takes 8 s to stop, so the wait ends by its bound, long
    before lookup-window has passed. The docstring (and README) say the pass runs "when the wait ends, if
    sooner": before 7b08c08 it always ran after the wait. `slow` (ListJobs shows it only once the wait has
    begun) must be recorded, or the apply kills it with no record anywhere."""
    configure(workdir, "stop-timeout: 1.5\nlookup-window: 6")
    seed.queue("work")
    seed.definition("proc")
    steady = _job(seed, "steady")
    aws.batch.jobs[steady].stop_seconds = 8.0
    slow = _job(seed, "slow")
    _hide(aws, monkeypatch, {slow}, _in_the_wait(aws, monkeypatch))
    drained = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1")
    assert drained.code == 1, drained.err  # steady still running after stop-timeout
    stored = records(store, seed, "d1")
    assert slow in stored, f"slow ({aws.batch.jobs[slow].status}) not recorded: lost to the apply\n{drained.out}"


# -- 2. the in-wait pass raises: a dependent on a queue jobguard may not act on --------------------------
def test_the_in_wait_pass_refusing_a_dependent_on_an_unconfigured_queue_loses_nothing_ended_and_stops_nothing_more(
    seed: Seeder, store: str, run: Any, aws: SimulatedAWS, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The in-wait pass finds `slow` (ListJobs showed it late) while `long` is still stopping; a job on `other`
    (not configured) waits on `slow`. The drain must stop with one `error:` line (exit 2), `quick`'s end (seen
    before the pass) saved, `long` still `terminating` (restore waits for it), `slow` and its dependent not
    stopped. A re-run with `other` configured takes them; restore brings back each once."""
    configure(workdir, "lookup-window: 3")
    seed.queue("work")
    seed.queue("other")
    seed.definition("proc")
    quick = _job(seed, "quick")
    long = _job(seed, "long")
    aws.batch.jobs[long].stop_seconds = 6.0
    slow = _job(seed, "slow")
    dependent = _job(seed, "dependent", "PENDING", queue="other", after=slow)
    _hide(aws, monkeypatch, {slow}, _in_the_wait(aws, monkeypatch, (quick,)))
    drained = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1")
    assert drained.code == 2, drained.out + drained.err
    errors = [line for line in drained.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "other" in errors[0], drained.err
    stored = records(store, seed, "d1")
    assert stored[quick]["outcome"] == "terminated", stored[quick]
    assert stored[long]["outcome"] == "terminating", stored[long]
    assert slow not in stored and dependent not in stored
    assert not asked_to_stop(aws, slow) and not asked_to_stop(aws, dependent)
    again = run("drain", "--store", store, "--queue", "work", "--queue", "other", "--deploy-id", "d1")
    assert again.code == 0, again.out + again.err
    stored = records(store, seed, "d1")
    assert {stored[j]["outcome"] for j in (quick, long, slow, dependent)} == {"terminated"}, stored
    restored = run("restore", "--store", store, "--deploy-id", "d1")
    assert restored.code == 0, restored.err
    _exactly_once(aws, [quick, long, slow, dependent])


# -- 3. the store fails during the in-wait pass ---------------------------------------------------------
def test_the_store_failing_during_the_in_wait_pass_stops_nothing_unrecorded_and_keeps_the_ends_seen(
    seed: Seeder, store: str, run: Any, aws: SimulatedAWS, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The in-wait pass finds `slow`; the store refuses the write of its record (after retries). `slow` must
    not be stopped (no record), `quick`'s end must be in the store, `long` stays `terminating`; exit 4 with one
    `error:` line. A re-run drains `slow`; restore brings each back once."""
    from jobguard.commands.manifests import Manifests
    from jobguard.errors import StoreError

    configure(workdir, "lookup-window: 3")
    seed.queue("work")
    seed.definition("proc")
    quick = _job(seed, "quick")
    long = _job(seed, "long")
    aws.batch.jobs[long].stop_seconds = 6.0
    slow = _job(seed, "slow")
    _hide(aws, monkeypatch, {slow}, _in_the_wait(aws, monkeypatch, (quick,)))
    save = Manifests.save
    refused: list[bool] = []

    def failing(self: Manifests, manifest: Any) -> None:
        if slow in manifest.jobs and not refused:
            refused.append(True)
            raise StoreError("manifest store: PutObject failed after 10 tries (injected)")
        save(self, manifest)

    monkeypatch.setattr(Manifests, "save", failing)
    drained = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1")
    assert refused, drained.out
    assert drained.code == 4, drained.out + drained.err
    assert len([line for line in drained.err.splitlines() if line.startswith("error:")]) == 1, drained.err
    assert not asked_to_stop(aws, slow)
    stored = records(store, seed, "d1")
    assert stored[quick]["outcome"] == "terminated" and stored[long]["outcome"] == "terminating", stored
    assert slow not in stored
    again = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1")
    assert again.code == 0, again.out + again.err
    restored = run("restore", "--store", store, "--deploy-id", "d1")
    assert restored.code == 0, restored.err
    _exactly_once(aws, [quick, long, slow])


# -- 4. a job the in-wait pass finds never stops -------------------------------------------------------------
def test_a_job_the_in_wait_pass_stops_that_never_ends_is_named_once_and_fails_the_drain(
    seed: Seeder, store: str, run: Any, aws: SimulatedAWS, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`steady` takes 2.5 s to stop; the in-wait pass (lookup-window 1.5 s) finds `slow`, which never stops
    (stop-timeout 2.5 s, restarted for it). One `error:` line naming `slow`, none for `steady` (it ended within
    the restarted bound), exit 1; after both end, restore brings each back once."""
    configure(workdir, "stop-timeout: 2.5")
    seed.queue("work")
    seed.definition("proc")
    steady = _job(seed, "steady")
    aws.batch.jobs[steady].stop_seconds = 2.5
    slow = _job(seed, "slow")
    aws.batch.jobs[slow].stop_seconds = 600.0
    _hide(aws, monkeypatch, {slow}, _in_the_wait(aws, monkeypatch))
    started = time.monotonic()
    drained = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1")
    took = time.monotonic() - started
    assert drained.code == 1, drained.out + drained.err
    errors = [line for line in drained.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and slow in errors[0] and "still running" in errors[0], drained.err
    assert drained.out.count("waiting up to") == 2, drained.out
    stored = records(store, seed, "d1")
    assert stored[steady]["outcome"] == "terminated" and stored[slow]["outcome"] == "terminating", stored
    assert took < 1.5 + 2.5 + 3.0, took  # lookup-window + the restarted bound, with room for the passes
    aws.batch.advance_clock(700)
    restored = run("restore", "--store", store, "--deploy-id", "d1")
    assert restored.code == 0, restored.err
    _exactly_once(aws, [steady, slow])


# -- 5. the wait ends before lookup-window: the pass still runs ------------------------------------------
def test_a_wait_ending_before_lookup_window_still_runs_the_pass(
    seed: Seeder, store: str, run: Any, aws: SimulatedAWS, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`steady` ends at once (0.2 s); the pass still runs when the wait ends (an in-order listing of work after
    the stops: more ListJobs calls than the passes made), and finds `slow`, shown 0.1 s after the stop."""
    configure(workdir, "lookup-window: 30")
    seed.queue("work")
    seed.definition("proc")
    steady = _job(seed, "steady")
    slow = _job(seed, "slow")
    _hide(aws, monkeypatch, {slow}, _in_the_wait(aws, monkeypatch))
    started = time.monotonic()
    drained = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1")
    assert drained.code == 0, drained.out + drained.err
    assert time.monotonic() - started < 15, "waited for lookup-window although every stop had ended"
    assert slow in records(store, seed, "d1"), drained.out
    restored = run("restore", "--store", store, "--deploy-id", "d1")
    assert restored.code == 0, restored.err
    _exactly_once(aws, [steady, slow])


# -- 6. nothing stopped: no wait, no pass ------------------------------------------------------------------
def test_a_drain_that_stops_nothing_neither_waits_nor_lists_again(seed: Seeder, store: str, run: Any, aws: SimulatedAWS) -> None:
    seed.queue("work")
    seed.definition("proc")
    drained = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1")
    assert drained.code == 0, drained.err
    assert "waiting up to" not in drained.out
    # pass 1 (side by side, 5 statuses) finds nothing and pass 2 (in order, 5 statuses) ends the passes; no third pass
    assert aws.calls["batch:ListJobs"] <= 5 + 5 + 2 + 2, aws.calls["batch:ListJobs"]


# -- 8. the TerminateJobs probe wave: mixed per-page outcomes ---------------------------------------------
class _Answer(Exception):
    """Raised by a patched model call: the server answers with this HTTP status and error code."""

    def __init__(self, status: int, code: str) -> None:
        super().__init__(code)
        self.status, self.code = status, code


def _answering_pages(aws: SimulatedAWS, monkeypatch: pytest.MonkeyPatch, plan: list[str]) -> dict[str, int]:
    """TerminateJobs calls answered page by page (a page: the ids of its first call), in the order their first
    calls arrive, by `plan`: refused-whole (400), unknown-operation (501), throttled-out (429 on every try),
    throttled-twice (429, 429, then taken); pages beyond the plan are taken. How many jobs each bulk call stopped."""
    import jobguard.sim.server as server

    outcomes = {"refused-whole": (400, "ClientException"), "unknown-operation": (501, "NotImplemented")}
    lock = threading.Lock()
    pages: dict[frozenset[str], str] = {}
    tries: dict[frozenset[str], int] = {}
    stopped: dict[str, int] = {}
    terminate_jobs = aws.batch.terminate_jobs

    def answering(body: dict[str, Any], *rest: Any) -> dict[str, Any]:
        ids = frozenset(str(j) for j in body.get("jobs", []))
        with lock:
            page = next((p for p in pages if ids <= p), ids)  # a retry sends the page's remaining ids
            outcome = pages.setdefault(page, plan.pop(0) if plan else "taken")
            tries[page] = attempt = tries.get(page, 0) + 1
        if outcome in outcomes:
            raise _Answer(*outcomes[outcome])
        if outcome == "throttled-out" or (outcome == "throttled-twice" and attempt <= 2):
            raise _Answer(429, "TooManyRequestsException")
        answer = terminate_jobs(body, *rest)
        with lock:
            for job_id in answer.get("successful", []) or []:
                stopped[str(job_id)] = stopped.get(str(job_id), 0) + 1
        return answer

    model = server.SimulatedAWS._model

    def translating(start_response: Any, call: Callable[[], Any]) -> Any:
        try:
            return model(start_response, call)
        except _Answer as exc:
            return server._error(start_response, exc.status, exc.code, "injected", xml=False)

    monkeypatch.setattr(aws.batch, "terminate_jobs", answering)
    monkeypatch.setattr(server.SimulatedAWS, "_model", staticmethod(translating))
    return stopped


@pytest.mark.slow
@pytest.mark.parametrize("first", ["unknown-operation", "refused-whole"])
def test_a_probe_wave_with_mixed_page_outcomes_stops_every_job_once_recorded(
    seed: Seeder, run: Any, aws: SimulatedAWS, workdir: Path, monkeypatch: pytest.MonkeyPatch, first: str
) -> None:
    """PROBE_PAGES + 2 pages of one queue; the first wave's TerminateJobs calls answered differently page by page
    (`first` for the first page to arrive, then the other of refused whole / unknown operation, throttled on
    every try, throttled twice (two pages), the rest taken), and one job refused by itself. Every job must end
    stopped and recorded `terminated`, or running and recorded `failed ... left running` with one error line of
    its own; none stopped with no record, none stopped twice by bulk calls; restore brings back each stopped one
    once."""
    seed.definition("proc")
    seed.queue("work")
    count = (PROBE_PAGES + 2) * STOP_PAGE
    jobs = [seed.job(status="RUNNING", jobName=f"j{i}", jobQueue="work", jobDefinition="proc") for i in range(count)]
    second = "refused-whole" if first == "unknown-operation" else "unknown-operation"
    stopped = _answering_pages(aws, monkeypatch, [first, second, "throttled-out", "throttled-twice", "throttled-twice"])
    aws.refuse_stop = lambda job_id: ("ClientException", "injected: not this one") if job_id == jobs[7] else None
    store = f"file://{workdir}/m"
    drained = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1")
    stored = records(store, seed, "d1")
    assert set(stored) == set(jobs), "a job at risk has no record"
    left = [j for j, r in stored.items() if r["outcome"] == "failed"]
    for job_id in jobs:
        state = aws.batch.jobs[job_id]
        if stored[job_id]["outcome"] == "terminated":
            assert state.status == "FAILED" and state.stop_kind, (job_id, state.status)
        else:
            assert stored[job_id]["outcome"] == "failed", stored[job_id]
            assert state.status == "RUNNING" and not state.stop_kind, (job_id, state.status, stored[job_id])
    assert len(left) >= STOP_PAGE  # the page throttled on every try: left running, each job said so
    errors = [line for line in drained.err.splitlines() if line.startswith("error:")]
    assert len(errors) == len(left), drained.err[-3000:]
    assert drained.code == (1 if left else 0), drained.err[-3000:]
    assert max(stopped.values(), default=0) <= 1
    aws.batch.advance_clock(60)
    restored = run("restore", "--store", store, "--deploy-id", "d1")
    assert restored.code == 0, restored.err
    found = replacements_of(aws)
    assert {j: len(found.get(j, [])) for j in jobs} == {j: int(stored[j]["outcome"] == "terminated") for j in jobs}
    assert overlapping(aws) == []


# -- 9. an adopted deploy's jobs, awaited beside the in-wait pass, which then fails ---------------------------
@pytest.mark.slow
def test_an_adopted_deploys_ends_are_saved_although_the_in_wait_pass_fails(
    seed: Seeder, store: str, run: Any, aws: SimulatedAWS, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """d1 dies after recording `adopted` `terminating`, before the stop left. d2 adopts it (its record is in d1's
    manifest), stops it and waits; the in-wait pass then fails (a dependent of `slow` on `other`, which is not
    configured). d1's manifest must say `adopted` terminated (it ended before the pass), or a restore of d1
    would wait for or stop it again; then a re-run and restore bring back each job once."""
    from jobguard.adapters.batch import Batch
    from jobguard.errors import LeaseError

    configure(workdir, "lease-ttl: 2\nlookup-window: 3")
    seed.queue("work")
    seed.queue("other")
    seed.definition("proc")
    adopted = _job(seed, "adopted")
    terminate_many = Batch.terminate_many

    def dying(self: Batch, jobs: Any, reason: str) -> Any:
        raise LeaseError("lease of queue work: taken over (injected: the run dies before its stops leave)")

    monkeypatch.setattr(Batch, "terminate_many", dying)
    first = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1")
    assert first.code == 3, first.err
    assert records(store, seed, "d1")[adopted]["outcome"] == "terminating" and not asked_to_stop(aws, adopted)
    monkeypatch.setattr(Batch, "terminate_many", terminate_many)
    long = _job(seed, "long")
    aws.batch.jobs[long].stop_seconds = 6.0
    slow = _job(seed, "slow")
    dependent = _job(seed, "dependent", "PENDING", queue="other", after=slow)
    _hide(aws, monkeypatch, {slow}, _in_the_wait(aws, monkeypatch, (adopted,)))
    deadline = time.monotonic() + 30
    while True:  # d1's lease on work runs out (lease-ttl 2 s)
        second = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d2")
        if second.code != 3 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert second.code == 2, second.out + second.err
    assert "adopting deploy d1" in second.out
    assert records(store, seed, "d1")[adopted]["outcome"] == "terminated", records(store, seed, "d1")[adopted]
    assert records(store, seed, "d2")[long]["outcome"] == "terminating"
    again = run("drain", "--store", store, "--queue", "work", "--queue", "other", "--deploy-id", "d2")
    assert again.code == 0, again.out + again.err
    for deploy in ("d2", "d1"):
        restored = run("restore", "--store", store, "--deploy-id", deploy)
        assert restored.code == 0, restored.out + restored.err
    _exactly_once(aws, [adopted, long, slow, dependent])


# -- 10. a grace period: queued passes, the grace, then the final passes and the in-wait pass -----------------
def test_with_a_grace_period_the_in_wait_pass_finds_a_job_listing_was_slow_to_show(
    seed: Seeder, store: str, run: Any, aws: SimulatedAWS, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--grace 1s: `queued` is drained first, `runner` gets a second, then is stopped (3 s to stop); `slow`
    (RUNNING, shown 0.5 s after runner's stop) is found by the in-wait pass, lookup-window after the final
    passes began (not after the queued ones)."""
    seed.queue("work")
    seed.definition("proc")
    queued = _job(seed, "queued", "RUNNABLE")
    aws.batch.jobs[queued].pinned = True
    runner = _job(seed, "runner")
    aws.batch.jobs[runner].stop_seconds = 3.0
    slow = _job(seed, "slow")
    _hide(aws, monkeypatch, {slow}, _in_the_wait(aws, monkeypatch))
    drained = run("drain", "--store", store, "--queue", "work", "--grace", "1s", "--deploy-id", "d1")
    assert drained.code == 0, drained.out + drained.err
    stored = records(store, seed, "d1")
    assert {stored[j]["outcome"] for j in (queued, runner, slow)} == {"terminated"}, drained.out
    restored = run("restore", "--store", store, "--deploy-id", "d1")
    assert restored.code == 0, restored.err
    _exactly_once(aws, [queued, runner, slow])


# -- 11. an app submitting every 100 ms throughout ----------------------------------------------------------
@pytest.mark.slow
def test_an_app_submitting_every_100_ms_throughout_the_drain_loses_and_doubles_nothing(
    seed: Seeder, store: str, run: Any, aws: SimulatedAWS, workdir: Path
) -> None:
    """The queue stays open (no freeze) and an app submits a job every 100 ms through the drain and its wait
    (5 running jobs take 2 s to stop, so the in-wait pass runs lookup-window in, and finds the app's new jobs,
    whose stops restart the bound). Every job created before the drain began is recorded; no job recorded
    twice (here or as another's replacement); restore brings back each stopped job once, none beside its
    original."""
    seed.queue("work")
    seed.definition("proc")
    running = [_job(seed, f"run{i}") for i in range(5)]
    for job_id in running:
        aws.batch.jobs[job_id].stop_seconds = 2.0
    stop = threading.Event()
    made: list[str] = []

    def app() -> None:
        while not stop.wait(0.1):
            made.append(str(aws.batch.submit_job({"jobName": f"app{len(made)}", "jobQueue": "work", "jobDefinition": "proc"})["jobId"]))

    for _ in range(5):
        made.append(str(aws.batch.submit_job({"jobName": f"app{len(made)}", "jobQueue": "work", "jobDefinition": "proc"})["jobId"]))
    aws.batch.advance_clock(1.0)  # these five are listed
    began = aws.batch.now()
    before = list(made)
    thread = threading.Thread(target=app, daemon=True)
    thread.start()
    try:
        drained = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1")
    finally:
        stop.set()
        thread.join()
    assert drained.code == 0, drained.out + drained.err
    stored = records(store, seed, "d1")
    missing = [j for j in running + before if j not in stored and aws.batch.jobs[j].created_at < began]
    assert missing == [], [aws.batch.jobs[j].status for j in missing]
    assert drained.out.count("waiting up to") >= 2, drained.out  # the in-wait pass found and stopped app jobs
    restored = run("restore", "--store", store, "--deploy-id", "d1")
    assert restored.code == 0, restored.err
    found = replacements_of(aws)
    for job_id, record in stored.items():
        expected = 1 if record["outcome"] in ("terminated", "resubmitted") else 0
        assert len(found.get(job_id, [])) == expected, (job_id, record["outcome"], found.get(job_id))
    assert overlapping(aws) == []


# -- 12. jobguard run: the in-wait pass in the run's drain --------------------------------------------------
def test_jobguard_run_drains_a_job_listing_was_slow_to_show_during_the_wait(
    seed: Seeder, store: str, run: Any, aws: SimulatedAWS, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    seed.queue("work")
    seed.definition("proc")
    steady = _job(seed, "steady")
    aws.batch.jobs[steady].stop_seconds = 3.0
    slow = _job(seed, "slow")
    _hide(aws, monkeypatch, {slow}, _in_the_wait(aws, monkeypatch))
    result = run("run", "--store", store, "--queue", "work", "--deploy-id", "d1", "--", sys.executable, "-c", "pass")
    assert result.code == 0, result.out + result.err
    stored = records(store, seed, "d1")
    assert {stored[j]["outcome"] for j in (steady, slow)} == {"resubmitted"}, stored
    _exactly_once(aws, [steady, slow])


# -- 3b. the lease is lost right before the in-wait pass's stop leaves -------------------------------------
def test_a_lease_lost_as_the_in_wait_pass_stops_a_job_leaves_it_recorded_and_a_rerun_stops_it(
    seed: Seeder, store: str, run: Any, aws: SimulatedAWS, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The in-wait pass records `slow` `terminating`; the lease check right before its TerminateJobs fails.
    Exit 3 with one `error:` line; `slow` recorded `terminating` and not stopped, `quick` saved terminated;
    a re-run sends the stop again (an earlier run may have died before it left) and restore brings each back once."""
    from jobguard.adapters.batch import Batch
    from jobguard.errors import LeaseError

    configure(workdir, "lookup-window: 3")
    seed.queue("work")
    seed.definition("proc")
    quick = _job(seed, "quick")
    long = _job(seed, "long")
    aws.batch.jobs[long].stop_seconds = 6.0
    slow = _job(seed, "slow")
    _hide(aws, monkeypatch, {slow}, _in_the_wait(aws, monkeypatch, (quick,)))
    terminate_many = Batch.terminate_many

    def guarded(self: Batch, jobs: Any, reason: str) -> Any:
        if slow in jobs:
            raise LeaseError("lease of queue work: taken over by another run (injected); this run stopped")
        return terminate_many(self, jobs, reason)

    monkeypatch.setattr(Batch, "terminate_many", guarded)
    drained = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1")
    assert drained.code == 3, drained.out + drained.err
    assert len([line for line in drained.err.splitlines() if line.startswith("error:")]) == 1, drained.err
    stored = records(store, seed, "d1")
    assert stored[quick]["outcome"] == "terminated" and stored[slow]["outcome"] == "terminating", stored
    assert not asked_to_stop(aws, slow)
    monkeypatch.setattr(Batch, "terminate_many", terminate_many)
    again = run("drain", "--store", store, "--queue", "work", "--deploy-id", "d1")
    assert again.code == 0, again.out + again.err
    assert asked_to_stop(aws, slow)
    restored = run("restore", "--store", store, "--deploy-id", "d1")
    assert restored.code == 0, restored.err
    _exactly_once(aws, [quick, long, slow])


# -- 13. the waiting jobs listed beside a long first listing: a dependent submitted meanwhile ---------------
def test_a_dependent_submitted_while_the_first_pass_still_lists_is_taken_by_a_later_look(
    seed: Seeder, store: str, run: Any, aws: SimulatedAWS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first pass lists the waiting jobs beside its listing (7b08c08), not after it: a job submitted on
    `legacy-queue` (configured, left alone by the plan: restore's sweep never looks there) while the first
    listing still runs (1.5 s here; ListJobs lags 1 s) waits on `upstream`, which that pass then stops. Listed
    after the listing, as before, it was taken by the first pass; now a later look must take it (waiting) or
    record it (failed with upstream)."""
    from dataclasses import replace

    aws.batch.timing = replace(aws.batch.timing, list_lag_seconds=1.0)
    seed.definition("proc")
    for queue in ("science-queue", "legacy-queue"):
        seed.queue(queue)
    upstream = _job(seed, "upstream", queue="science-queue")
    list_jobs = aws.batch.list_jobs
    made: list[str] = []
    slowed: list[bool] = []

    def listing(body: dict[str, Any]) -> dict[str, Any]:
        queue, status = str(body.get("jobQueue", "")).rsplit("/", 1)[-1], body.get("jobStatus")
        if queue == "science-queue" and status == "RUNNING" and not slowed:
            slowed.append(True)
            time.sleep(1.5)  # a long first listing (100 000 jobs)
        answer = list_jobs(body)
        if queue == "legacy-queue" and status == "PENDING" and not made:  # the waiting jobs were just listed
            made.append(
                str(
                    aws.batch.submit_job(
                        {"jobName": "dependent", "jobQueue": "legacy-queue", "jobDefinition": "proc", "dependsOn": [{"jobId": upstream}]}
                    )["jobId"]
                )
            )
        return answer

    monkeypatch.setattr(aws.batch, "list_jobs", listing)
    queues = [arg for q in ("science-queue", "legacy-queue") for arg in ("--queue", q)]
    drained = run("drain", "--plan", str(PLANS / "queue-replace.json"), *queues, "--no-freeze", "--store", store, "--deploy-id", "d1")
    assert drained.code == 0, drained.err
    (dependent,) = made
    stored = records(store, seed, "d1")
    assert dependent in stored, f"dependent ({aws.batch.jobs[dependent].status}): no record\n{drained.out}"
    aws.batch.advance_clock(60)  # the apply
    restored = run("restore", "--store", store, "--deploy-id", "d1")
    assert restored.code == 0, restored.err
    _exactly_once(aws, [upstream, dependent])
