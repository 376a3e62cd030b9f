"""`file://PATH`: manifests and documents as files in a local folder.

Writes are conditional like S3's and DynamoDB's: under an exclusive lock on the folder's
`.lock` file, the current content's hash must still be the version the writer read; the new
content goes to a temporary file that is fsynced and renamed into place (removed on any failure).
The lock is held for one write (milliseconds), but a holder paused mid-write (SIGSTOP, a frozen VM)
holds it until it resumes, and `flock` never expires: a writer waits at most `lock-timeout`, then
stops naming the holder, whose description the lock file carries.
A manifest is a head and pages of records (paged.py): a save writes the changed pages, then the head.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import socket
import stat
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from ...domain.documents import parse_json
from ...errors import ConflictError, LeaseError, ManifestError, StoreError, UsageError
from . import paged
from .base import MAX_DOCUMENT_BYTES, MAX_MANIFEST_BYTES, SUFFIX, Page, Versioned, split_key

LOCK_POLL = 0.05
MIN_LOCK_WAIT = 10.0  # even with lock-timeout 0: another writer's turn takes milliseconds


class FileStore:
    """Manifests as `FOLDER/DEPLOY_ID.json` and `FOLDER/pages/DEPLOY_ID/`, documents as `FOLDER/KIND/NAME.json`."""

    def __init__(self, folder: Path, lock_timeout: float = 300.0) -> None:
        self.folder = folder
        self.lock_wait = max(lock_timeout, MIN_LOCK_WAIT)

    def location(self) -> str:
        return self.folder.absolute().as_uri()

    def uri(self, deploy_id: str) -> str:
        return (self.folder / f"{deploy_id}{SUFFIX}").absolute().as_uri()

    def load(self, deploy_id: str) -> Versioned | None:
        path = self.folder / f"{deploy_id}{SUFFIX}"

        def head() -> Versioned | None:
            body = self._read(path, MAX_MANIFEST_BYTES)
            return None if body is None else Versioned(body, _version(body))

        return paged.load(deploy_id, str(path), head, self._pages_of)

    def page(self, deploy_id: str, index: int, digest: str, ids: Sequence[str]) -> list[Any] | None:
        return paged.page(deploy_id, index, digest, str(self.folder / f"{deploy_id}{SUFFIX}"), self._pages_of)

    def _pages_of(self, keys: list[str]) -> list[bytes | None]:
        return [self._read(self._path(k), MAX_MANIFEST_BYTES) for k in keys]

    def version(self, deploy_id: str) -> str | None:
        body = self._read(self.folder / f"{deploy_id}{SUFFIX}", MAX_MANIFEST_BYTES)
        return None if body is None else _version(body)

    def save(self, deploy_id: str, head: dict[str, Any], pages: Sequence[Page], version: str | None) -> str:
        path = self.folder / f"{deploy_id}{SUFFIX}"
        body = paged.head_body(head, pages)
        with self._locked(path):
            current = self._check_version(path, version)
            for page in pages:
                target = self._path(paged.page_key(deploy_id, page.index, page.digest))
                if page.records is not None and not target.exists():  # a page's name is its content: one there is this one
                    target.parent.mkdir(parents=True, exist_ok=True)
                    self._write_atomically(target, paged.page_body(deploy_id, page))
            self._write_atomically(path, body)
            previous = paged.named(deploy_id, _parsed(current, str(path)))
            for key in set(previous) - {paged.page_key(deploy_id, p.index, p.digest) for p in pages}:
                with suppress(OSError):  # only the previous head named it: a page left behind costs space, nothing else
                    self._path(key).unlink()
        return _version(body)

    def deploy_ids(self) -> list[str]:
        return sorted(p.name[: -len(SUFFIX)] for p in self._listing(self.folder) if p.name.endswith(SUFFIX) and p.is_file())

    def read(self, key: str) -> Versioned | None:
        body = self._read(self._path(key), MAX_DOCUMENT_BYTES)
        return None if body is None else Versioned(body, _version(body))

    def write(self, key: str, body: bytes, version: str | None) -> str:
        return self._replace(self._path(key), body, version)

    def delete(self, key: str, version: str) -> None:
        path = self._path(key)
        with self._locked(path):
            current = self._read(path, MAX_DOCUMENT_BYTES)
            if current is None:
                return
            if _version(current) != version:
                raise ConflictError(f"{path}: changed by another process")
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise StoreError(f"{path}: cannot delete ({exc.strerror})") from None

    def keys(self, kind: str) -> list[str]:
        return sorted(p.name[: -len(SUFFIX)] for p in self._listing(self.folder / kind) if p.name.endswith(SUFFIX))

    def clock(self) -> float:
        """The file system's time: the modification time it gives a file touched now (set by the kernel,
        or by the file server of a shared folder), not this process's clock, which may be minutes off."""
        path = self.folder / ".clock"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
            os.utime(path)
            return os.stat(path).st_mtime
        except OSError:  # a folder this process cannot write (status on a read-only copy): nothing is leased from here
            return time.time()

    # -- files -----------------------------------------------------------------------------
    def _path(self, key: str) -> Path:
        kind, name = split_key(key)
        return self.folder / kind / f"{name}{SUFFIX}"

    def _listing(self, folder: Path) -> list[Path]:
        try:
            return [p for p in folder.iterdir() if not p.name.startswith(".")]
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StoreError(f"{folder}: cannot list the store ({exc.strerror})") from None

    def _read(self, path: Path, limit: int) -> bytes | None:
        """The file's bytes; None when absent. Only regular files are read (a FIFO would block)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"{path}: cannot read ({_reason(exc)})") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise UsageError(f"{path}: not a regular file")
            if info.st_size > limit:
                raise UsageError(f"{path}: {info.st_size} bytes, more than the {limit} a jobguard document can have")
            chunks = []
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
            return b"".join(chunks)
        except OSError as exc:
            raise StoreError(f"{path}: cannot read ({_reason(exc)})") from None
        finally:
            os.close(fd)

    def _replace(self, path: Path, body: bytes, version: str | None) -> str:
        with self._locked(path):
            self._check_version(path, version)
            self._write_atomically(path, body)
        return _version(body)

    def _check_version(self, path: Path, version: str | None) -> bytes | None:
        """The file's current content, if it is still at `version` (None: absent); ConflictError if not. Under the lock."""
        current = self._read(path, MAX_MANIFEST_BYTES)
        if (current is None) != (version is None) or (current is not None and _version(current) != version):
            raise ConflictError(f"{path}: changed by another process since it was read")
        return current

    def _write_atomically(self, path: Path, body: bytes) -> None:
        temp = ""
        try:
            fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as stream:
                stream.write(body)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temp, path)
            temp = ""
        except OSError as exc:
            raise StoreError(f"{path}: cannot write ({_reason(exc)})") from None
        finally:
            if temp:
                with suppress(OSError):
                    os.unlink(temp)

    @contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        """One writer at a time in this folder, across processes."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreError(f"{self.folder}: cannot use the store folder ({_reason(exc)})") from None
        try:
            self._lock(fd)
            try:
                yield
            finally:
                # The name is there only while its process holds the lock: left behind, it would name a
                # finished process (perhaps its pid reused) to the waiter of a holder that wrote no name
                # (an older jobguard, or one paused between taking the lock and naming itself).
                with suppress(OSError):
                    os.ftruncate(fd, 0)
        finally:
            os.close(fd)

    def _lock(self, fd: int) -> None:
        """Take the folder lock within `lock_wait`, then say who holds it (for the next waiter's message)."""
        deadline = time.monotonic() + self.lock_wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LeaseError(
                        f"{self.folder}: the store folder's lock has been held for over {self.lock_wait:g} s by {_holder(fd)}; "
                        "nothing was written",
                        hint="a paused (SIGSTOP) or hung jobguard holds it: resume or end that process, then run this again",
                    ) from None
                time.sleep(LOCK_POLL)
            except OSError as exc:
                raise StoreError(f"{self.folder}: cannot lock the store folder ({_reason(exc)})") from None
        me = f"jobguard pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}"
        with suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, me.encode(), 0)


def _holder(fd: int) -> str:
    try:
        said = os.pread(fd, 512, 0).decode(errors="replace").strip()
    except OSError:
        said = ""
    return said or "another process"


def _parsed(body: bytes | None, where: str) -> Any:
    """A stored head, parsed; None for none (or one that does not parse: it names no pages to clean up)."""
    if body is None:
        return None
    try:
        return parse_json(body, where)
    except ManifestError:
        return None


def _version(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on the device"
    return exc.strerror or type(exc).__name__
