"""The images a reviewer looks at first: the top flagged (highest score first), the
inconclusive, the disagreements between pixels and evidence, and a sample of errors, each
with what decided it and the provenance it carries; and thumbnails for the page, made from
the files themselves (local and bucket sources; an http source is not fetched again)."""

from __future__ import annotations

from typing import Any

import duckdb

from synthsieve.evaluation.report import thumbnail_data_uri
from synthsieve.provenance.evidence import (
    GOOD_SIGNATURE,
    generator_tool,
    signed_ai_source_type,
    watermark_scheme,
    xmp_ai_source_type,
)

__all__ = ["LIMITS", "THUMB_BUDGET_BYTES", "THUMB_SIDE", "badges", "gallery", "query_rows",
           "thumbnail"]

# images per section: at most 250 on the page
LIMITS = {"flagged": 100, "disagreements": 50, "inconclusive": 50, "errors": 50}
THUMB_SIDE = 160
# Thumbnails stop once their JPEGs add up to this: the page stays a file that a mail or a
# ticket takes (the rest of the page is a few hundred KB).
THUMB_BUDGET_BYTES = 3 * 1024 * 1024

_SCORE_COLUMNS = ("image_id, uri, ai_generated, verdict, evidence_verdict, verdict_reason, "
                  "c2pa, xmp, generation_params, watermark")
# tables written before the provenance columns existed: pixels alone
_PIXEL_COLUMNS = ("image_id, uri, ai_generated, verdict, NULL::VARCHAR AS evidence_verdict, "
                  "NULL::VARCHAR AS verdict_reason")


def query_rows(con: duckdb.DuckDBPyConnection, sql: str) -> list[dict[str, Any]]:
    """A query's rows as dicts by column name (audit_queries uses it too)."""
    cur = con.execute(sql)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def gallery(con: duckdb.DuckDBPyConnection, has_evidence: bool) -> dict[str, Any]:
    """{section: {"total": images in it, "items": the first LIMITS[section]}} over the
    views a_scores and a_errors (one row per image)."""
    cols = _SCORE_COLUMNS if has_evidence else _PIXEL_COLUMNS
    decided = "evidence_verdict" if has_evidence else "verdict"
    where = {
        "flagged": f"{decided} = 'ai_generated'",
        "disagreements": ("evidence_verdict IS DISTINCT FROM verdict" if has_evidence
                          else "false"),
        "inconclusive": f"{decided} = 'inconclusive'",
    }
    out: dict[str, Any] = {}
    for section, condition in where.items():
        total = con.execute(f"SELECT count(*) FROM a_scores WHERE {condition}").fetchone()[0]
        items = query_rows(con, f"""SELECT {cols} FROM a_scores WHERE {condition}
            ORDER BY ai_generated DESC NULLS LAST, image_id LIMIT {LIMITS[section]}""")
        for item in items:
            item["badges"] = badges(item)
            for key in ("c2pa", "xmp", "generation_params", "watermark"):
                item.pop(key, None)
        out[section] = {"total": total, "items": items}
    total = con.execute("SELECT count(*) FROM a_errors").fetchone()[0]
    # a sample that shows every kind: the most recent row of each stage and type first
    out["errors"] = {"total": total, "items": query_rows(con, f"""
        SELECT image_id, uri, stage, error_type, message FROM a_errors
        ORDER BY row_number() OVER (PARTITION BY stage, error_type ORDER BY image_id),
                 stage, error_type, image_id
        LIMIT {LIMITS['errors']}""")}
    return out


def badges(row: dict[str, Any]) -> list[str]:
    """Short labels for the provenance a scores row carries."""
    out = []
    c2pa = row.get("c2pa") or {}
    if c2pa.get("present"):
        state = c2pa.get("validation_state") or "unknown"
        ai = " AI" if signed_ai_source_type(row) else ""
        out.append(f"C2PA {state}{ai}" if state in GOOD_SIGNATURE else f"C2PA {state}")
    if xmp_ai_source_type(row):
        out.append("XMP: AI")
    tool = generator_tool(row)
    if tool:
        out.append(f"generator text: {tool}")
    mark = watermark_scheme(row)
    if mark:
        out.append(f"watermark: {mark}")
    return out


def thumbnail(uri: str) -> str | None:
    """A JPEG data URI at most THUMB_SIDE on its longer side (evaluation/report.py makes it
    for both reports); None for an http(s) source or a file that cannot be shown."""
    return thumbnail_data_uri(uri, THUMB_SIDE, quality=70)
