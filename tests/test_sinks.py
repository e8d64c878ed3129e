"""A bundle that the runner retries leaves each image's row in the table exactly once,
however the clock cut each attempt into shards."""

from __future__ import annotations

import pyarrow.parquet as pq

from synthsieve.io.sinks import _WriteShards
from synthsieve.schema import ERRORS_SCHEMA, STAGE_READ, error_row


def _rows(n: int) -> list[dict]:
    return [error_row(image_id=f"img-{i:04d}", uri=f"/c/{i}.jpg", stage=STAGE_READ,
                      error_type="not_found", message="gone", run_id="r1")
            for i in range(n)]


def _attempt(directory, rows, commit_rows: int, commit_s: float, finish: bool) -> None:
    writer = _WriteShards(str(directory), "r1", ERRORS_SCHEMA, commit_rows, commit_s)
    writer.setup()
    writer.start_bundle()
    for row in rows:
        writer.process(row)
    if finish:
        writer.finish_bundle()


def _ids(directory) -> list[str]:
    return [i for f in sorted(directory.glob("part-*.parquet"))
            for i in pq.read_table(f, columns=["image_id"]).column("image_id").to_pylist()]


def test_a_retried_bundle_cut_differently_leaves_each_row_once(tmp_path):
    rows = _rows(300)
    # first attempt: the timer commits after every row, then the worker dies mid-bundle
    _attempt(tmp_path, rows[:120], commit_rows=10_000, commit_s=0.0, finish=False)
    assert len(list(tmp_path.glob("part-*.parquet"))) == 120
    # the retry replays the bundle and, faster this time, commits it as one shard
    _attempt(tmp_path, rows, commit_rows=10_000, commit_s=3600.0, finish=True)
    ids = _ids(tmp_path)
    assert sorted(ids) == [r["image_id"] for r in rows]  # every row once, no duplicates


def test_a_retry_that_cuts_more_finely_also_replaces_the_first_attempt(tmp_path):
    rows = _rows(50)
    _attempt(tmp_path, rows, commit_rows=10_000, commit_s=3600.0, finish=True)
    _attempt(tmp_path, rows, commit_rows=7, commit_s=3600.0, finish=True)
    assert sorted(_ids(tmp_path)) == [r["image_id"] for r in rows]
    assert len(list(tmp_path.glob("part-*.parquet"))) == 8  # the second attempt's cut


def test_other_bundles_shards_are_left_alone(tmp_path):
    rows = _rows(40)
    _attempt(tmp_path, rows[:20], commit_rows=5, commit_s=3600.0, finish=True)
    _attempt(tmp_path, rows[20:], commit_rows=5, commit_s=3600.0, finish=True)
    assert sorted(_ids(tmp_path)) == [r["image_id"] for r in rows]
