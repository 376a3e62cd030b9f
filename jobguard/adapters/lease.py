"""Deploy leases: which deploy owns a queue, from its drain through its apply to its restore, and
which jobguard process is acting on the queue now. Every lock jobguard takes is one of these.

A lease is a small document `leases/ACCOUNT.REGION.QUEUE` in the store (a queue's name is only
unique within its account and region, and one store may serve several):
- `deploy_id` owns the queue until its restore releases it;
- `holder_id` is the process acting on the queue now; it renews the lease every `holder_ttl / 4`.
  A holder that stopped renewing (killed, its runner gone) is gone `holder_ttl` after its last
  renewal, or at once when it ran on this machine and has exited. Its deploy died mid-run (a
  drain or restore never handed the lease on): the queue is free for any deploy, whose drain
  adopts the dead deploy's unfinished work.
- Between drain and restore (`holder_id` None: the apply runs, and no jobguard process of the
  deploy may be alive) the deploy keeps the queue until `lease_ttl` (the longest apply expected)
  has passed since the drain handed it on.

Expiry is never judged by comparing two machines' clocks. A lease is stale when the store's own
clock (the Date of its answers) says so, or when its version has not changed for the ttl on the
waiter's monotonic clock, or when its holder is a process on this very machine that is gone.
A process that can no longer show it holds its leases stops before its next write or mutation
(`check`), naming the holder that took over.

A run that submitted jobs to a queue (a restore) leaves, as it lets the queue go, a small document
`submitted/ACCOUNT.REGION.QUEUE` with the store's time: ListJobs may show those jobs only seconds
later, and the next holder (another deploy's drain, perhaps waiting for this very lease) must look
again once they can be listed (`last_submitted`).
"""

from __future__ import annotations

import getpass
import json
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields, replace
from types import TracebackType

from ..errors import ConflictError, JobguardError, LeaseError, StoreError
from .pacing import in_parallel
from .stores import Store, Versioned

Notice = Callable[[str], None]
_WAIT_STEP = 1.0
_RELEASE_WAITS = (0.5, 2.0)  # between attempts to release a lease, on top of each store call's own retries
# The words of a drain's queues read at once (S3, DynamoDB: one round trip each, in parallel). Fewer than the smallest
# connection pool of an AWS client (10), which the drain's other reads share meanwhile.
_WORD_READS_AT_ONCE = 8


@dataclass(frozen=True)
class LeaseSettings:
    """How long to wait for another run's lease, and how long leases outlive their holders."""

    wait: float = 300.0  # lock-timeout
    holder_ttl: float = 120.0  # lock-ttl: a killed process's hold expires this long after it stopped renewing
    lease_ttl: float = 7200.0  # lease-ttl: a deploy that died releases its queues this long after its last run


@dataclass(frozen=True)
class LeaseRecord:
    """The stored lease of one queue."""

    queue: str
    deploy_id: str
    holder_id: str | None
    holder: str
    machine: str
    pid: int
    pid_start: str
    renewed_at: float  # the store's clock
    holder_ttl: float
    lease_ttl: float
    taken_at: float = 0.0  # the store's clock when this deploy took the queue (older leases: their last renewal)

    def to_bytes(self) -> bytes:
        """The stored form."""
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def parse(cls, body: bytes) -> LeaseRecord | None:
        """A stored lease; None when it is not one (it then counts as expired)."""
        try:
            value = json.loads(body)
            known = {f.name for f in fields(cls)}
            # A newer jobguard's extra fields are ignored, an older one's missing `taken_at` is its last renewal.
            record = cls(**{"taken_at": value.get("renewed_at"), **{k: v for k, v in value.items() if k in known}})
        except (ValueError, TypeError, AttributeError):
            return None
        numbers = (record.renewed_at, record.holder_ttl, record.lease_ttl, record.taken_at)
        if not all(isinstance(n, (int, float)) and n == n and abs(n) != float("inf") for n in numbers):
            return None
        return record


