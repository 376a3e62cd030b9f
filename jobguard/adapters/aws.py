"""The one way jobguard calls AWS: clients configured alike, pacing, bounded retries, chunking,
and the error boundary. Whatever a call raises leaves this module as a jobguard error; callers
never see botocore's exceptions.
"""

from __future__ import annotations

import functools
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import boto3
import botocore.loaders
import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError, ProfileNotFound

from .. import __version__
from ..errors import AwsError, CredentialsError, JobguardError, UnreachableError, one_line
from .pacing import Pacer, in_parallel
from .retry import RetrySettings, call_with_retries, error_code, error_message, is_transient, is_unreachable

T = TypeVar("T")
R = TypeVar("R")
Json = dict[str, Any]
Notice = Callable[[str], None]

# jobguard's retry policy is the only one: botocore's own retries would resend SubmitJob blindly.
_BOTO_CONFIG = Config(
    retries={"total_max_attempts": 1, "mode": "standard"}, connect_timeout=5, read_timeout=30, user_agent_extra=f"jobguard/{__version__}"
)
REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]{1,2}")  # as the manifest schema has it
# Lines about backing off are at most one per action this often: a throttled run is visibly waiting, not flooding the log.
_NOTICE_EVERY = 5.0
# The calls that change what runs: `Aws.guard` is asked right before each leaves this process.
MUTATIONS = (
    "batch.SubmitJob",
    "batch.TerminateJob",
    "batch.TerminateJobs",
    "batch.CancelJob",
    "batch.CancelJobs",
    "batch.UpdateJobQueue",
)
# Actions paced from one token bucket. AWS documents one Batch API budget per account and Region
# (throttled with HTTP 429) and no separate rate for the bulk stop calls: a bulk call and its one-job
# form, which it falls back to, draw from the same budget rather than doubling the rate between them.
PACED_TOGETHER = {"terminate_jobs": "terminate_job", "cancel_jobs": "cancel_job"}


@dataclass(frozen=True)
class AwsSettings:
    """How hard jobguard may push AWS: per-action rate and burst, calls in flight, retry bounds."""

    rate: float = 48.0
    burst: float = 50.0
    workers: int = 16
    retry: RetrySettings = field(default_factory=RetrySettings)


