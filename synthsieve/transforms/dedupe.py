"""Identical bytes are scored once; every input still gets its own row.

The first image with a given sha256 in a worker process is the leader and goes on to decode
and scoring; later ones are followers and get a copy of the leader's outcome (its score and
provenance, or its error). The copy is made in the same process, with no shuffle: the
DirectRunner holds a shuffle's whole input in memory, and a join of every scored row with
its followers made peak memory grow with the corpus.

- a follower whose leader's row is known gets its row at once;
- one whose leader is still being scored waits in memory, and the row is written when the
  leader's row is recorded (by whichever thread records it);
- one whose leader's row has been evicted from the bounded cache becomes a leader itself and
  is scored again: that costs compute, never a row.
Leaders are chosen per process, so identical images read by two workers may each be scored
once; a leader and its followers go through the same fused stage, so through one process.
On a runner that does not fuse (Dask: each transform of a partition is a task of its own,
maybe on another worker) a waiting follower could wait forever in a process its leader's
row never reaches, so there followers never wait (`wait_for_leaders=False`): a follower
whose leader's row this process has not seen is scored itself.
"""

from __future__ import annotations

import pickle
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam

from synthsieve.counters import DUPLICATE_BYTES, counter
from synthsieve.elements import ERRORS, FetchedImage, ImageRef
from synthsieve.schema import BYTES_COLUMNS, empty_score_row, error_row, now_utc

__all__ = [
    "MAX_REMEMBERED", "MAX_ROWS", "Follower", "RecordLeaders", "SplitDuplicates",
    "follower_row",
]

# sha256 -> leader id entries kept per worker process (about 0.3 KB each): full by a
# 100,000-image run, so that a longer one holds no more
MAX_REMEMBERED = 100_000
MAX_ROWS = 20_000  # leader outcomes kept per worker process for later followers
SCORE, ERROR = "score", "error"


@dataclass(frozen=True)
class Follower:
    leader_id: str
    ref: ImageRef
    http_status: int | None
    robots_opt_out: bool | None


@dataclass
class _RunState:
    seen: OrderedDict[str, str] = field(default_factory=OrderedDict)  # sha256 -> leader id
    # leader id -> (score | error, its columns pickled): pickled bytes take a fraction of
    # the memory of the same columns as Python objects, and only a follower unpickles them
    outcomes: OrderedDict[str, tuple[str, bytes]] = field(default_factory=OrderedDict)
    in_flight: set[str] = field(default_factory=set)
    waiting: dict[str, list[Follower]] = field(default_factory=dict)


class _Rendezvous:
    """Per process and run: a process can run several pipelines in turn."""

    lock = threading.Lock()
    by_run: dict[str, _RunState] = {}

    @classmethod
    def state(cls, run_id: str) -> _RunState:
        if run_id not in cls.by_run:
            # Keep the current run and at most one other (a pipeline still running).
            for old in list(cls.by_run)[:-1]:
                del cls.by_run[old]
            cls.by_run[run_id] = _RunState()
        return cls.by_run[run_id]


def follower_row(f: Follower, kind: str, columns: dict[str, Any], run_id: str
                 ) -> tuple[str, dict[str, Any]]:
    """(score | error, the follower's own row) from its leader's outcome."""
    if kind == SCORE:
        row = empty_score_row()
        row.update(columns)
        row.update(image_id=f.ref.image_id, uri=f.ref.uri, extra=f.ref.extra,
                   http_status=f.http_status, robots_opt_out=f.robots_opt_out,
                   run_id=run_id, processed_at=now_utc(),
                   warnings=[*(columns.get("warnings") or []),
                             f"identical bytes to {f.leader_id}: scored once"])
        return SCORE, row
    return ERROR, error_row(
        image_id=f.ref.image_id, uri=f.ref.uri, stage=columns["stage"],
        error_type=columns["error_type"],
        message=f"identical bytes to {f.leader_id}, which failed: {columns['message']}",
        http_status=f.http_status, run_id=run_id)


class SplitDuplicates(beam.DoFn):
    """FetchedImage -> leaders (main); rows of followers whose leader is already done
    (tagged `follower_scores` and `errors`). Followers of leaders in flight wait."""

    FOLLOWER_SCORES = "follower_scores"

    def __init__(self, run_id: str, wait_for_leaders: bool = True):
        self._run_id = run_id
        self._wait = wait_for_leaders
        self._followers = counter(DUPLICATE_BYTES)

    def setup(self) -> None:
        with _Rendezvous.lock:
            _Rendezvous.state(self._run_id)

    def process(self, item: FetchedImage) -> Iterable[Any]:
        with _Rendezvous.lock:
            state = _Rendezvous.state(self._run_id)
            leader = state.seen.get(item.sha256)
            outcome = state.outcomes.get(leader) if leader else None
            follower = None
            if leader is not None and (outcome is not None
                                       or (self._wait and leader in state.in_flight)):
                state.seen.move_to_end(item.sha256)
                follower = Follower(leader, item.ref, item.http_status, item.robots_opt_out)
                if outcome is None:
                    state.waiting.setdefault(leader, []).append(follower)
            else:  # new bytes, or a leader whose outcome was evicted: score these
                state.seen[item.sha256] = item.ref.image_id
                state.in_flight.add(item.ref.image_id)
                if len(state.seen) > MAX_REMEMBERED:
                    state.seen.popitem(last=False)
        if follower is None:
            yield item
            return
        self._followers.inc()
        if outcome is not None:
            kind, row = follower_row(follower, outcome[0], pickle.loads(outcome[1]),
                                     self._run_id)
            yield beam.pvalue.TaggedOutput(
                self.FOLLOWER_SCORES if kind == SCORE else ERRORS, row)


class RecordLeaders(beam.DoFn):
    """Leader rows pass through; each is remembered for later followers, and the rows of
    followers that were waiting for it are emitted with it (same table)."""

    def __init__(self, run_id: str, kind: str):
        self._run_id = run_id
        self._kind = kind

    def process(self, row: dict[str, Any]) -> Iterable[dict[str, Any]]:
        image_id = row["image_id"]
        columns = self._columns(row)
        waiting: list[Follower] = []
        with _Rendezvous.lock:
            state = _Rendezvous.state(self._run_id)
            if image_id in state.in_flight:
                state.in_flight.discard(image_id)
                state.outcomes[image_id] = (self._kind, pickle.dumps(columns, protocol=5))
                if len(state.outcomes) > MAX_ROWS:
                    state.outcomes.popitem(last=False)
                waiting = state.waiting.pop(image_id, [])
        yield row
        for f in waiting:
            yield follower_row(f, self._kind, columns, self._run_id)[1]

    def _columns(self, row: dict[str, Any]) -> dict[str, Any]:
        if self._kind == SCORE:
            return {k: row.get(k) for k in BYTES_COLUMNS}
        return {k: row[k] for k in ("stage", "error_type", "message")}