@dataclass
class _Held:
    version: str
    record: LeaseRecord
    renewed: float  # this process's monotonic clock at the last successful write
    sent: float = 0.0  # ... and when that write was sent: no other run took the lease over before then


@dataclass
class Leases:
    """The leases one jobguard run holds, with their heartbeat. Use as a context manager."""

    store: Store
    deploy_id: str
    settings: LeaseSettings
    notice: Notice
    scope: str = ""  # lease_scope(account, region): leases of same-named queues elsewhere are others'
    me: str = field(default_factory=lambda: uuid.uuid4().hex)
    held: dict[str, _Held] = field(default_factory=dict)
    adopted: dict[str, str] = field(default_factory=dict)  # queue -> deploy whose expired lease this run took over
    before: dict[str, LeaseRecord | None] = field(default_factory=dict)  # queue -> the lease this run found when it took it
    lost: str | None = None
    submitted_to: set[str] = field(default_factory=set)  # queues this run submitted jobs to: noted as it lets them go
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _heartbeat: threading.Thread | None = None

    # -- taking ----------------------------------------------------------------------------
    def acquire(self, queues: Iterable[str]) -> None:
        """Take the lease of every queue (sorted, so two runs cannot deadlock), waiting up to `wait`."""
        deadline = time.monotonic() + self.settings.wait
        for queue in sorted(set(queues) - set(self.held)):
            self._take(queue, deadline)
        if self.held and self._heartbeat is None:
            self._heartbeat = threading.Thread(target=self._beat, name="jobguard-lease-heartbeat", daemon=True)
            self._heartbeat.start()

    def try_acquire(self, queue: str) -> bool:
        """Take one queue's lease if that needs no waiting; False when another live deploy holds it."""
        try:
            self._take(queue, time.monotonic())
        except LeaseError:
            return False
        return True

    def _take(self, queue: str, deadline: float) -> None:
        seen: tuple[str, float] | None = None  # (version, when this process first saw it)
        said = -1e9
        while True:
            current = self.store.read(_key(queue, self.scope))
            record = LeaseRecord.parse(current.value) if current else None
            if current is not None:
                seen = seen if seen and seen[0] == current.version else (current.version, time.monotonic())
            unchanged_for = time.monotonic() - seen[1] if seen else 0.0
            if current is None or record is None or self._may_take(record, unchanged_for):
                if self._write(queue, current, record):
                    return
                continue
            if time.monotonic() >= deadline:
                raise LeaseError(_held_message(record, self.store.clock()), hint=_hint(record, self.settings.wait, self.store.location()))
            if time.monotonic() - said >= 30:
                left = deadline - time.monotonic()
                self.notice(f"queue {queue}: waiting up to {left:.0f} s more for {_holder_line(record)}")
                said = time.monotonic()
            time.sleep(max(0.05, min(_WAIT_STEP, deadline - time.monotonic())))

    def _may_take(self, record: LeaseRecord, unchanged_for: float) -> bool:
        age = self.store.clock() - record.renewed_at
        holder_gone = (
            record.holder_id is None
            or record.holder_id == self.me
            or _process_gone(record)
            or age > record.holder_ttl
            or unchanged_for > record.holder_ttl
        )
        # A holder that died without handing the lease on (killed mid-drain or mid-restore) leaves its
        # deploy's work to whoever comes next: a drain adopts it, a restore restores it. Only a lease
        # handed on between drain and restore (holder None: the apply may be running) keeps lease_ttl.
        died_mid_run = record.holder_id is not None and holder_gone
        deploy_free = record.deploy_id == self.deploy_id or died_mid_run or age > record.lease_ttl or unchanged_for > record.lease_ttl
        return holder_gone and deploy_free

    def _write(self, queue: str, current: Versioned | None, previous: LeaseRecord | None) -> bool:
        sent = time.monotonic()
        record = self._record(queue)
        if previous is not None and previous.deploy_id == self.deploy_id:
            record = replace(record, taken_at=previous.taken_at)  # the deploy holds it since its drain took it
        try:
            version = self.store.write(_key(queue, self.scope), record.to_bytes(), current.version if current else None)
        except ConflictError:
            return False
        with self._lock:
            self.held[queue] = _Held(version, record, time.monotonic(), sent)
            self.before[queue] = previous
            if self._taken_from_a_dead_run(queue):
                self.submitted_to.add(queue)  # perhaps right after a SubmitJob: the word passes on
        if previous is not None and previous.deploy_id != self.deploy_id:
            self.adopted[queue] = previous.deploy_id
            what = "was left by a run that died before handing it on" if previous.holder_id else "expired"
            self.notice(f"queue {queue}: the lease of deploy {previous.deploy_id} {what}; deploy {self.deploy_id} takes it over")
        return True

    def _taken_from_a_dead_run(self, queue: str) -> bool:
        """True while this run holds `queue` and took it from a run that died holding it (neither handed on
        between drain and restore nor this run's own)."""
        with self._lock:
            before = self.before.get(queue)
            return queue in self.held and before is not None and before.holder_id not in (None, self.me)

    def _record(self, queue: str, holding: bool = True) -> LeaseRecord:
        machine, pid, start = _identity()
        now = self.store.clock()
        return LeaseRecord(
            queue=queue,
            deploy_id=self.deploy_id,
            holder_id=self.me if holding else None,
            holder=describe_holder(),
            machine=machine,
            pid=pid,
            pid_start=start,
            renewed_at=now,
            holder_ttl=self.settings.holder_ttl,
            lease_ttl=self.settings.lease_ttl,
            taken_at=now,
        )

    # -- holding ---------------------------------------------------------------------------
    def check(self) -> None:
        """Raise LeaseError unless this run can still show it holds its leases: call before every write or mutation."""
        with self._lock:
            if self.lost:
                raise LeaseError(self.lost, hint="another run took over this deploy's queues; nothing more was changed")
            stale = [q for q, h in self.held.items() if time.monotonic() - h.renewed > self.settings.holder_ttl / 2]
        for queue in stale:  # the heartbeat fell behind (a paused process, a slow store): renew now or stop
            self._renew(queue)
        with self._lock:
            if self.lost:
                raise LeaseError(self.lost, hint="another run took over this deploy's queues; nothing more was changed")

    def _beat(self) -> None:
        while not self._stop.wait(self.settings.holder_ttl / 4):
            for queue in list(self.held):
                self._renew(queue)

    def _renew(self, queue: str) -> None:
        with self._lock:
            held = self.held.get(queue)
            if held is None or self.lost:
                return
            record = replace(held.record, renewed_at=self.store.clock())
            sent = time.monotonic()
            try:
                version = self.store.write(_key(queue, self.scope), record.to_bytes(), held.version)
            except ConflictError:
                current = self.store.read(_key(queue, self.scope))
                other = LeaseRecord.parse(current.value) if current else None
                who = _holder_line(other) if other else "nobody (it was deleted)"
                self.lost = f"queue {queue}: lost the deploy lease; it is now held by {who}"
                return
            except JobguardError as exc:
                self.notice(f"queue {queue}: could not renew the deploy lease ({exc}); retrying")
                return
            self.held[queue] = _Held(version, record, time.monotonic(), sent)

    # -- what this run submitted ----------------------------------------------------------
    def note_submitted(self, queues: Iterable[str]) -> None:
        """Queues (names or ARNs) this run sent SubmitJob to; when it lets its leases go, the store says when."""
        with self._lock:
            self.submitted_to.update(q.rsplit("/", 1)[-1] for q in queues)

    def last_submitted(self, queues: Iterable[str]) -> float | None:
        """When (this process's monotonic clock) a run last submitted jobs to any of `queues` and then let it go,
        judged on the store's clock; None when no run left word. A queue this run took from a run that died counts
        as submitted to when it was taken. Read once this run holds the queues: the word is written before the
        lease it follows is let go."""
        names = sorted(set(queues))
        words = in_parallel(lambda queue: self.store.read(_submitted_key(queue, self.scope)), names, _WORD_READS_AT_ONCE)
        times = [mark for mark in (_parse_submitted(word.value) for word in words if word) if mark is not None]
        with self._lock:  # a queue taken from a run that died: it may have submitted up to then
            times += [self.held[queue].record.renewed_at for queue in names if self._taken_from_a_dead_run(queue)]
        if not times:
            return None
        return time.monotonic() - (self.store.clock() - max(times))

    def _note_submissions(self) -> None:
        """Word of this run's submissions, queue by queue, before its leases go; a failure is only told: the next
        drain then relies on its own looks."""
        for queue in sorted(self.submitted_to):
            key = _submitted_key(queue, self.scope)
            body = json.dumps({"queue": queue, "deploy_id": self.deploy_id, "at": self.store.clock()})
            for _ in range(3):  # a conflict is another run's word written meanwhile: read it again and replace it
                try:
                    current = self.store.read(key)
                    self.store.write(key, body.encode(), current.version if current else None)
                    break
                except ConflictError:
                    continue
                except JobguardError as exc:
                    self.notice(f"queue {queue}: could not note this run's submissions ({exc}); a drain at once may list them late")
                    break
        self.submitted_to.clear()

    # -- letting go ------------------------------------------------------------------------
    def release(self, keep_for_deploy: bool, raise_errors: bool = True) -> None:
        """Stop holding. `keep_for_deploy`: the deploy keeps its queues (drain, before apply); else the leases go (restore).

        Each hand-over or release is retried; one that still fails raises StoreError naming the queue
        and the command that releases it (a lease left held would block the next deploy). With
        `raise_errors` False (the run is already failing for another reason) it is only reported.
        """

        def handed_on(queue: str, held: _Held) -> LeaseRecord | None:
            return replace(held.record, holder_id=None, renewed_at=self.store.clock()) if keep_for_deploy else None

        self._note_submissions()
        self._let_go_all(handed_on, keep_for_deploy, raise_errors)

    def hand_back(self, raise_errors: bool = True) -> None:
        """Stop holding, leaving each lease as this run found it: a queue this deploy had handed on for its
        apply is handed on again with its own times (not a fresh lease-ttl); any other is released.

        For a run that only looks after a deploy (`status --check`): it must neither lock a queue the
        deploy had already released nor extend the deploy's hold on one still in its apply.
        """

        def found(queue: str, held: _Held) -> LeaseRecord | None:
            before = self.before.get(queue)
            return before if before is not None and before.deploy_id == self.deploy_id and before.holder_id is None else None

        self._note_submissions()  # a queue taken from a run that died: its word passes on
        self._let_go_all(found, any(found(q, h) for q, h in self.held.items()), raise_errors)

    def _let_go_all(self, keep: Callable[[str, _Held], LeaseRecord | None], keep_for_deploy: bool, raise_errors: bool) -> None:
        """Stop the heartbeat; write `keep(queue)` as each queue's lease (handed on), or delete it when None."""
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        failed: list[str] = []
        with self._lock:
            if self.lost:
                self.held.clear()
                return
            for queue, held in sorted(self.held.items()):
                problem = self._let_go(queue, held, keep(queue, held))
                if problem:
                    failed.append(queue)
                    self.notice(f"queue {queue}: {problem}")
            self.held.clear()
        if failed and raise_errors:
            raise StoreError(_release_message(failed, self.deploy_id, keep_for_deploy), hint=self._release_hint())

    def _let_go(self, queue: str, held: _Held, keep: LeaseRecord | None) -> str | None:
        """Hand the lease on to the deploy (write `keep`) or delete it (None), with retries; what went wrong, if it did."""
        key = _key(queue, self.scope)
        version, problem = held.version, ""
        for wait in (*_RELEASE_WAITS, None):
            try:
                if keep is not None:
                    self.store.write(key, keep.to_bytes(), version)
                else:
                    self.store.delete(key, version)
                return None
            except ConflictError:
                # An earlier attempt may have landed with its answer lost: look at what is there now.
                current = self.store.read(key)
                record = LeaseRecord.parse(current.value) if current else None
                if current is None or record is None or record.holder_id != self.me:
                    return None  # gone, handed on by our lost attempt, or another run's now: nothing of ours to let go
                version = current.version
            except JobguardError as exc:
                problem = str(exc)
            if wait is not None:
                time.sleep(wait)
        return f"could not {'hand on' if keep is not None else 'release'} deploy {self.deploy_id}'s lease ({problem})"

    def _release_hint(self) -> str:
        return (
            f"run `jobguard restore --store {self.store.location()} --deploy-id {self.deploy_id}`: it resubmits what deploy "
            f"{self.deploy_id} still owes and releases its queues"
        )

    # -- proving the hold ------------------------------------------------------------------
    def proven(self, queue: str) -> float:
        """The monotonic time up to which this run is shown to have held `queue`: when its last successful write was sent."""
        with self._lock:
            held = self.held.get(queue)
            return held.sent if held is not None else 0.0

    def confirm(self) -> float:
        """Renew every lease now: once this returns, no other run took a queue over since the previous renewal.

        Returns the monotonic time the renewals were sent: a SubmitJob answered before it is proven
        to have been made while this run held its queues. Raises LeaseError when a lease was lost,
        or could not be renewed (this run can no longer show it holds it).
        """
        sent = time.monotonic()
        for queue in list(self.held):
            self._renew(queue)
            with self._lock:
                held = self.held.get(queue)
                if not self.lost and held is not None and held.sent < sent:
                    self.lost = f"queue {queue}: cannot show this run still holds the deploy lease (the store did not answer)"
        self.check()
        return sent

    def __enter__(self) -> Leases:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self._stop.set()


