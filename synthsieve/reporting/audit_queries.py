"""What `synthsieve report` shows, computed with DuckDB over the audit's Parquet files.

Each image counts once: its latest row (by processed_at) across the runs and windows in the
directory, whether that row is in scores or in errors. Remote audit directories (gs://,
s3://) are first copied to a temporary directory through Beam's FileSystems, because
DuckDB would otherwise need its httpfs extension, which it downloads at run time.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import duckdb
from apache_beam.io.filesystems import FileSystems

from synthsieve.io.filesystems import is_remote
from synthsieve.io.sinks import ERRORS_DIR, SCORES_DIR
from synthsieve.reporting.gallery import gallery
from synthsieve.reporting.gallery import query_rows as _rows

__all__ = ["HIST_BINS", "LocalCopy", "audit_report"]

HIST_BINS = 20


class LocalCopy:
    """The audit directory as a local path (a temporary copy for remote ones)."""

    def __init__(self, audit_dir: str):
        self.audit_dir = audit_dir
        self._tmp: str | None = None

    def __enter__(self) -> Path:
        if not is_remote(self.audit_dir):
            return Path(self.audit_dir)
        self._tmp = tempfile.mkdtemp(prefix="synthsieve-report-")
        pattern = FileSystems.join(self.audit_dir, "**")
        for meta in FileSystems.match([pattern])[0].metadata_list:
            rel = meta.path[len(self.audit_dir.rstrip("/")) + 1:]
            if not (rel.endswith(".parquet") or rel == "summary.json"):
                continue
            dest = Path(self._tmp) / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            with FileSystems.open(meta.path) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out)
        return Path(self._tmp)

    def __exit__(self, *exc: object) -> None:
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)


def _files(root: Path, table: str) -> list[str]:
    return sorted(str(p) for p in (root / table).rglob("*.parquet")
                  if not p.name.startswith("."))


def _load(con: duckdb.DuckDBPyConnection, root: Path, prefix: str) -> None:
    """Views {prefix}_scores, {prefix}_errors and {prefix}_images (one row per image)."""
    for table in (SCORES_DIR, ERRORS_DIR):
        files = _files(root, table)
        if files:
            con.execute(f"CREATE VIEW {prefix}_{table}_all AS SELECT * FROM "
                        f"read_parquet({files!r}, union_by_name = true)")
        elif table == SCORES_DIR:
            con.execute(f"CREATE VIEW {prefix}_scores_all AS SELECT NULL::VARCHAR AS "
                        "image_id, NULL::VARCHAR AS uri, NULL::TIMESTAMPTZ AS processed_at, "
                        "NULL::VARCHAR AS verdict WHERE false")
        else:
            con.execute(f"CREATE VIEW {prefix}_errors_all AS SELECT NULL::VARCHAR AS "
                        "image_id, NULL::VARCHAR AS uri, NULL::TIMESTAMPTZ AS processed_at, "
                        "NULL::VARCHAR AS stage, NULL::VARCHAR AS error_type WHERE false")
    con.execute(f"""
        CREATE VIEW {prefix}_images AS
        SELECT * FROM (
            SELECT image_id, uri, processed_at, 'score' AS kind FROM {prefix}_scores_all
            UNION ALL
            SELECT image_id, uri, processed_at, 'error' AS kind FROM {prefix}_errors_all)
        QUALIFY row_number() OVER (PARTITION BY image_id ORDER BY processed_at DESC) = 1""")
    con.execute(f"""CREATE VIEW {prefix}_scores AS SELECT s.* FROM {prefix}_scores_all s
        JOIN {prefix}_images i USING (image_id, processed_at) WHERE i.kind = 'score'""")
    con.execute(f"""CREATE VIEW {prefix}_errors AS SELECT e.* FROM {prefix}_errors_all e
        JOIN {prefix}_images i USING (image_id, processed_at) WHERE i.kind = 'error'""")


def _counts(con: duckdb.DuckDBPyConnection, sql: str) -> dict[str, int]:
    return {str(k): int(v) for k, v in con.execute(sql).fetchall()}


def _has(con: duckdb.DuckDBPyConnection, view: str, column: str) -> bool:
    cols = {r[0] for r in con.execute(f"DESCRIBE {view}").fetchall()}
    return column in cols


def audit_report(audit_dir: str, previous_dir: str | None = None) -> dict[str, Any]:
    """The report as a dict (what --format json prints and the HTML renders)."""
    with LocalCopy(audit_dir) as root:
        con = duckdb.connect()
        _load(con, root, "a")
        report = _single(con, root, audit_dir)
        if previous_dir:
            with LocalCopy(previous_dir) as other:
                _load(con, other, "b")
                report["diff"] = _diff(con, previous_dir)
        con.close()
    return report


def _single(con: duckdb.DuckDBPyConnection, root: Path, audit_dir: str) -> dict[str, Any]:
    scores = con.execute("SELECT count(*) FROM a_scores").fetchone()[0]
    errors = con.execute("SELECT count(*) FROM a_errors").fetchone()[0]
    inputs = None
    summaries = [json.loads(p.read_text()) for p in root.glob("summary.json")]
    if summaries and summaries[0].get("inputs") is not None:
        inputs = summaries[0]["inputs"]
    has_evidence = _has(con, "a_scores", "evidence_verdict")
    report: dict[str, Any] = {
        "audit": audit_dir,
        "totals": {"images": scores + errors, "scores": scores, "errors": errors,
                   "inputs_in_summary": inputs,
                   "accounted_for": None if inputs is None else inputs == scores + errors},
        "verdicts": _counts(con, "SELECT coalesce(verdict, 'no score'), count(*) FROM "
                                 "a_scores GROUP BY 1 ORDER BY 2 DESC"),
        "evidence_verdicts": _counts(con, "SELECT coalesce(evidence_verdict, 'none'), "
                                          "count(*) FROM a_scores GROUP BY 1 ORDER BY 2 DESC")
        if has_evidence else {},
        "histogram": [int(v) for v in (con.execute(f"""
            SELECT list(coalesce(n, 0) ORDER BY b) FROM range({HIST_BINS}) t(b) LEFT JOIN (
              SELECT least(floor(ai_generated * {HIST_BINS}), {HIST_BINS - 1})::INT AS b,
                     count(*) AS n
              FROM a_scores WHERE ai_generated IS NOT NULL GROUP BY 1) USING (b)
            """).fetchone()[0] or [])],
        "sources": _counts(con, "SELECT source, count(*) FROM a_scores WHERE source NOT IN "
                                "('none', 'inconclusive') GROUP BY 1 ORDER BY 2 DESC"),
        "errors_by_stage": _counts(con, "SELECT stage, count(*) FROM a_errors GROUP BY 1 "
                                        "ORDER BY 2 DESC"),
        "errors_by_type": _counts(con, "SELECT stage || '/' || error_type, count(*) FROM "
                                       "a_errors GROUP BY 1 ORDER BY 2 DESC"),
    }
    if has_evidence:
        report["provenance_sources"] = _counts(
            con, "SELECT provenance_source, count(*) FROM a_scores WHERE provenance_source "
                 "IS NOT NULL GROUP BY 1 ORDER BY 2 DESC")
        report["provenance_coverage"] = _rows(con, """
            SELECT count(*) FILTER (WHERE c2pa.present) AS c2pa,
                   count(*) FILTER (WHERE c2pa.validation_state IN ('valid', 'trusted'))
                       AS c2pa_valid,
                   count(*) FILTER (WHERE xmp IS NOT NULL) AS xmp,
                   count(*) FILTER (WHERE exif IS NOT NULL) AS exif,
                   count(*) FILTER (WHERE generation_params.tool IS NOT NULL)
                       AS generator_text,
                   count(*) FILTER (WHERE watermark.scheme NOT IN ('none')) AS watermark,
                   count(*) FILTER (WHERE c2pa IS NULL AND xmp IS NULL AND exif IS NULL
                                    AND generation_params IS NULL
                                    AND coalesce(watermark.scheme, 'none') = 'none')
                       AS no_provenance
            FROM a_scores""")[0]
        report["agreement"] = _rows(con, """
            SELECT coalesce(verdict, 'no score') AS pixels,
                   coalesce(evidence_verdict, 'none') AS evidence, count(*) AS images
            FROM a_scores GROUP BY ALL ORDER BY images DESC""")
    report["run"] = _run(con, summaries[0] if summaries else {})
    report["gallery"] = gallery(con, has_evidence)
    verdict = "evidence_verdict" if has_evidence else "verdict"
    report["top_prefixes"] = _rows(con, f"""
        WITH p AS (
          SELECT CASE WHEN regexp_matches(uri, '^https?://')
                      THEN regexp_extract(uri, '^https?://([^/]+)', 1)
                      ELSE regexp_replace(uri, '/[^/]*$', '') END AS prefix,
                 {verdict} = 'ai_generated' AS ai
          FROM a_scores)
        SELECT prefix, count(*) AS images, round(avg(ai::INT), 3) AS ai_share
        FROM p GROUP BY 1 ORDER BY ai_share DESC, images DESC LIMIT 10""")
    return report


RUN_KEYS = ("run_id", "model", "backend", "thresholds", "sources", "wall_s", "images_per_s")


def _run(con: duckdb.DuckDBPyConnection, summary: dict[str, Any]) -> dict[str, Any]:
    """What ran: the last run's summary.json, and the span of the rows' processed_at (all
    runs in the directory); models and backends from the rows when there is no summary."""
    run = {k: summary.get(k) for k in RUN_KEYS}
    first, last = con.execute("SELECT min(processed_at), max(processed_at) FROM a_images"
                              ).fetchone()
    run["first_row_at"] = first.isoformat(timespec="seconds") if first else None
    run["last_row_at"] = last.isoformat(timespec="seconds") if last else None
    if not summary and _has(con, "a_scores", "model"):
        run["model"] = ", ".join(sorted(str(m) for (m,) in con.execute(
            "SELECT DISTINCT model FROM a_scores WHERE model IS NOT NULL").fetchall())) or None
        run["backend"] = ", ".join(sorted(str(b) for (b,) in con.execute(
            "SELECT DISTINCT backend FROM a_scores WHERE backend IS NOT NULL").fetchall())
        ) or None
    return run


def _diff(con: duckdb.DuckDBPyConnection, previous_dir: str) -> dict[str, Any]:
    column = "evidence_verdict" if _has(con, "a_scores", "evidence_verdict") and _has(
        con, "b_scores", "evidence_verdict") else "verdict"
    changes = _rows(con, f"""
        SELECT coalesce(b.{column}, 'error') AS before, coalesce(a.{column}, 'error') AS now,
               count(*) AS images
        FROM a_images ai JOIN b_images bi USING (image_id)
        LEFT JOIN a_scores a USING (image_id) LEFT JOIN b_scores b USING (image_id)
        WHERE coalesce(a.{column}, 'error') <> coalesce(b.{column}, 'error')
        GROUP BY ALL ORDER BY images DESC""")
    examples = _rows(con, f"""
        SELECT ai.image_id, ai.uri, coalesce(b.{column}, 'error') AS before,
               coalesce(a.{column}, 'error') AS now,
               round(b.ai_generated, 3) AS score_before, round(a.ai_generated, 3) AS score_now
        FROM a_images ai JOIN b_images bi USING (image_id)
        LEFT JOIN a_scores a USING (image_id) LEFT JOIN b_scores b USING (image_id)
        WHERE coalesce(a.{column}, 'error') <> coalesce(b.{column}, 'error')
        ORDER BY ai.image_id LIMIT 50""")
    only_now, only_before = con.execute("""
        SELECT (SELECT count(*) FROM a_images WHERE image_id NOT IN
                  (SELECT image_id FROM b_images)),
               (SELECT count(*) FROM b_images WHERE image_id NOT IN
                  (SELECT image_id FROM a_images))""").fetchone()
    return {"previous": previous_dir, "column": column, "changed": changes,
            "examples": examples, "only_in_this_audit": only_now,
            "only_in_previous": only_before}
