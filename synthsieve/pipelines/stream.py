"""The streaming job: image references arrive on Pub/Sub, are scored as they come, flagged
on a topic when AI-generated, and written as Parquet per fixed window.

Delivery is at least once, end to end: a message is acknowledged only after the row it
became has been written, so a scores or errors row, a flag and a dead-letter message can
each appear more than once for one image (after a crash, or a lease that ran out), never
zero times. Downstream, keep one row per `image_id` (the latest `processed_at`), and treat
flags and dead letters as idempotent by their `image_id` attribute.

Who acknowledges: on Dataflow, its Pub/Sub source, after the runner's commit. On the
in-process DirectRunner, whose own source acknowledges on pull, the relay in
runners/relay.py does it after the windowed writer's commit; a stop (Ctrl-C, SIGTERM,
`--run-for`) stops pulling and waits for what is in flight to be written first.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.io.gcp.pubsub import PubsubMessage, ReadFromPubSub, WriteToPubSub
from apache_beam.runners.runner import PipelineState

from synthsieve.io.messages import ParseMessages
from synthsieve.io.sinks import ERRORS_DIR, SCORES_DIR, WriteWindowedTable, WrittenShard
from synthsieve.pipelines.job import Job, JobConfig, release_in_process_resources, set_up_job
from synthsieve.runners.choice import is_local
from synthsieve.runners.relay import DEFAULT_SOURCE_LOST_AFTER_S, AckAfterCommitRelay
from synthsieve.schema import ERRORS_SCHEMA, SCORES_SCHEMA, VERDICT_AI
from synthsieve.transforms.chain import ScoreReferences

__all__ = ["StreamConfig", "build_stream", "ended_badly", "run_stream"]

log = logging.getLogger("synthsieve.stream")

MAX_ATTRIBUTE_CHARS = 1024  # Pub/Sub's limit on an attribute value, in bytes


@dataclass(kw_only=True)
class StreamConfig(JobConfig):
    """A stream: the subscription to read, the topics to publish to, and its windows."""

    subscription: str  # projects/P/subscriptions/S
    flag_topic: str | None = None  # projects/P/topics/T: one message per AI-generated image
    dead_letter_topic: str | None = None  # projects/P/topics/T: one message per error row
    window_s: float = 60.0
    # None: on when the runner runs in this process (the DirectRunner), see runners/relay.py
    ack_after_commit: bool | None = None
    lease_s: float = 30.0  # how long a pulled, unwritten message stays ours between renewals
    # the job ends (non-zero) when its subscription cannot be pulled for this long
    source_lost_after_s: float = DEFAULT_SOURCE_LOST_AFTER_S

    @property
    def drain_s(self) -> float:
        """How long a stop waits for in-flight messages: two windows and then some."""
        return 2 * self.window_s + 30.0


def _attr(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.encode()[:MAX_ATTRIBUTE_CHARS].decode("utf-8", "ignore")


def flagged(row: dict[str, Any]) -> bool:
    """Flag on the combined verdict, which is the pixel verdict when the file says nothing."""
    return (row.get("evidence_verdict") or row.get("verdict")) == VERDICT_AI


def flag_message(row: dict[str, Any]) -> PubsubMessage:
    body = {k: row.get(k) for k in (
        "image_id", "uri", "sha256", "ai_generated", "verdict", "evidence_verdict",
        "verdict_reason", "source", "provenance_source", "model", "backend", "run_id")}
    attributes = {"image_id": _attr(row["image_id"]), "uri": _attr(row["uri"]),
                  "verdict": _attr(row.get("verdict")),
                  "evidence_verdict": _attr(row.get("evidence_verdict")),
                  "ai_generated": _attr(row.get("ai_generated"))}
    return PubsubMessage(json.dumps(body).encode(), attributes)


def dead_letter_message(row: dict[str, Any]) -> PubsubMessage:
    body = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}
    attributes = {k: _attr(row.get(k)) for k in ("image_id", "uri", "stage", "error_type")}
    return PubsubMessage(json.dumps(body).encode(), attributes)


def build_stream(p: beam.Pipeline, cfg: StreamConfig, job: Job,
                 subscription: str | None = None) -> None:
    """Adds the stream's transforms to `p`. `subscription`: what to read, when not
    cfg.subscription itself (the relay's)."""
    run_id = cfg.run_id
    messages = p | "ReadPubSub" >> ReadFromPubSub(subscription=subscription or cfg.subscription,
                                                  with_attributes=True)
    parsed = messages | "Parse" >> ParseMessages(run_id, local_roots=cfg.local_roots)
    rows = parsed["refs"] | "Chain" >> ScoreReferences(cfg.chain_settings(), job.spec,
                                                       job.handler)
    scores = rows["scores"]
    errors = ((parsed["errors"], *ScoreReferences.errors(rows)) | "AllErrors" >> beam.Flatten())
    dead_letters = bool(cfg.dead_letter_topic)
    (scores
     | "WriteScores" >> WriteWindowedTable(cfg.out_dir, SCORES_DIR, SCORES_SCHEMA, run_id,
                                           cfg.window_s)
     | "LogScoresWindows" >> beam.ParDo(_LogWindow(SCORES_DIR, dead_letters)))
    (errors
     | "WriteErrors" >> WriteWindowedTable(cfg.out_dir, ERRORS_DIR, ERRORS_SCHEMA, run_id,
                                           cfg.window_s)
     | "LogErrorsWindows" >> beam.ParDo(_LogWindow(ERRORS_DIR, dead_letters)))
    if cfg.flag_topic:
        (scores
         | "Flagged" >> beam.Filter(flagged)
         | "CountFlagged" >> beam.ParDo(_CountFlagged())
         | "FlagMessage" >> beam.Map(flag_message)
         | "PublishFlags" >> WriteToPubSub(cfg.flag_topic, with_attributes=True))
    if cfg.dead_letter_topic:
        (errors
         | "DeadLetterMessage" >> beam.Map(dead_letter_message)
         | "PublishDeadLetters" >> WriteToPubSub(cfg.dead_letter_topic, with_attributes=True))


class StreamTally:
    """Rows this process has written (scores, errors) and images it has flagged, for the
    window log lines and the final totals (the in-process runner's; other runners' workers
    each log their own)."""

    lock = threading.Lock()
    counts: dict[str, int] = {SCORES_DIR: 0, ERRORS_DIR: 0, "flagged": 0}

    @classmethod
    def add(cls, key: str, n: int) -> dict[str, int]:
        with cls.lock:
            cls.counts[key] += n
            return dict(cls.counts)

    @classmethod
    def reset(cls) -> None:
        with cls.lock:
            cls.counts = dict.fromkeys(cls.counts, 0)


class _CountFlagged(beam.DoFn):
    def process(self, row: dict[str, Any]) -> Iterable[dict[str, Any]]:
        StreamTally.add("flagged", 1)
        yield row


class _LogWindow(beam.DoFn):
    """Logs each file a window's writer committed, with the running counts."""

    def __init__(self, table: str, dead_letters: bool):
        self._table = table
        self._errors = "errors dead-lettered" if dead_letters else "errors"

    def process(self, shard: WrittenShard) -> None:
        so_far = StreamTally.add(self._table, shard.rows)
        log.info("stream: %s, %s: %d rows written to %s; so far %d scored, %d flagged, %d %s",
                 shard.window, self._table, shard.rows, shard.path, so_far[SCORES_DIR],
                 so_far["flagged"], so_far[ERRORS_DIR], self._errors)


class _Stop:
    """SIGTERM and SIGINT (Ctrl-C) start a graceful stop: stop pulling, drain what is in
    flight, then end. A second signal ends the job at once (main thread only)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.requested = threading.Event()
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested.is_set():  # the second one: the previous handler decides
            previous = self._previous.get(signum)
            self._restore()
            if callable(previous):
                previous(signum, frame)
            else:
                signal.raise_signal(signum)
            return
        self.requested.set()
        print("synthsieve stream: stopping, draining what is in flight (signal again to stop "
              "at once)", file=sys.stderr, flush=True)

    def __enter__(self) -> _Stop:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}

    def __exit__(self, *exc: Any) -> None:
        self._restore()


def run_stream(cfg: StreamConfig, pipeline_args: list[str] | None = None,
               stop: Callable[[], bool] | None = None,
               run_for_s: float | None = None) -> dict[str, Any]:
    """Runs until `stop()` is true, `run_for_s` has passed, the runner ends, SIGTERM or
    Ctrl-C. With acknowledge-after-commit, a stop first drains what is in flight."""
    job = set_up_job(cfg, pipeline_args, streaming=True)
    options = job.options
    in_process = is_local(options)
    relayed = in_process if cfg.ack_after_commit is None else cfg.ack_after_commit
    if relayed and not in_process:
        raise ValueError("acknowledge-after-commit needs an in-process runner "
                         "(the DirectRunner); Dataflow's source does it by itself")
    log.info("stream %s: %s -> %s (window %ss, backend %s, %s)", cfg.run_id,
             cfg.subscription, cfg.out_dir, cfg.window_s, cfg.backend,
             "acknowledged after commit" if relayed else "acknowledged by the runner")
    p = job.pipeline()
    StreamTally.reset()
    start = time.monotonic()
    drained = None
    runner_stopped = True
    relay = (AckAfterCommitRelay(cfg.subscription, cfg.run_id, lease_s=cfg.lease_s,
                                 source_lost_after_s=cfg.source_lost_after_s)
             if relayed else None)
    with _Stop() as signalled, ExitStack() as scope:
        if relay is not None:
            scope.enter_context(relay)
        build_stream(p, cfg, job,
                     relay.relay_subscription if relay is not None else None)
        result = p.run()
        reason = _wait(result, stop, run_for_s, start, signalled.requested,
                       lambda: relay.lost if relay is not None else None)
        if reason.startswith(SOURCE_LOST):  # nothing can be drained or acknowledged now
            runner_stopped = _cancel_within(result, CANCEL_WAIT_S)
        elif not reason.startswith("runner"):  # we stop it: drain first, then cancel
            if relay is not None:
                relay.stop_pulling()
                drained = relay.wait_drained(
                    cfg.drain_s, lambda: PipelineState.is_terminal(result.state))
                if not drained:
                    log.warning("stream: %d messages still in flight after %gs; they are "
                                "handed back to the subscription", relay.in_flight,
                                cfg.drain_s)
            runner_stopped = _cancel_within(result, CANCEL_WAIT_S)
    if runner_stopped and PipelineState.is_terminal(result.state):  # no bundle uses them
        release_in_process_resources(job.handler)
    summary: dict[str, Any] = {
        "run_id": cfg.run_id, "subscription": cfg.subscription, "out": cfg.out_dir,
        "ended": reason, "runner_stopped": runner_stopped,
        "wall_s": round(time.monotonic() - start, 2)}
    if in_process:  # rows written and images flagged here (other runners: their workers')
        totals = StreamTally.add(SCORES_DIR, 0)
        summary.update(scored=totals[SCORES_DIR], flagged=totals["flagged"],
                       errors=totals[ERRORS_DIR])
    if relay is not None:
        summary["acknowledged_after_commit"] = dict(relay.stats, drained=drained)
        summary["left_behind"] = relay.left_behind
    kernel = job.int8_kernel()
    if kernel is not None:
        summary["int8_kernel"] = kernel
    return summary


SOURCE_LOST = "source lost"
# How long a job that lost its source waits for the runner to cancel: the DirectRunner's
# Pub/Sub reader retries each pull for minutes and cancel waits for it.
CANCEL_WAIT_S = 15.0


def _cancel_within(result: Any, timeout_s: float) -> bool:
    """result.cancel(), given at most timeout_s; False if the runner did not stop in time."""
    done = threading.Event()

    def cancel() -> None:
        try:
            result.cancel()
        except Exception as e:  # noqa: BLE001 - stopping anyway; say why it was unclean
            log.warning("stream: cancelling the runner: %s: %s", type(e).__name__, e)
        finally:
            done.set()

    threading.Thread(target=cancel, name="synthsieve-cancel", daemon=True).start()
    return done.wait(timeout_s)


def ended_badly(summary: dict[str, Any]) -> bool:
    """A stream ends well only when it was asked to (stop, signal, --run-for); the runner
    ending by itself or the source going away means a supervisor should restart it."""
    return summary["ended"].startswith(("runner", SOURCE_LOST))


def _wait(result: Any, stop: Callable[[], bool] | None, run_for_s: float | None,
          start: float, signalled: threading.Event,
          source_lost: Callable[[], str | None]) -> str:
    try:
        while True:
            if PipelineState.is_terminal(result.state):
                return f"runner {result.state}"
            lost = source_lost()
            if lost:
                return f"{SOURCE_LOST}: {lost}"
            if signalled.is_set():
                return "terminated"
            if stop is not None and stop():
                return "stopped"
            if run_for_s is not None and time.monotonic() - start >= run_for_s:
                return f"ran {run_for_s:g} s"
            time.sleep(0.5)
    except KeyboardInterrupt:
        return "interrupted"
