"""Writes the scores and errors tables as sharded Parquet under the output directory."""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.parquetio import WriteToParquet

SCORES_DIR = "scores"
ERRORS_DIR = "errors"


def table_prefix(out_dir: str, table: str, run_id: str) -> str:
    """Shards of one run share a prefix, so several runs can write into one directory."""
    return FileSystems.join(out_dir, table, f"part-{run_id}")


class WriteTable(beam.PTransform):
    """Rows (dicts with the schema's columns) -> DIR/<table>/part-<run_id>-SSSSS-of-NNNNN.parquet.

    Beam's file sink writes to a temporary directory and renames on finalize, so a reader
    never sees a half-written shard.
    """

    def __init__(self, out_dir: str, table: str, schema: pa.Schema, run_id: str,
                 num_shards: int = 0):
        super().__init__()
        self._prefix = table_prefix(out_dir, table, run_id)
        self._schema = schema
        self._num_shards = num_shards

    def expand(self, rows: beam.PCollection) -> beam.PCollection:
        return rows | "WriteParquet" >> WriteToParquet(
            self._prefix,
            schema=self._schema,
            codec="zstd",
            file_name_suffix=".parquet",
            num_shards=self._num_shards,
        )
