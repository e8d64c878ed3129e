"""Identical bytes are scored once; every input still gets its own row.

The first image with a given sha256 in a worker process is the leader and goes on to decode
and scoring; later ones are followers and carry only their reference. Followers are joined
with their leader's outcome by the leader's image_id and get a copy of its score (or of its
error). Moving the bytes through a shuffle to find duplicates globally would hold the corpus
in memory on the DirectRunner, so leaders are chosen per process: identical images read by
two workers may each be scored once, never written twice.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from synthsieve.elements import ERRORS, FetchedImage, ImageRef
from synthsieve.schema import STAGE_INFERENCE, empty_score_row, error_row, now_utc

FOLLOWERS = "followers"
MAX_REMEMBERED = 250_000  # sha256 -> leader id entries kept per worker process
# Everything that follows from the bytes alone: scores and the provenance read from them.
_LEADER_COLUMNS = ("sha256", "bytes", "width", "height", "format", "ai_generated", "verdict",
                   "source", "source_score", "source_scores", "deepfake", "model", "backend",
                   "c2pa", "xmp", "exif", "generation_params", "watermark",
                   "provenance_source", "evidence_verdict", "verdict_reason", "warnings")


class Follower(NamedTuple):
    leader_id: str
    ref: ImageRef
    http_status: int | None
    robots_opt_out: bool | None


class _Leaders:
    """sha256 -> leader image_id, per run: a process can run several pipelines in turn, and
    a leader from an earlier run has no row in this one to copy."""

    lock = threading.Lock()
    by_run: dict[str, OrderedDict[str, str]] = {}


class SplitDuplicates(beam.DoFn):
    """FetchedImage -> leaders (main) and Follower (tagged `followers`)."""

    def __init__(self, run_id: str):
        self._run_id = run_id
        self._followers = Metrics.counter("synthsieve", "duplicate_bytes")

    def setup(self) -> None:
        with _Leaders.lock:
            if self._run_id not in _Leaders.by_run:
                # Keep the current run and at most one other (a pipeline still running).
                for old in list(_Leaders.by_run)[:-1]:
                    del _Leaders.by_run[old]
                _Leaders.by_run[self._run_id] = OrderedDict()

    def process(self, item: FetchedImage) -> Iterable[Any]:
        with _Leaders.lock:
            seen = _Leaders.by_run.setdefault(self._run_id, OrderedDict())
            leader = seen.get(item.sha256)
            if leader is None:
                seen[item.sha256] = item.ref.image_id
                if len(seen) > MAX_REMEMBERED:
                    seen.popitem(last=False)
            else:
                seen.move_to_end(item.sha256)
        if leader is None:
            yield item
            return
        self._followers.inc()
        yield beam.pvalue.TaggedOutput(FOLLOWERS, Follower(
            leader, item.ref, item.http_status, item.robots_opt_out))


class _Resolve(beam.DoFn):
    def __init__(self, run_id: str):
        self._run_id = run_id

    def process(self, joined: tuple[str, dict[str, list]]) -> Iterable[Any]:
        leader_id, parts = joined
        followers = parts["followers"]
        if not followers:
            return
        scores, errors = parts["scores"], parts["errors"]
        for f in followers:
            if scores:
                row = empty_score_row()
                row.update(scores[0])
                row.update(image_id=f.ref.image_id, uri=f.ref.uri, extra=f.ref.extra,
                           http_status=f.http_status, robots_opt_out=f.robots_opt_out,
                           run_id=self._run_id, processed_at=now_utc(),
                           warnings=[*(row["warnings"] or []),
                                     f"identical bytes to {leader_id}: scored once"])
                yield row
            elif errors:
                e = errors[0]
                yield beam.pvalue.TaggedOutput(ERRORS, error_row(
                    image_id=f.ref.image_id, uri=f.ref.uri, stage=e["stage"],
                    error_type=e["error_type"],
                    message=f"identical bytes to {leader_id}, which failed: {e['message']}",
                    http_status=f.http_status, run_id=self._run_id))
            else:  # the leader's row was lost: never let the follower vanish with it
                yield beam.pvalue.TaggedOutput(ERRORS, error_row(
                    image_id=f.ref.image_id, uri=f.ref.uri, stage=STAGE_INFERENCE,
                    error_type="leader_missing",
                    message=f"identical bytes to {leader_id}, which has no result",
                    run_id=self._run_id))


class ResolveFollowers(beam.PTransform):
    """(followers, leader score rows, leader error rows) -> follower rows."""

    def __init__(self, run_id: str):
        super().__init__()
        self._run_id = run_id

    def expand(self, pcolls: dict[str, beam.PCollection]) -> dict[str, beam.PCollection]:
        keyed = {
            "followers": pcolls["followers"] | "FollowersByLeader" >> beam.Map(
                lambda f: (f.leader_id, f)),
            "scores": pcolls["scores"] | "ScoresById" >> beam.Map(
                lambda r: (r["image_id"], {k: r[k] for k in _LEADER_COLUMNS})),
            "errors": pcolls["errors"] | "ErrorsById" >> beam.Map(
                lambda r: (r["image_id"], {k: r[k] for k in ("stage", "error_type",
                                                              "message")})),
        }
        out = (keyed | "JoinLeaders" >> beam.CoGroupByKey()
               | "FollowerRows" >> beam.ParDo(_Resolve(self._run_id)).with_outputs(
                   ERRORS, main="scores"))
        return {"scores": out.scores, "errors": out[ERRORS]}
