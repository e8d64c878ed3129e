"""Logs how many images a worker has finished and at what rate, while the job runs."""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import apache_beam as beam

__all__ = ["ReportProgress"]

log = logging.getLogger("synthsieve.progress")


class _Progress:
    """Per-process tally shared by the DoFn instances (threads) of one worker."""

    lock = threading.Lock()
    done = 0
    started = 0.0
    last_log = 0.0


class ReportProgress(beam.DoFn):
    """Pass-through that logs `done` and images/s every `every_s` seconds per worker."""

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
            due = now - _Progress.last_log >= self._every_s
            if due:
                _Progress.last_log = now
                done, elapsed = _Progress.done, now - _Progress.started
        if due:
            log.info("progress: %d images done (scores + errors) in %.0f s, %.1f images/s "
                     "[worker pid %d]", done, elapsed, done / max(elapsed, 1e-9), os.getpid())
        yield element