def lease_scope(account: str, region: str) -> str:
    """The part of a lease's key that tells this account's and region's queues from same-named ones elsewhere."""
    return f"{account}.{region}." if account and region else ""


def read_lease(store: Store, queue: str, scope: str = "") -> LeaseRecord | None:
    """The current lease of a queue, if any (for status and for choosing what a restore may take)."""
    current = store.read(_key(queue, scope))
    return LeaseRecord.parse(current.value) if current else None


def lease_is_live(record: LeaseRecord, clock: float) -> bool:
    """True while the lease's deploy still owns its queue by the store's clock (one look, no waiting)."""
    return lease_state(record, clock)[0] in (RUNNING, BETWEEN)


RUNNING = "running"  # a jobguard process of the deploy holds it and renews it
BETWEEN = "between drain and restore"  # handed on to the deploy for its apply: kept until lease_ttl
DIED = "free: its run died mid-way"  # the holder stopped renewing without handing it on: the next deploy adopts
EXPIRED = "free: expired"  # handed on, but lease_ttl passed with no run of the deploy


def lease_state(record: LeaseRecord, clock: float) -> tuple[str, float]:
    """(state, seconds until it is free) of a lease, by the store's clock; 0 once it is free."""
    age = clock - record.renewed_at
    if record.holder_id is not None:
        if _process_gone(record) or age > record.holder_ttl:
            return DIED, 0.0
        return RUNNING, record.holder_ttl - age
    if age > record.lease_ttl:
        return EXPIRED, 0.0
    return BETWEEN, record.lease_ttl - age


