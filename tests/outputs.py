"""What an audit wrote to a local DIR, read back for the tests' assertions."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def table(out: Path, name: str) -> pa.Table:
    """All shards of DIR/<name> (scores or errors) as one table."""
    return pa.concat_tables([pq.read_table(f) for f in sorted((out / name).glob("*.parquet"))])


def rows(out: Path, name: str) -> list[dict]:
    """All rows of DIR/<name>, or [] when nothing was written there."""
    return table(out, name).to_pylist() if any((out / name).glob("*.parquet")) else []
