"""One bounded retry policy for every AWS call, on tenacity.

Retries are bounded in attempts *and* in time, with exponential backoff and full jitter.
The caller says what is retryable: most calls retry throttling, 5xx and connection errors;
SubmitJob retries only errors that prove the request was rejected (it has no idempotency token).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectionError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

T = TypeVar("T")

THROTTLING_CODES = frozenset(
    {
        "TooManyRequestsException",
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "ProvisionedThroughputExceededException",
        "SlowDown",
        "TransactionInProgressException",
        "LimitExceededException",
    }
)


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ClientError, else the exception's class name."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "ClientError"))
    return type(exc).__name__


def _http_status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def is_throttling(exc: BaseException) -> bool:
    """True when AWS refused the request for rate: it was not carried out."""
    if not isinstance(exc, ClientError):
        return False
    return error_code(exc) in THROTTLING_CODES or _http_status(exc) == 429


def is_transient(exc: BaseException) -> bool:
    """True for throttling, server errors and broken connections: worth another try."""
    if is_throttling(exc):
        return True
    if isinstance(exc, ClientError):
        return _http_status(exc) >= 500
    return isinstance(exc, (ConnectionError, EndpointConnectionError, ConnectionClosedError, ReadTimeoutError))


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds of the retry loop; `initial_wait=0` makes tests fast."""

    attempts: int = 8
    max_seconds: float = 120.0
    initial_wait: float = 0.5
    max_wait: float = 20.0

    def call(
        self,
        fn: Callable[[], T],
        retryable: Callable[[BaseException], bool] = is_transient,
    ) -> T:
        """Run `fn`, retrying the errors `retryable` accepts; re-raise the last error."""
        retrying = Retrying(
            stop=stop_after_attempt(self.attempts) | stop_after_delay(self.max_seconds),
            wait=wait_random_exponential(multiplier=self.initial_wait, max=self.max_wait),
            retry=retry_if_exception(retryable),
            reraise=True,
        )
        return retrying(fn)
