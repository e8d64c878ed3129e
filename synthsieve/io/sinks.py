"""Writes the scores and errors tables as Parquet shards, committed as the run goes.

Beam's file sinks commit every shard at the end of the run, so a run that dies keeps
nothing. Here each worker writes a shard every `commit_rows` rows (or `commit_s` seconds)
and at the end of each bundle: written under a temporary name, then renamed, so a reader
never sees half a file and `--resume` after a crash skips what was committed.

A runner may retry a bundle, and where a bundle is cut into shards depends on the clock, so
a retry can cut it elsewhere. Each shard's name therefore carries a key of its bundle (from
the bundle's first row) and a digest of its image_ids; when a bundle finishes, its writer
deletes the shards under its key that it did not write itself, which are what an earlier
attempt of the same bundle committed. A retry leaves each image's rows exactly once, as long
as it meets the same first row (Beam replays a bundle's elements in order).
"""

from __future__ import annotations

import hashlib
import io
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import FixedWindows, TimestampedValue
from apache_beam.utils.timestamp import Duration

from synthsieve.counters import SHARDS_REPLACED, SHARDS_WRITTEN, counter
from synthsieve.io import commits
from synthsieve.io.filesystems import use_gcs_emulator_credentials

__all__ = [
    "ERRORS_DIR", "ROWS_PER_BATCH", "SCORES_DIR", "WriteTable", "WriteWindowedTable",
    "WrittenShard",
    "iter_run_batches", "read_run_table", "run_shards", "shard_name", "window_dir", "write_shard",
]

SCORES_DIR = "scores"
ERRORS_DIR = "errors"
ROWS_PER_BATCH = 256  # rows a writer converts to one Arrow batch while it waits to commit


def shard_name(run_id: str, digest: str) -> str:
    """Shards of one run share a prefix, so several runs can write into one directory."""
    return f"part-{run_id}-{digest}.parquet"


def _bundle_key(image_id: str) -> str:
    return "b" + hashlib.sha256(image_id.encode()).hexdigest()[:12]


def run_shards(out_dir: str, table: str, run_id: str) -> str:
    """The glob matching every shard one run wrote to one table."""
    return FileSystems.join(out_dir, table, shard_name(run_id, "*"))


def read_run_table(out_dir: str, table: str, run_id: str, columns: list[str]) -> pa.Table:
    """The columns of what one run wrote to one table (an empty table if nothing), whole:
    for small runs (an eval's labelled set); a summary reads iter_run_batches instead."""
    batches = list(iter_run_batches(out_dir, table, run_id, columns))
    return pa.Table.from_batches(batches) if batches else pa.table(
        {c: pa.array([], type=pa.null()) for c in columns})


def iter_run_batches(out_dir: str, table: str, run_id: str, columns: list[str],
                     batch_rows: int = 65_536) -> Iterator[pa.RecordBatch]:
    """The columns of what one run wrote to one table, a bounded batch at a time: a
    summary of a run of millions of rows must not hold them all."""
    for match in FileSystems.match([run_shards(out_dir, table, run_id)])[0].metadata_list:
        with FileSystems.open(match.path) as fh:
            yield from pq.ParquetFile(fh).iter_batches(batch_size=batch_rows, columns=columns)


class _WriteShards(beam.DoFn):
    def __init__(self, directory: str, run_id: str, schema: pa.Schema, commit_rows: int,
                 commit_s: float):
        self._dir = directory
        self._run_id = run_id
        self._schema = schema
        self._commit_rows = commit_rows
        self._commit_s = commit_s
        self._shards = counter(SHARDS_WRITTEN)
        self._replaced = counter(SHARDS_REPLACED)

    def setup(self) -> None:
        use_gcs_emulator_credentials()

    def start_bundle(self) -> None:
        self._key: str | None = None
        self._written: set[str] = set()
        self._rows: list[dict[str, Any]] = []
        # Rows wait for their commit as Arrow batches: a score row in columns takes a
        # fraction of the memory of the same row as a Python dict (bench/memory.py).
        self._batches: list[pa.RecordBatch] = []
        self._pending = 0
        self._since = time.monotonic()

    def process(self, row: dict[str, Any]) -> None:
        if self._key is None:
            self._key = _bundle_key(str(row["image_id"]))
        self._rows.append(row)
        self._pending += 1
        if len(self._rows) >= ROWS_PER_BATCH:
            self._to_batch()
        if (self._pending >= self._commit_rows
                or time.monotonic() - self._since >= self._commit_s):
            self._commit()

    def finish_bundle(self) -> None:
        self._commit()
        if self._key is not None:
            self._delete_earlier_attempts(self._key)

    def _delete_earlier_attempts(self, key: str) -> None:
        pattern = FileSystems.join(self._dir, shard_name(self._run_id, f"{key}-*"))
        found = FileSystems.match([pattern])[0].metadata_list
        # by file name: a glob and a join may spell the directory differently
        stale = [m.path for m in found if FileSystems.split(m.path)[1] not in self._written]
        if stale:
            FileSystems.delete(stale)
            self._replaced.inc(len(stale))

    def _to_batch(self) -> None:
        if self._rows:
            self._batches.append(pa.RecordBatch.from_pylist(self._rows, schema=self._schema))
            self._rows = []

    def _commit(self) -> None:
        self._to_batch()
        batches, self._batches, self._pending = self._batches, [], 0
        self._since = time.monotonic()
        if batches:
            path = write_shard(self._dir, self._run_id, self._schema,
                               pa.Table.from_batches(batches, schema=self._schema),
                               prefix=f"{self._key}-")
            self._written.add(FileSystems.split(path)[1])
            self._shards.inc()


