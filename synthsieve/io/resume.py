"""--resume: drop inputs whose image_id already has a row in the output directory.

The ids already written are read from DIR's own Parquet (every run in it), joined with the
new inputs by image_id, and only inputs with no row go on; so a re-run after a failure does
only the rest, and nothing is written twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.parquetio import ReadAllFromParquet

from synthsieve.counters import RESUME_SKIPPED, counter
from synthsieve.io.sinks import ERRORS_DIR, SCORES_DIR

__all__ = ["DoneIds", "SkipDone"]


class _KeepNew(beam.DoFn):
    def __init__(self):
        self._skipped = counter(RESUME_SKIPPED)

    def process(self, joined: tuple[str, dict[str, list]]) -> Iterable[Any]:
        _, parts = joined
        if parts["done"]:
            for _ in parts["items"]:
                self._skipped.inc()
            return
        yield from parts["items"]


class DoneIds(beam.PTransform):
    """PBegin -> the image_ids already in DIR/scores and DIR/errors (possibly none)."""

    def __init__(self, out_dir: str):
        """
        Args:
          out_dir: the audit directory whose earlier runs' rows count as done.
        """
        super().__init__()
        self._patterns = [FileSystems.join(out_dir, t, "*.parquet") for t in (SCORES_DIR,
                                                                               ERRORS_DIR)]

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return (pbegin.pipeline
                | "DonePatterns" >> beam.Create(self._patterns)
                | "ReadDone" >> ReadAllFromParquet(columns=["image_id"])
                | "DoneId" >> beam.Map(lambda r: r["image_id"]))


class SkipDone(beam.PTransform):
    """Elements whose key (an image_id) is not among `done`."""

    def __init__(self, done: beam.PCollection, key: Callable[[Any], str]):
        """
        Args:
          done: the image_ids already done (DoneIds).
          key: an element's image_id.
        """
        super().__init__()
        self._done = done
        self._key = key

    def expand(self, items: beam.PCollection) -> beam.PCollection:
        key = self._key
        return ({"items": items | "KeyById" >> beam.Map(lambda x: (key(x), x)),
                 "done": self._done | "DoneKey" >> beam.Map(lambda i: (i, True))}
                | "JoinDone" >> beam.CoGroupByKey()
                | "KeepNew" >> beam.ParDo(_KeepNew()))