class Aws:
    """boto3 clients from the usual credential chain, and paced, retried, translated calls."""

    def __init__(self, settings: AwsSettings, notice: Notice | None = None, session: Any = None) -> None:
        self.settings = settings
        self.notice = notice or (lambda text: None)
        self.session = session or _session()
        try:
            self.region = str(self.session.region_name or "")
        except BotoCoreError as exc:
            raise CredentialsError(f"cannot read the AWS configuration: {exc}", hint="check AWS_CONFIG_FILE / ~/.aws/config") from None
        if not self.region:
            raise CredentialsError(
                "no AWS region configured", hint="set AWS_REGION (or AWS_DEFAULT_REGION), or a region in your AWS profile"
            )
        if not REGION.fullmatch(self.region):  # it goes into every signature, ARN and manifest
            raise CredentialsError(
                f"AWS region {self.region!r} is not a region name", hint="check AWS_REGION, AWS_DEFAULT_REGION and your AWS profile"
            )
        self.pacer = Pacer(settings.rate, settings.burst)
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._noticed: dict[str, float] = {}
        self._clock_offsets: dict[str, float] = {}
        # Raises when this run may no longer act (it lost its lease). Asked as late as it can be, once the
        # request is signed and about to be sent: a process paused before that point stops on resuming.
        self.guard: Callable[[], None] | None = None
        # Set when the run is ending (its block failed): reads still retrying on a pool stop after their attempt in flight.
        self.abort = threading.Event()

    def client(self, service: str) -> Any:
        """A boto3 client for `service`, configured like every other jobguard client (cached)."""
        with self._lock:
            if service not in self._clients:
                pool = Config(max_pool_connections=max(10, self.settings.workers * 2))
                try:
                    self._clients[service] = self.session.client(service, config=_BOTO_CONFIG.merge(pool))
                    urlsplit(self._clients[service].meta.endpoint_url).port  # noqa: B018 -- a port out of range raises here, not mid-call
                except (BotoCoreError, ValueError) as exc:  # ValueError: a malformed AWS_ENDPOINT_URL
                    raise CredentialsError(f"cannot set up an AWS {service} client: {exc}") from None
                for mutation in MUTATIONS:
                    if mutation.startswith(f"{service}."):
                        self._clients[service].meta.events.register(f"before-send.{mutation}", self._guard)
            return self._clients[service]

    def call(
        self,
        service: str,
        action: str,
        what: str,
        retryable: Callable[[BaseException], bool] = is_transient,
        paced: bool = False,
        **request: Any,
    ) -> Json:
        """One AWS call, retried where `retryable` allows; failures become jobguard errors naming `what`."""
        try:
            return self.attempts(service, action, lambda: self.send(service, action, paced, **request), retryable)
        except (ClientError, BotoCoreError, OSError) as exc:
            raise translate(exc, what) from None

    def attempts(self, service: str, action: str, fn: Callable[[], T], retryable: Callable[[BaseException], bool] = is_transient) -> T:
        """Run `fn` (one or more raw sends) under the retry policy, with a line when it backs off.

        Raises botocore's errors: for callers (like SubmitJob's) that decide per error themselves.
        """
        return call_with_retries(
            self.settings.retry, fn, retryable, lambda error, wait, attempt: self._backoff(action, error, wait, attempt), self.abort
        )

    def send(self, service: str, action: str, paced: bool = False, **request: Any) -> Json:
        """One raw attempt of one call (paced if asked); botocore's errors pass through."""
        if paced:
            self.pacer.take(PACED_TOGETHER.get(action, action))
        client = self.client(service)
        try:
            answer = dict(getattr(client, action)(**request))
        except ClientError as exc:  # an error answer has a Date too (S3's first look at a lease is often a 404)
            self._note_clock(service, dict(exc.response))
            raise
        except (NoCredentialsError, NoRegionError):
            raise CredentialsError(
                "no AWS credentials found", hint="configure credentials as for the AWS CLI: environment, profile, or an assumed role"
            ) from None
        self._note_clock(service, answer)
        return answer

    def parallel(self, function: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """`function` over `items` with up to `workers` calls in flight; results in order."""
        return in_parallel(function, items, self.settings.workers)

    def _guard(self, **_: Any) -> None:
        if self.guard is not None:
            self.guard()

    def server_time(self, service: str) -> float:
        """AWS's own clock for `service` (seconds since the epoch), from the Date of its last answer.

        Expiry of another machine's lease is judged on this clock, never on this machine's: two
        runners' clocks may differ by minutes.
        """
        return time.time() + self._clock_offsets.get(service, 0.0)

    def _note_clock(self, service: str, answer: Json) -> None:
        date = answer.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        if not date:
            return
        with suppress(TypeError, ValueError):
            # Date has whole seconds: the true time lies within the second after it.
            self._clock_offsets[service] = parsedate_to_datetime(date).timestamp() + 0.5 - time.time()

    def _backoff(self, action: str, error: BaseException, wait: float, attempt: int) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._noticed.get(action, -_NOTICE_EVERY) < _NOTICE_EVERY:
                return
            self._noticed[action] = now
        limit = self.settings.retry
        bounds = f"attempt {attempt} of {limit.attempts}, at most {limit.max_seconds:g} s per call"
        self.notice(f"{action}: {error_code(error)}; backing off {wait:.1f} s ({bounds})")


def translate(exc: BaseException, what: str) -> JobguardError:
    """A botocore or OS error as the jobguard error the CLI reports, naming `what` failed."""
    if isinstance(exc, JobguardError):
        return exc
    if isinstance(exc, (NoCredentialsError, NoRegionError)):
        return CredentialsError(
            "no AWS credentials found", hint="configure credentials as for the AWS CLI: environment, profile, or an assumed role"
        )
    if isinstance(exc, ClientError):
        return AwsError(f"{what}: {error_code(exc)}: {one_line(error_message(exc))}".rstrip(": "))
    if is_unreachable(exc):
        return UnreachableError(f"{what}: cannot reach AWS ({type(exc).__name__})")
    if isinstance(exc, BotoCoreError):
        return AwsError(f"{what}: {exc}")
    if isinstance(exc, OSError):
        return UnreachableError(f"{what}: {exc.strerror or exc}")
    return AwsError(f"{what}: {type(exc).__name__}: {exc}")


@functools.lru_cache(maxsize=1)
def _loader() -> Any:
    """botocore's reader of service models, shared by every session of the process: each session
    would read and parse the same JSON models again (tens of milliseconds per client)."""
    return botocore.loaders.create_loader()


def _session() -> Any:
    """boto3's usual chain; AWS_REGION wins, as in the AWS CLI v2 (botocore reads only AWS_DEFAULT_REGION)."""
    try:
        core = botocore.session.get_session()
        loader = _loader()
        core.register_component("data_loader", loader)
        session = boto3.session.Session(botocore_session=core, region_name=os.environ.get("AWS_REGION") or None)
        loader.search_paths[:] = list(dict.fromkeys(loader.search_paths))  # each boto3 session adds its data folder again
        core.get_scoped_config()  # a broken config file or a missing profile: said here, as such
        return session
    except ProfileNotFound as exc:
        raise CredentialsError(
            f"AWS profile not found: {exc.kwargs.get('profile', '')}", hint="check AWS_PROFILE and ~/.aws/config"
        ) from None
    except BotoCoreError as exc:
        raise CredentialsError(f"cannot read the AWS configuration: {exc}", hint="check AWS_CONFIG_FILE / ~/.aws/config") from None


def chunks(items: list[T], size: int) -> Iterator[list[T]]:
    """`items` in consecutive slices of at most `size`."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