def write_shard(directory: str, run_id: str, schema: pa.Schema,
                rows: list[dict[str, Any]] | pa.Table, prefix: str = "") -> str:
    """Writes rows as one Parquet shard: a temporary name, then a rename. Returns its path."""
    table = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(rows, schema=schema)
    ids = "\n".join(sorted(str(i) for i in table.column("image_id").to_pylist()))
    digest = hashlib.sha256(ids.encode()).hexdigest()[:20]
    name = shard_name(run_id, prefix + digest)
    final = FileSystems.join(directory, name)
    temp = FileSystems.join(directory, f".tmp-{name}.{uuid.uuid4().hex[:8]}")
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    with FileSystems.create(temp) as fh:
        fh.write(buf.getvalue())
    # A retried bundle has the same rows, so the same name: the rename replaces it.
    FileSystems.rename([temp], [final])
    return final


class WriteTable(beam.PTransform):
    """Rows (dicts with the schema's columns) -> DIR/<table>/part-<run_id>-<digest>.parquet."""

    def __init__(self, out_dir: str, table: str, schema: pa.Schema, run_id: str,
                 commit_rows: int = 5000, commit_s: float = 60.0):
        """
        Args:
          out_dir: the run's output directory (local, gs:// or s3://).
          table: scores or errors.
          schema: the table's schema (synthsieve/schema.py).
          run_id: names the shards, so runs into one directory stay apart.
          commit_rows: rows per committed shard and worker.
          commit_s: commit at least this often while rows keep coming.
        """
        super().__init__()
        self._dir = FileSystems.join(out_dir, table)
        self._schema = schema
        self._run_id = run_id
        self._commit_rows = commit_rows
        self._commit_s = commit_s

    def expand(self, rows: beam.PCollection) -> beam.PCollection:
        return rows | "WriteShards" >> beam.ParDo(_WriteShards(
            self._dir, self._run_id, self._schema, self._commit_rows, self._commit_s))


def window_dir(start: Any) -> str:
    """`window=20261123T074000Z`: a Hive-style partition that DuckDB and Spark read."""
    stamp = start.to_utc_datetime().strftime("%Y%m%dT%H%M%SZ")
    return f"window={stamp}"


class WrittenShard(NamedTuple):
    """One Parquet file a windowed writer committed."""

    path: str
    rows: int
    window: str  # window_dir's name: window=<start>


class _WriteWindow(beam.DoFn):
    def __init__(self, directory: str, run_id: str, schema: pa.Schema):
        self._dir = directory
        self._run_id = run_id
        self._schema = schema
        self._shards = counter(SHARDS_WRITTEN)

    def setup(self) -> None:
        use_gcs_emulator_credentials()

    def process(self, keyed: tuple[int, Iterable[dict[str, Any]]],
                window: Any = beam.DoFn.WindowParam) -> Iterable[WrittenShard]:
        rows = list(keyed[1])
        if rows:
            name = window_dir(window.start)
            path = write_shard(FileSystems.join(self._dir, name), self._run_id,
                               self._schema, rows)
            self._shards.inc()
            # only now may the messages these rows came from be acknowledged
            commits.committed(self._run_id, [str(r["image_id"]) for r in rows])
            yield WrittenShard(path, len(rows), name)


class WriteWindowedTable(beam.PTransform):
    """Streaming rows -> DIR/<table>/window=<start>/part-<run_id>-<digest>.parquet, one set of
    files per fixed window, written when the window closes (the watermark passes its end).
    Outputs a WrittenShard per file."""

    def __init__(self, out_dir: str, table: str, schema: pa.Schema, run_id: str,
                 window_s: float, shards: int = 4):
        """
        Args:
          out_dir: the job's output directory (local, gs:// or s3://).
          table: scores or errors.
          schema: the table's schema (synthsieve/schema.py).
          run_id: names the shards.
          window_s: seconds per fixed window.
          shards: files per window and table.
        """
        super().__init__()
        self._dir = FileSystems.join(out_dir, table)
        self._schema = schema
        self._run_id = run_id
        self._window_s = window_s
        self._shards = shards

    def expand(self, rows: beam.PCollection) -> beam.PCollection:
        shards = self._shards
        return (rows
                # BatchElements (reading, inference) emits at the end of the global window,
                # so rows no longer carry their message's time: window them by when they
                # were processed, which is also what "a file set per window" means here.
                | "StampNow" >> beam.Map(lambda r: TimestampedValue(r, time.time()))
                | "Window" >> beam.WindowInto(
                    FixedWindows(self._window_s),
                    # a row that reaches a closed window still gets written (another shard
                    # in that window), never dropped
                    allowed_lateness=Duration(seconds=int(self._window_s * 100)))
                | "ToShard" >> beam.Map(
                    lambda r: (int(hashlib.sha256(str(r["image_id"]).encode()).hexdigest(), 16)
                               % shards, r))
                | "PerWindow" >> beam.GroupByKey()
                | "WriteWindow" >> beam.ParDo(_WriteWindow(self._dir, self._run_id,
                                                           self._schema)))
