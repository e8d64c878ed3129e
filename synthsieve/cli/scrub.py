"""`synthsieve scrub`: act on an audit (kept and removed manifests, quarantine)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["add_parser", "run"]

from synthsieve.cli.args import refuse


def add_parser(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser(
        "scrub", help="act on an audit: kept and removed manifests, optional quarantine",
        description=(
            "Applies a policy (YAML; the documented default when --policy is omitted) to an "
            "audit's tables: writes OUT/kept.jsonl and OUT/removed.jsonl (image_id, uri, the "
            "input manifest's other columns, reason) and OUT/summary.json. It is a dry run "
            "unless --apply: copy or move copies (moves) each removed object to "
            "TO/<scheme>/<bucket>/<path> through Beam's FileSystems; re-running skips what "
            "is already there. Nothing is deleted without --apply move."),
    )
    a.add_argument("audit_dir", metavar="AUDIT_DIR", help="an audit's --out directory")
    a.add_argument("--out", required=True, metavar="DIR",
                   help="where kept.jsonl, removed.jsonl and summary.json go")
    a.add_argument("--policy", default=None, metavar="YAML",
                   help="which images to remove (default: evidence_verdict ai_generated, "
                        "or provenance that says AI; README, Scrubbing)")
    a.add_argument("--apply", choices=("copy", "move"), default=None,
                   help="copy or move each removed object to --to (default: a dry run "
                        "that only writes the lists)")
    a.add_argument("--to", default=None, metavar="URI", help="the quarantine location")


def run(args: argparse.Namespace, beam_args: list[str]) -> int:
    from synthsieve.pipelines.scrub import Policy, PolicyError, ScrubConfig, run_scrub

    try:
        policy = Policy.from_yaml(Path(args.policy).read_text()) if args.policy else Policy()
    except (OSError, PolicyError, TypeError) as e:
        return refuse("scrub", f"--policy: {e}")
    cfg = ScrubConfig(audit_dir=args.audit_dir, out_dir=args.out, policy=policy,
                      apply=args.apply, to=args.to)
    from synthsieve.cli.console import ConsoleProgress, shown_here
    from synthsieve.pipelines.scrub import table_rows

    shown = args.apply is not None and shown_here(args.quiet, beam_args)
    try:
        with ConsoleProgress("scrub", lambda: table_rows(cfg.audit_dir), enabled=shown):
            summary = run_scrub(cfg, beam_args)
    except (ValueError, FileNotFoundError) as e:
        return refuse("scrub", str(e))
    print(json.dumps(summary, indent=2))
    if summary["kept"] is None:
        print("synthsieve scrub: the runner's counters could not be read, so how many images "
              "were kept and removed is unknown; see the manifests under --out", file=sys.stderr)
        return 5
    return 1 if summary["actions"].get("failed") else 0
