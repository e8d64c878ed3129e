"""Writes the scores and errors tables as Parquet shards, committed as the run goes.

Beam's file sinks commit every shard at the end of the run, so a run that dies keeps
nothing. Here each worker writes a shard every `commit_rows` rows (or `commit_s` seconds)
and at the end of each bundle: written under a temporary name, then renamed, so a reader
never sees half a file and `--resume` after a crash skips what was committed. A shard's name
is derived from the image_ids it holds, so a bundle that the runner retries rewrites the
same files instead of adding duplicates.
"""

from __future__ import annotations

import hashlib
import io
import time
import uuid
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from synthsieve.filesystems import use_gcs_emulator_credentials

SCORES_DIR = "scores"
ERRORS_DIR = "errors"


def shard_name(run_id: str, digest: str) -> str:
    """Shards of one run share a prefix, so several runs can write into one directory."""
    return f"part-{run_id}-{digest}.parquet"


def run_shards(out_dir: str, table: str, run_id: str) -> str:
    """The glob matching every shard one run wrote to one table."""
    return FileSystems.join(out_dir, table, shard_name(run_id, "*"))


def read_run_table(out_dir: str, table: str, run_id: str, columns: list[str]) -> pa.Table:
    """The columns of what one run wrote to one table (an empty table if nothing)."""
    tables = []
    for match in FileSystems.match([run_shards(out_dir, table, run_id)])[0].metadata_list:
        with FileSystems.open(match.path) as fh:
            tables.append(pq.read_table(fh, columns=columns))
    return pa.concat_tables(tables) if tables else pa.table(
        {c: pa.array([], type=pa.null()) for c in columns})


class _WriteShards(beam.DoFn):
    def __init__(self, directory: str, run_id: str, schema: pa.Schema, commit_rows: int,
                 commit_s: float):
        self._dir = directory
        self._run_id = run_id
        self._schema = schema
        self._commit_rows = commit_rows
        self._commit_s = commit_s
        self._shards = Metrics.counter("synthsieve", "shards_written")

    def setup(self) -> None:
        use_gcs_emulator_credentials()

    def start_bundle(self) -> None:
        self._rows: list[dict[str, Any]] = []
        self._since = time.monotonic()

    def process(self, row: dict[str, Any]) -> None:
        self._rows.append(row)
        if (len(self._rows) >= self._commit_rows
                or time.monotonic() - self._since >= self._commit_s):
            self._commit()

    def finish_bundle(self) -> None:
        self._commit()

    def _commit(self) -> None:
        rows, self._rows = self._rows, []
        self._since = time.monotonic()
        if not rows:
            return
        ids = "\n".join(sorted(str(r.get("image_id")) for r in rows))
        digest = hashlib.sha256(ids.encode()).hexdigest()[:20]
        name = shard_name(self._run_id, digest)
        final = FileSystems.join(self._dir, name)
        temp = FileSystems.join(self._dir, f".tmp-{name}.{uuid.uuid4().hex[:8]}")
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows, schema=self._schema), buf, compression="zstd")
        with FileSystems.create(temp) as fh:
            fh.write(buf.getvalue())
        # A retried bundle has the same rows, so the same name: the rename replaces it.
        FileSystems.rename([temp], [final])
        self._shards.inc()


class WriteTable(beam.PTransform):
    """Rows (dicts with the schema's columns) -> DIR/<table>/part-<run_id>-<digest>.parquet."""

    def __init__(self, out_dir: str, table: str, schema: pa.Schema, run_id: str,
                 commit_rows: int = 5000, commit_s: float = 60.0):
        super().__init__()
        self._dir = FileSystems.join(out_dir, table)
        self._schema = schema
        self._run_id = run_id
        self._commit_rows = commit_rows
        self._commit_s = commit_s

    def expand(self, rows: beam.PCollection) -> beam.PCollection:
        return rows | "WriteShards" >> beam.ParDo(_WriteShards(
            self._dir, self._run_id, self._schema, self._commit_rows, self._commit_s))