def list_leases(store: Store, scope: str = "") -> list[LeaseRecord]:
    """Every lease of this account and region in the store (for status)."""
    found = []
    for name in store.keys("leases"):
        if name.startswith(scope):
            record = read_lease(store, name[len(scope) :], scope)
            if record is not None:
                found.append(record)
    return found


def describe_holder() -> str:
    """Who holds a lease, as a person can follow it up: the run URL in Actions."""
    env = os.environ
    if env.get("GITHUB_ACTIONS") == "true" and env.get("GITHUB_RUN_ID"):
        server = env.get("GITHUB_SERVER_URL", "https://github.com")
        return f"{server}/{env.get('GITHUB_REPOSITORY', '')}/actions/runs/{env['GITHUB_RUN_ID']}"
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()} (pid {os.getpid()})"


def _key(queue: str, scope: str = "") -> str:
    return f"leases/{scope}{queue}"


def _submitted_key(queue: str, scope: str) -> str:
    return f"submitted/{scope}{queue}"


def _parse_submitted(body: bytes) -> float | None:
    """The store's time in a `submitted/` document; None when it is not one."""
    try:
        at = json.loads(body).get("at")
    except (ValueError, AttributeError, RecursionError):  # RecursionError: a document nested past the parser's depth
        return None
    if not isinstance(at, (int, float)) or isinstance(at, bool):
        return None
    try:
        value = float(at)
    except OverflowError:  # an integer past any float
        return None
    return value if math.isfinite(value) else None


