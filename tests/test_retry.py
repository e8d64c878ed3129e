"""The retry loop every HTTP call goes through (io/retry.py): what it waits between tries."""

from __future__ import annotations

import asyncio

import pytest

from synthsieve.io import retry
from synthsieve.io.retry import Outcome, Retry, RetryPolicy, with_retries


def _run(answers: list[Retry | None], monkeypatch, draw) -> tuple[Outcome, list[float]]:
    """Runs with_retries over `answers` (a Retry to raise, None to succeed); returns the
    outcome and the waits it slept, with random.uniform replaced by `draw`."""
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(retry.asyncio, "sleep", sleep)
    monkeypatch.setattr(retry.random, "uniform", draw)
    pending = list(answers)

    async def attempt() -> Outcome:
        answer = pending.pop(0)
        if answer is not None:
            raise answer
        return result

    result = Outcome()
    return asyncio.run(with_retries(attempt, result, RetryPolicy(retries=10))), waits


def _throttled() -> Retry:
    return Retry("http_429", "HTTP 429", retry_after=1.0)


def _unavailable() -> Retry:
    return Retry("http_503", "HTTP 503")


def test_retry_after_answers_do_not_grow_the_backoff_of_later_failures(monkeypatch):
    highest = lambda low, high: high  # noqa: E731 - the top of each jitter range
    outcome, waits = _run([_throttled(), _throttled(), _unavailable(), _unavailable(), None],
                          monkeypatch, highest)
    assert outcome.attempts == 5 and outcome.error_type is None
    # the server's Retry-After as given, then 0.5 s and 1 s: the first two failures that
    # came without one (counting every attempt would have made these 2 s and 4 s)
    assert waits == [1.0, 1.0, 0.5, 1.0]


def test_backoff_is_drawn_from_zero_up_to_the_exponential_cap(monkeypatch):
    ranges: list[tuple[float, float]] = []

    def record(low: float, high: float) -> float:
        ranges.append((low, high))
        return low

    outcome, waits = _run([_unavailable()] * 8 + [None], monkeypatch, record)
    assert outcome.attempts == 9
    assert ranges == [(0.0, 0.5), (0.0, 1.0), (0.0, 2.0), (0.0, 4.0), (0.0, 8.0),
                      (0.0, 16.0), (0.0, 30.0), (0.0, 30.0)]
    assert waits == [0.0] * 8


@pytest.mark.parametrize("retry_after, expected", [(2.5, 2.5), (600.0, 30.0)])
def test_retry_after_is_honoured_up_to_the_cap(monkeypatch, retry_after, expected):
    outcome, waits = _run([Retry("http_429", "HTTP 429", retry_after=retry_after), None],
                          monkeypatch, lambda low, high: pytest.fail("no draw expected"))
    assert outcome.attempts == 2 and waits == [expected]
