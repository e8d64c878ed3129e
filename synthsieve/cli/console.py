"""What a person at the console sees while a job runs and when it ends, on stderr: done /
total, rate and ETA (a bar on a terminal, a log line every half minute otherwise), then a
few lines of summary. stdout carries the JSON summary and nothing else, for schedulers."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any

from synthsieve.cli.args import counted
from synthsieve.transforms import progress

__all__ = ["ConsoleProgress", "shown_here", "summary_lines"]

log = logging.getLogger("synthsieve.progress")

BAR_EVERY_S = 0.5
LINE_EVERY_S = 30.0


def shown_here(quiet: bool, beam_args: list[str]) -> bool:
    """Whether this process can show a job's progress: rows are counted where they are
    written, which is here only for the local runner's one in-process worker."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from synthsieve.runners.choice import one_worker_in_process

    return not quiet and one_worker_in_process(PipelineOptions(beam_args))


class ConsoleProgress:
    """A context manager around a job that runs in this process: shows the rows written
    so far (transforms/progress.py) against `count_total()`, which runs in a thread of its
    own beside the job and may return None (the total is not known cheaply)."""

    def __init__(self, command: str, count_total: Callable[[], int | None] | None = None,
                 *, enabled: bool = True, stream: IO[str] | None = None,
                 every_s: float | None = None):
        self._command = command
        self._count_total = count_total
        self._enabled = enabled
        self._stream = stream or sys.stderr
        self._tty = bool(getattr(self._stream, "isatty", lambda: False)())
        self._every_s = every_s or (BAR_EVERY_S if self._tty else LINE_EVERY_S)
        self._total: int | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._bar: Any = None
        self._started = 0.0

    def __enter__(self) -> ConsoleProgress:
        if not self._enabled:
            return self
        progress.watch(True)
        self._started = time.monotonic()
        if self._tty:
            from tqdm import tqdm

            self._bar = tqdm(total=None, unit=" images", file=self._stream,
                             dynamic_ncols=True, desc=self._command, leave=True)
        if self._count_total is not None:
            self._threads.append(threading.Thread(
                target=self._count, name="synthsieve-count", daemon=True))
        self._threads.append(threading.Thread(
            target=self._tick, name="synthsieve-progress", daemon=True))
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._enabled:
            return
        self._stop.set()
        for t in self._threads[-1:]:  # the ticker; a slow count is left to finish alone
            t.join()
        if self._bar is not None:
            self._show()
            self._bar.close()
        progress.watch(False)

    @property
    def total(self) -> int | None:
        return self._total

    def _count(self) -> None:
        try:
            self._total = self._count_total()
        except Exception as e:  # noqa: BLE001 - the job reports bad sources; this only shows
            log.debug("could not count the inputs: %s", e)

    def _tick(self) -> None:
        while not self._stop.wait(self._every_s):
            self._show()

    def _show(self) -> None:
        done = progress.rows_done()
        if self._bar is not None:
            if self._total is not None and self._bar.total != self._total:
                self._bar.total = self._total
            self._bar.update(done - self._bar.n)
            return
        log.info("%s", self.line(done, time.monotonic() - self._started))

    def line(self, done: int, elapsed_s: float) -> str:
        """'audit: 1,200 of 10,000 images (12%), 40.0 images/s, about 3 min 40 s left'."""
        rate = done / elapsed_s if elapsed_s > 0 else 0.0
        head = f"{self._command}: {done:,}"
        if self._total is None:
            return (f"{self._command}: {counted(done, 'image')} done, {rate:.1f} images/s "
                    "(total not known yet)")
        share = done / self._total if self._total else 1.0
        left = (self._total - done) / rate if rate > 0 and done < self._total else None
        eta = f", about {_duration(left)} left" if left is not None else ""
        return (f"{head} of {counted(self._total, 'image')} ({share:.0%}), {rate:.1f} "
                f"images/s{eta}")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def summary_lines(command: str, summary: dict[str, Any], out: str,
                  next_command: str | None = None) -> list[str]:
    """A few lines a person reads at the end of a run: inputs, scored, errors, verdicts,
    where the output is, and what to run next."""
    inputs, scores, errors = summary["inputs"], summary["scores"], summary["errors"]
    lines = [f"{command}: {counted(inputs, 'input')}: {scores:,} scored, "
             f"{counted(errors, 'error')} in {summary['wall_s']} s "
             f"({summary['images_per_s']} images/s)"]
    for label, counts in (
            ("verdicts", summary.get("evidence_verdicts") or summary.get("verdicts")),
            ("errors by stage", summary.get("errors_by_stage"))):
        if counts:
            lines.append(f"  {label}: " + ", ".join(
                f"{n:,} {name}" for name, n in sorted(counts.items(), key=lambda kv: -kv[1])))
    lines.append(f"  output: {out}")
    if next_command:
        lines.append(f"  next: {next_command}")
    return lines
