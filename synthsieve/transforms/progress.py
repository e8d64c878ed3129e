"""Counts the rows a job has written in this process, for the console's progress line, and
logs per-worker progress where no console watches (a worker process of another runner)."""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import apache_beam as beam

__all__ = ["ReportProgress", "rows_done", "watch"]

log = logging.getLogger("synthsieve.progress")


class _Progress:
    """Per-process tally shared by the DoFn instances (threads) of one worker."""

    lock = threading.Lock()
    done = 0
    started = 0.0
    last_log = 0.0
    watched = False  # a console in this process shows the count: no per-worker lines


def watch(on: bool) -> None:
    """A console starts (True) or stops (False) showing this process's count; starting
    also starts a new count, for the job about to run."""
    with _Progress.lock:
        _Progress.watched = on
        if on:
            _Progress.done = 0
            _Progress.started = _Progress.last_log = time.monotonic()


def rows_done() -> int:
    """Rows (scores and errors) the job has written in this process so far."""
    with _Progress.lock:
        return _Progress.done


class ReportProgress(beam.DoFn):
    """Pass-through that counts each row; logs `done` and rows/s every `every_s` seconds
    per worker when no console in the process shows them."""

    def __init__(self, every_s: float = 5.0):
        self._every_s = every_s

    def setup(self) -> None:
        with _Progress.lock:
            if not _Progress.started:
                _Progress.started = time.monotonic()
                _Progress.last_log = _Progress.started

    def process(self, element: Any):
        now = time.monotonic()
        with _Progress.lock:
            _Progress.done += 1
            due = not _Progress.watched and now - _Progress.last_log >= self._every_s
            if due:
                _Progress.last_log = now
                done, elapsed = _Progress.done, now - _Progress.started
        if due:
            log.info("progress: %d images done (scores + errors) in %.0f s, %.1f images/s "
                     "[worker pid %d]", done, elapsed, done / max(elapsed, 1e-9), os.getpid())
        yield element
