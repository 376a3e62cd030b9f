"""Deploy leases: which deploy owns a queue, from its drain through its apply to its restore, and
which jobguard process is acting on the queue now. Every lock jobguard takes is one of these.

A lease is a small document `leases/ACCOUNT.REGION.QUEUE` in the store (a queue's name is only
unique within its account and region, and one store may serve several):
- `deploy_id` owns the queue until its restore releases it, or until `lease_ttl` passes with no
  jobguard run of that deploy renewing it (a deploy that died, the longest apply expected);
- `holder_id` is the process acting on the queue now (None between drain and restore); it renews
  the lease every `holder_ttl / 4` and another process may take over `holder_ttl` after it stopped.

Expiry is never judged by comparing two machines' clocks. A lease is stale when the store's own
clock (the Date of its answers) says so, or when its version has not changed for the ttl on the
waiter's monotonic clock, or when its holder is a process on this very machine that is gone.
A process that can no longer show it holds its leases stops before its next write or mutation
(`check`), naming the holder that took over.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from types import TracebackType

from ..errors import ConflictError, JobguardError, LeaseError
from .stores import Store, Versioned

Notice = Callable[[str], None]
_WAIT_STEP = 1.0


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

    def to_bytes(self) -> bytes:
        """The stored form."""
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def parse(cls, body: bytes) -> LeaseRecord | None:
        """A stored lease; None when it is not one (it then counts as expired)."""
        try:
            value = json.loads(body)
            record = cls(**value)
        except (ValueError, TypeError):
            return None
        numbers = (record.renewed_at, record.holder_ttl, record.lease_ttl)
        if not all(isinstance(n, (int, float)) and n == n and abs(n) != float("inf") for n in numbers):
            return None
        return record


@dataclass
class _Held:
    version: str
    record: LeaseRecord
    renewed: float  # this process's monotonic clock at the last successful write


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
    lost: str | None = None
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
                raise LeaseError(_held_message(record, self.store.clock()), hint=_hint(record, self.settings.wait))
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
        deploy_free = record.deploy_id == self.deploy_id or age > record.lease_ttl or unchanged_for > record.lease_ttl
        return holder_gone and deploy_free

    def _write(self, queue: str, current: Versioned | None, previous: LeaseRecord | None) -> bool:
        record = self._record(queue)
        try:
            version = self.store.write(_key(queue, self.scope), record.to_bytes(), current.version if current else None)
        except ConflictError:
            return False
        with self._lock:
            self.held[queue] = _Held(version, record, time.monotonic())
        if previous is not None and previous.deploy_id != self.deploy_id:
            self.adopted[queue] = previous.deploy_id
            self.notice(f"queue {queue}: the lease of deploy {previous.deploy_id} expired; deploy {self.deploy_id} takes it over")
        return True

    def _record(self, queue: str, holding: bool = True) -> LeaseRecord:
        machine, pid, start = _identity()
        return LeaseRecord(
            queue=queue,
            deploy_id=self.deploy_id,
            holder_id=self.me if holding else None,
            holder=describe_holder(),
            machine=machine,
            pid=pid,
            pid_start=start,
            renewed_at=self.store.clock(),
            holder_ttl=self.settings.holder_ttl,
            lease_ttl=self.settings.lease_ttl,
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
            self.held[queue] = _Held(version, record, time.monotonic())

    # -- letting go ------------------------------------------------------------------------
    def release(self, keep_for_deploy: bool) -> None:
        """Stop holding. `keep_for_deploy`: the deploy keeps its queues (drain, before apply); else the leases go (restore)."""
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        with self._lock:
            if self.lost:
                self.held.clear()
                return
            for queue, held in sorted(self.held.items()):
                try:
                    if keep_for_deploy:
                        between = replace(held.record, holder_id=None, renewed_at=self.store.clock())
                        self.store.write(_key(queue, self.scope), between.to_bytes(), held.version)
                    else:
                        self.store.delete(_key(queue, self.scope), held.version)
                except JobguardError as exc:
                    self.notice(f"queue {queue}: could not release the deploy lease ({exc}); it expires by itself")
            self.held.clear()

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
    age = clock - record.renewed_at
    holder_live = record.holder_id is not None and not _process_gone(record) and age <= record.holder_ttl
    return holder_live or age <= record.lease_ttl


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


def _holder_line(record: LeaseRecord) -> str:
    running = f"held by {record.holder}" if record.holder_id else f"between its drain and restore (last run: {record.holder})"
    return f"deploy {record.deploy_id}'s lease, {running}"


def _held_message(record: LeaseRecord, clock: float) -> str:
    left = max(0.0, record.renewed_at + record.lease_ttl - clock)
    return f"queue {record.queue}: {_holder_line(record)}; it expires in {left / 60:.0f} min unless that deploy's restore releases it"


def _hint(record: LeaseRecord, waited: float) -> str:
    return (
        f"waited {waited:g} s. Let deploy {record.deploy_id} finish (or run `jobguard restore --deploy-id {record.deploy_id}` "
        "if it was cancelled); raise lock-timeout to wait longer"
    )


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
    """The process's start time since boot (field 22 of /proc/PID/stat), None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stream:
            text = stream.read()
    except OSError:
        return None
    return text.rsplit(")", 1)[-1].split()[19]


def _process_gone(record: LeaseRecord) -> bool:
    """True only when the holder ran on this machine (same boot and PID namespace) and has exited."""
    if not record.machine or record.machine != _machine() or record.holder_id is None:
        return False
    return _start_time(record.pid) != record.pid_start
