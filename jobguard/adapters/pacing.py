"""Client-side pacing: a thread-safe token bucket per AWS action, so jobguard sits just under
AWS's rate limits instead of leaning on 429s, and a bounded pool to keep enough calls in flight."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


class TokenBucket:
    """`rate` calls a second on average, at most `burst` at once. `take` blocks until allowed."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, max(1.0, burst)
        self._tokens, self._stamp = self.burst, time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> None:
        """Wait for a token. Tokens are reserved under the lock, slept for outside it."""
        if self.rate <= 0:
            return
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= 1
            delay = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if delay > 0:
            time.sleep(delay)


class Pacer:
    """One token bucket per action name, created on first use."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def take(self, action: str) -> None:
        """Wait until `action` may be called again."""
        with self._lock:
            bucket = self._buckets.setdefault(action, TokenBucket(self.rate, self.burst))
        bucket.take()


def in_parallel(function: Callable[[T], R], items: Iterable[T], workers: int) -> list[R]:
    """`function` over `items` on at most `workers` threads; results in the order of `items`."""
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(workers, len(items)), thread_name_prefix="jobguard") as pool:
        return list(pool.map(function, items))
