"""`synthsieve audit`: score every image of directories, globs or manifests."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

from synthsieve.cli.args import (
    VENDOR_BACKENDS,
    api_arguments,
    api_config,
    http_arguments,
    job_settings,
    model_and_provenance,
    out_dir_problem,
    positive_int,
    provenance_arguments,
    rate,
    refuse,
    scoring_arguments,
    uri_column_argument,
    uri_columns,
)

__all__ = ["EXIT_CODES", "add_parser", "audit_exit_code", "run"]

EXIT_CODES = """exit codes (audit):
  0  done: every input is a scores or errors row, error rate within --max-error-rate
  1  rows lost: inputs != scores + errors on disk (see summary.json)
  2  usage error (one line on stderr)
  3  the vendor API refused the key or its configuration (401/403, or every first
     request failed the same way, e.g. 404 from a wrong --api-url)
  4  every input failed, or errors / inputs above --max-error-rate
  5  count unknown: the runner's counters could not be read (accounted_for null)"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser(
        "audit",
        help="score every image of directories, globs or manifests and write Parquet tables",
        description=textwrap.fill(
            "Score images for being AI-generated. SOURCE is a directory (recursive), a glob, "
            "or a manifest (.csv, .jsonl, .parquet) with a `uri` or `url` column, an optional "
            "`id` column and other columns carried into `extra`. Any other --option is passed "
            "to Apache Beam (e.g. --direct_num_workers 2 --direct_running_mode "
            "multi_processing, or --runner DaskRunner [--dask_client_address ADDR] with the "
            "dask extra)."
        ),
        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="a directory, glob, gs:// or s3:// prefix, or a manifest (.csv, "
                        ".jsonl, .parquet)")
    a.add_argument("--out", required=True, metavar="DIR",
                   help="output directory: scores/, errors/ and summary.json go here")
    scoring_arguments(a)
    a.add_argument("--commit-every", type=positive_int, default=5000, metavar="N",
                   help="commit a Parquet shard every N rows per worker (default 5000), so a "
                        "run that dies keeps what it did and --resume does only the rest")
    a.add_argument("--resume", action="store_true",
                   help="skip inputs whose image_id already has a row in DIR (any earlier run)")
    uri_column_argument(a)
    a.add_argument("--local-root", action="append", default=None, metavar="DIR",
                   help="local files a manifest names must lie under DIR (repeatable; after "
                        "`..` and symbolic links are resolved): for manifests from others. "
                        "Manifests in buckets or on the web may never name local files")
    a.add_argument("--max-error-rate", type=rate, default=None, metavar="R",
                   help="exit 4 when error rows / inputs is above R (0..1; unset by default: "
                        "only a run in which every input failed exits 4)")
    http_arguments(a)
    api_arguments(a)
    provenance_arguments(a)


def run(args: argparse.Namespace, beam_args: list[str]) -> int:
    from synthsieve.io.sources import (
        SourceError,
        check_manifest,
        classify_source,
        count_references,
        lists_nothing,
    )
    from synthsieve.pipelines.audit import AuditConfig, run_audit

    try:
        for s in args.sources:
            kind, pattern = classify_source(s)
            if kind == "manifest" and "://" not in pattern and Path(pattern).is_file():
                check_manifest(pattern, uri_columns(args))
            elif kind == "files" and "://" not in pattern and lists_nothing(pattern):
                raise SourceError(f"{s} lists no file")
    except SourceError as e:
        return refuse("audit", str(e))
    problem = out_dir_problem(args.out)
    if problem:
        return refuse("audit", problem)
    loaded = model_and_provenance("audit", args, beam_args)
    if loaded is None:
        return 2
    provenance = loaded[1]
    try:
        api = api_config(args)
    except ValueError as e:
        return refuse("audit", str(e))
    if args.dry_run and args.backend not in VENDOR_BACKENDS:
        return refuse("audit", "--dry-run is for vendor backends (hive, nim, sightengine)")
    cfg = AuditConfig(sources=list(args.sources), uri_columns=uri_columns(args),
                      resume=args.resume,
                      commit_rows=args.commit_every, dry_run=args.dry_run,
                      **job_settings(args, provenance, api))
    from synthsieve.cli.console import ConsoleProgress, shown_here, summary_lines
    from synthsieve.inference.remote import ApiAuthError, ApiKeyMissing
    from synthsieve.runners.choice import RunnerUnavailable, UnsafeRunnerMode

    shown = not args.dry_run and shown_here(args.quiet, beam_args)
    # --resume skips inputs already done, which a count of the sources cannot know
    count = None if args.resume else (lambda: count_references(cfg.sources))
    try:
        with ConsoleProgress("audit", count, enabled=shown):
            summary = run_audit(cfg, beam_args)
    except ApiKeyMissing as e:
        return refuse("audit", str(e))
    except ApiAuthError as e:
        return refuse("audit", str(e), 3)
    except (RunnerUnavailable, UnsafeRunnerMode) as e:
        return refuse("audit", str(e))
    print(json.dumps(summary, indent=2))
    if summary.get("dry_run"):
        return 0
    if not args.quiet:
        for line in summary_lines("audit", summary, cfg.out_dir,
                                  f"synthsieve report {cfg.out_dir} --out "
                                  f"{cfg.out_dir.rstrip('/')}/report.html"):
            print(line, file=sys.stderr)
    return audit_exit_code(summary, args.max_error_rate)


def audit_exit_code(summary: dict, max_error_rate: float | None) -> int:
    """The exit code a scheduler reads (README, "Exit codes"); says why on stderr."""
    for e in summary.get("top_errors", []):
        print(f"synthsieve audit: {e['count']} x {e['stage']}/{e['error_type']}: "
              f"{e['message']}", file=sys.stderr)
    if summary["accounted_for"] is None:
        return refuse("audit", "the runner's counters could not be read, so whether every "
                      "input got a row is unknown (summary.json: accounted_for null)", 5)
    if not summary["accounted_for"]:
        return refuse("audit", "inputs != scores + errors; see summary.json", 1)
    inputs, errors = summary["inputs"], summary["errors"]
    if inputs == 0 and summary.get("skipped_by_resume"):
        return 0  # --resume found every input already done
    if inputs == 0:
        return refuse("audit", f"{', '.join(summary['sources'])} listed no input")
    if errors == inputs:
        return refuse("audit", f"every input failed ({errors} error rows)", 4)
    if max_error_rate is not None and errors / inputs > max_error_rate:
        return refuse("audit", f"{errors} of {inputs} inputs failed ({errors / inputs:.1%}), "
                      f"above --max-error-rate {max_error_rate}", 4)
    return 0