def _holder_line(record: LeaseRecord) -> str:
    running = f"held by {record.holder}" if record.holder_id else f"between its drain and restore (last run: {record.holder})"
    return f"deploy {record.deploy_id}'s lease, {running}"


def _held_message(record: LeaseRecord, clock: float) -> str:
    state, left = lease_state(record, clock)
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(record.taken_at))
    if state == RUNNING:
        end = f"a run of it is working on the queue; if that run is gone, the queue is free in {left:.0f} s (lock-ttl)"
    else:
        end = f"it is free in {left / 60:.0f} min (lease-ttl) unless that deploy's restore releases it sooner"
    return f"queue {record.queue}: {_holder_line(record)}, since {since}; {end}"


def _hint(record: LeaseRecord, waited: float, location: str) -> str:
    return (
        f"waited {waited:g} s. Let deploy {record.deploy_id} finish; if it was cancelled or its runner is gone, run "
        f"`jobguard restore --store {location} --deploy-id {record.deploy_id}`: it resubmits the jobs deploy "
        f"{record.deploy_id} drained and releases its queues. Raise lock-timeout to wait longer"
    )


def _release_message(queues: list[str], deploy_id: str, keep_for_deploy: bool) -> str:
    names = ", ".join(queues)
    if keep_for_deploy:
        return f"queue {names}: could not hand deploy {deploy_id}'s lease on to its apply; do not apply"
    return f"queue {names}: could not release deploy {deploy_id}'s lease; it blocks the next deploy's drain until released"


