"""One bounded retry policy for every AWS call, on tenacity, and what counts as worth retrying.

Retries are bounded in attempts *and* in time, with exponential backoff and full jitter. The
caller says what is retryable: most calls retry throttling, 5xx and connection errors; SubmitJob
retries blindly only errors that prove the request was refused (it has no idempotency token).
"""

from __future__ import annotations

import threading
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
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    stop_when_event_set,
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
    code = getattr(exc, "code", None)  # jobguard's own errors about AWS answers carry the code they are about
    return code if isinstance(code, str) and code else type(exc).__name__


def error_message(exc: BaseException) -> str:
    """The AWS error message of a ClientError, else the exception's text."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Message", ""))
    return str(exc)


def http_status(exc: BaseException) -> int:
    """The HTTP status of a ClientError's answer, 0 for anything else."""
    if not isinstance(exc, ClientError):
        return 0
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def is_throttling(exc: BaseException) -> bool:
    """True when AWS refused the request for rate: it was not carried out."""
    return isinstance(exc, ClientError) and (error_code(exc) in THROTTLING_CODES or http_status(exc) == 429)


def is_transient(exc: BaseException) -> bool:
    """True for throttling, server errors and broken connections: worth another try."""
    if is_throttling(exc):
        return True
    if isinstance(exc, ClientError):
        return http_status(exc) >= 500
    return isinstance(exc, (ConnectionError, EndpointConnectionError, ConnectionClosedError, ReadTimeoutError))


# What an endpoint answers to an operation it does not know: AWS's own codes for it, and the plain
# HTTP statuses of a server that routes no such path (moto answers HTTP 500 with an HTML page).
UNKNOWN_OPERATION_CODES = frozenset(
    {"UnknownOperationException", "UnknownOperation", "InvalidAction", "NotImplemented", "NotImplementedException"}
)


def is_unknown_operation(exc: BaseException) -> bool:
    """True when the endpoint does not know the operation at all (an older API version, moto): a
    ClientError with an unknown-operation code, HTTP 404/405/501, or an HTTP 500 that is no AWS error
    document (botocore then names the error by its status alone, "500"; Batch's own is ServerException)."""
    if not isinstance(exc, ClientError):
        return False
    code, status = error_code(exc), http_status(exc)
    return code in UNKNOWN_OPERATION_CODES or status in (404, 405, 501) or (status == 500 and code.isdigit())


def is_unreachable(exc: BaseException) -> bool:
    """True when no answer came at all (connection refused, dropped, timed out)."""
    return isinstance(exc, (ConnectionError, EndpointConnectionError, ConnectionClosedError, ReadTimeoutError))


@dataclass(frozen=True)
class RetrySettings:
    """Bounds of the retry loop; `initial_wait=0` makes tests fast."""

    attempts: int = 8
    max_seconds: float = 120.0
    initial_wait: float = 0.5
    max_wait: float = 20.0


BackoffNotice = Callable[[BaseException, float, int], None]  # (error, seconds to wait, attempt number)


def call_with_retries(
    settings: RetrySettings,
    fn: Callable[[], T],
    retryable: Callable[[BaseException], bool] = is_transient,
    on_backoff: BackoffNotice | None = None,
    abort: threading.Event | None = None,
) -> T:
    """Run `fn`, retrying the errors `retryable` accepts within the bounds; re-raise the last error.

    `abort`: once set (the run is ending), no further attempt is made and a back-off in progress ends."""

    ending = abort or threading.Event()

    def sleep(seconds: float) -> None:  # a back-off that ends when `abort` is set
        ending.wait(seconds)

    def before_sleep(state: RetryCallState) -> None:
        if on_backoff and state.outcome is not None and state.next_action is not None:
            error = state.outcome.exception()
            if error is not None:
                on_backoff(error, state.next_action.sleep, state.attempt_number)

    retrying = Retrying(
        stop=stop_after_attempt(settings.attempts) | stop_after_delay(settings.max_seconds) | stop_when_event_set(ending),
        sleep=sleep,
        wait=wait_random_exponential(multiplier=settings.initial_wait, max=settings.max_wait),
        retry=retry_if_exception(retryable),
        before_sleep=before_sleep,
        reraise=True,
    )
    return retrying(fn)
