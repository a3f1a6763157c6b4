"""Which S3 failures are transient, and the one bounded retry policy for them.

An outage must fail fast and clearly (the controller answers 503, a worker re-queues the job), so
the retry budget is small and bounded in attempts AND wall time; urllib3's own retries are off so
that this is the only policy in play.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import urllib3.exceptions
from minio.error import InvalidResponseError, S3Error, ServerError

from occlutrace_compute.storage.base import StoreUnavailable

T = TypeVar("T")

# S3 error codes that mean "try again" even where the HTTP status is not 5xx.
_TRANSIENT_CODES = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout"}


@dataclass(frozen=True)
class RetryPolicy:
    """At most `attempts` tries, exponential backoff with jitter, no new try after `deadline_s`."""

    attempts: int = 4
    base_delay_s: float = 0.2
    max_delay_s: float = 1.5
    deadline_s: float = 5.0
    connect_timeout_s: float = 2.0
    # Per socket read, not per object; a server that accepts but never answers costs one of these
    # (the deadline then stops further tries), so keep it short.
    read_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be >= 1, got {self.attempts}")
        if min(self.base_delay_s, self.max_delay_s, self.deadline_s) < 0:
            raise ValueError("RetryPolicy delays and deadline must be >= 0")
        if min(self.connect_timeout_s, self.read_timeout_s) <= 0:
            raise ValueError("RetryPolicy timeouts must be > 0")

    def delay(self, attempt: int) -> float:
        """Backoff before try `attempt + 1` (attempt counts from 1): 'equal jitter'."""
        ceiling = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def call(self, fn: Callable[[], T], what: str, where: str) -> T:
        """Run `fn`, retrying transient failures; then raise StoreUnavailable naming `what`."""
        start = time.monotonic()
        attempt = 0
        while True:  # bounded: the last attempt (or the deadline) raises
            attempt += 1
            try:
                return fn()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                elapsed = time.monotonic() - start
                pause = self.delay(attempt)
                if attempt == self.attempts or elapsed + pause > self.deadline_s:
                    raise StoreUnavailable(
                        f"{what}: object store {where} unavailable after {attempt} attempt(s)"
                        f" in {elapsed:.1f} s: {describe(exc)}"
                    ) from exc
                time.sleep(pause)  # backoff between tries, not synchronisation


def is_transient(exc: BaseException) -> bool:
    """Network failures, timeouts and server-side (5xx) errors; never 4xx or bad credentials."""
    if isinstance(
        exc,
        (
            urllib3.exceptions.MaxRetryError,
            urllib3.exceptions.TimeoutError,
            urllib3.exceptions.ProtocolError,
            urllib3.exceptions.NewConnectionError,
            ConnectionError,
            TimeoutError,
        ),
    ):
        return True
    if isinstance(exc, ServerError):
        return exc.status_code >= 500
    if isinstance(exc, InvalidResponseError):  # a non-XML answer, e.g. a proxy's 502 page
        return getattr(exc, "_code", 0) >= 500
    if isinstance(exc, S3Error):
        return exc.code in _TRANSIENT_CODES or exc.response.status >= 500
    return False


def describe(exc: BaseException) -> str:
    """One line about a failure: the root cause, without the request URL's noise."""
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    if isinstance(exc, S3Error):
        return f"{exc.code}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"