def _identity() -> tuple[str, int, str]:
    """(machine, pid, process start) of this process: what tells a gone holder on this machine."""
    return _machine(), os.getpid(), _start_time(os.getpid()) or ""


def _machine() -> str:
    """This machine and PID namespace, as far as one process can tell."""
    parts = [socket.gethostname()]
    for path in ("/proc/sys/kernel/random/boot_id",):
        try:
            with open(path, encoding="ascii") as stream:
                parts.append(stream.read().strip())
        except OSError:
            return ""  # cannot tell this machine from another: never judge a holder gone this way
    try:
        parts.append(os.readlink("/proc/self/ns/pid"))
    except OSError:
        return ""
    return " ".join(parts)


def _start_time(pid: int) -> str | None:
    """The process's start time since boot (field 22 of /proc/PID/stat); None when there is no such
    process, or it has exited and waits to be reaped (a zombie: state Z or X)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stream:
            text = stream.read()
    except OSError:
        return None
    fields_after_name = text.rsplit(")", 1)[-1].split()
    if not fields_after_name or fields_after_name[0] in ("Z", "X"):
        return None
    return fields_after_name[19]


def _process_gone(record: LeaseRecord) -> bool:
    """True only when the holder ran on this machine (same boot and PID namespace) and has exited."""
    if not record.machine or record.machine != _machine() or record.holder_id is None:
        return False
    return _start_time(record.pid) != record.pid_start
