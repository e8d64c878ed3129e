"""`synthsieve report`: one HTML page (or JSON) summarising an audit."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["add_parser", "run"]

from synthsieve.cli.args import counted, refuse


def add_parser(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser(
        "report", help="one HTML page (or JSON) summarising an audit, optionally against "
                       "an earlier one",
        description=(
            "DuckDB over an audit's Parquet files: totals and inputs == scores + errors, "
            "verdicts, the score histogram, generators named, provenance coverage, evidence "
            "against pixels, errors by stage and type, prefixes and hosts by AI share; with "
            "PREVIOUS_DIR, what changed verdict. Each image counts once (its latest row)."),
    )
    a.add_argument("audit_dir", metavar="AUDIT_DIR", help="an audit's --out directory")
    a.add_argument("previous_dir", nargs="?", default=None, metavar="PREVIOUS_DIR",
                   help="an earlier audit of the same inputs to compare with")
    a.add_argument("--out", required=True, metavar="FILE", help="the page (or JSON) to write")
    a.add_argument("--format", choices=("html", "json"), default="html",
                   help="one self-contained HTML page, or the same figures as JSON "
                        "(default: html)")


def run(args: argparse.Namespace) -> int:
    from synthsieve.reporting.audit_html import render
    from synthsieve.reporting.audit_queries import audit_report

    for d in filter(None, (args.audit_dir, args.previous_dir)):
        if "://" not in d and not (Path(d) / "summary.json").is_file() \
                and not (Path(d) / "scores").is_dir():
            return refuse("report", f"{d} holds no audit (no summary.json or scores/)")
    if not Path(args.out).resolve().parent.is_dir():
        return refuse("report", f"the folder of --out {args.out} does not exist")
    try:
        report = audit_report(args.audit_dir, args.previous_dir)
    except Exception as e:  # duckdb and filesystem errors alike: say which and stop
        return refuse("report", f"{type(e).__name__}: {e}")
    text = (json.dumps(report, indent=2, default=str) if args.format == "json"
            else render(report))
    Path(args.out).write_text(text)
    t = report["totals"]
    print(f"{args.out}: {counted(t['images'], 'image')} ({t['scores']} scored, "
          f"{counted(t['errors'], 'error')})")
    if t["accounted_for"] is None:
        print(f"synthsieve report: {args.audit_dir} does not say how many inputs it had, so "
              "inputs == scores + errors is unchecked", file=sys.stderr)
        return 5
    return 0 if t["accounted_for"] else 1
