"""One retry loop for every HTTP call synthsieve makes: image fetches and vendor API calls.

An attempt either returns its result, raises Retry (the server said "later": 429, 5xx, an
unreadable answer), or raises a transport error (timeout, reset, refused connection). The
last two are tried again after a backoff, up to the policy's retries; then the result says
what happened last and how many attempts it took. Anything else the attempt raises (an
API key refused) is not retried and goes to the caller.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Self, TypeVar

import aiohttp

__all__ = ["Outcome", "Retry", "RetryPolicy", "backoff_delay", "retry_after_s",
           "transport_error_type", "with_retries"]


@dataclass(frozen=True)
class RetryPolicy:
    retries: int  # tries after the first
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0


@dataclass(kw_only=True)
class Outcome:
    """What every call's result carries: how it went and how many attempts it took."""

    attempts: int = 0
    status: int | None = None  # the last HTTP status, if an answer came
    error_type: str | None = None
    message: str | None = None

    def fail(self, error_type: str, message: str) -> Self:
        self.error_type = error_type
        self.message = message
        return self


R = TypeVar("R", bound=Outcome)


class Retry(Exception):
    """The attempt failed in a way worth trying again."""

    def __init__(self, error_type: str, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.error_type = error_type
        self.retry_after = retry_after


def transport_error_type(e: BaseException) -> str:
    """timeout or connection_error, for an exception from the network stack."""
    timeout = isinstance(e, asyncio.TimeoutError) or "timeout" in type(e).__name__.lower()
    return "timeout" if timeout else "connection_error"


def retry_after_s(value: str | None) -> float | None:
    """A Retry-After header's seconds (given as seconds or as an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def backoff_delay(failures: int, retry_after: float | None, base_s: float,
                  max_s: float) -> float:
    """Seconds to wait before the next try: the server's Retry-After when it gave one
    (capped), else exponential backoff with full jitter, a uniform draw up to
    base * 2**(failures - 1), where `failures` counts the failures that came without a
    Retry-After. Full jitter spreads the retries of many clients best and finishes their
    work soonest (the AWS Architecture Blog's "Exponential Backoff And Jitter")."""
    if retry_after is not None:
        return min(retry_after, max_s)
    return random.uniform(0.0, min(max_s, base_s * 2 ** (max(1, failures) - 1)))


async def with_retries(attempt: Callable[[], Awaitable[R]], result: R,
                       policy: RetryPolicy) -> R:
    """Runs `attempt` until it returns, or until the policy's retries are spent.

    Args:
      attempt: one try; returns the finished result, raises Retry or a transport error to
        be tried again, or raises anything else to stop.
      result: the result being filled; its `attempts` counts the tries.
      policy: how many retries, and the backoff between them.

    Returns:
      What `attempt` returned, or `result` failed with the last error's type and message.
    """
    # A Retry-After answer says when to come back, not that the server is failing, so only
    # the failures without one grow the backoff.
    unhinted = 0
    while True:
        result.attempts += 1
        try:
            return await attempt()
        except Retry as e:
            error_type, message, retry_after = e.error_type, str(e), e.retry_after
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            error_type = transport_error_type(e)
            message, retry_after = f"{type(e).__name__}: {e}".rstrip(": "), None
        if result.attempts > policy.retries:
            result.fail(error_type, f"{message} (gave up after {result.attempts} attempts)")
            return result
        if retry_after is None:
            unhinted += 1
        await asyncio.sleep(backoff_delay(unhinted, retry_after,
                                          policy.backoff_base_s, policy.backoff_max_s))
