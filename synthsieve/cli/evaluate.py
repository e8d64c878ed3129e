"""`synthsieve eval`: measure a model on a labelled manifest."""

from __future__ import annotations

import argparse
from pathlib import Path

from synthsieve.cli.args import (
    http_arguments,
    http_config,
    model_and_provenance,
    positive_float,
    positive_int,
    provenance_arguments,
    refuse,
    uri_column_argument,
    uri_columns,
)
from synthsieve.models import DEFAULT_MODEL_DIR

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    from synthsieve.evaluation.perturb import CONDITIONS

    e = sub.add_parser(
        "eval",
        help="measure a model on a labelled manifest, as-is and after recompression/resizing",
        description=(
            "Runs the audit pipeline on a labelled manifest (label ai/real or 1/0) as-is and "
            "under robustness conditions, and writes DIR/eval.json and DIR/eval.html: "
            "ROC-AUC, AP, TPR at 1% and 5% FPR, accuracy/precision/recall at the model "
            "card's thresholds, calibration, and breakdowns by generator, format and size. "
            "The last line printed is the ROC-AUC. Other --options go to Beam."
        ),
    )
    e.add_argument("manifest", metavar="MANIFEST",
                   help="a CSV, JSONL or Parquet manifest with a uri and a label column")
    e.add_argument("--out", required=True, metavar="DIR",
                   help="where eval.json, eval.html and the rows scored go")
    e.add_argument("--model", default=str(DEFAULT_MODEL_DIR), metavar="DIR",
                   help="the model directory to measure (default: the bundled model)")
    uri_column_argument(e)
    e.add_argument("--label-column", default="label", metavar="NAME",
                   help="the column holding ai/real or 1/0 (default: label)")
    e.add_argument("--group-column", default=None,
                   help="column naming the generator (or any group) for per-group recall")
    e.add_argument("--conditions", default=",".join(CONDITIONS),
                   help=f"comma-separated robustness conditions (default: all of "
                        f"{', '.join(CONDITIONS)})")
    e.add_argument("--batch-size", type=positive_int, default=16, metavar="N",
                   help="images per model call where the model allows batches (default: 16)")
    e.set_defaults(backend="onnx")  # eval measures the local model (the shared checks read it)
    e.add_argument("--decode-timeout", type=positive_float, default=60.0, metavar="S",
                   help="an image whose decode and provenance read take longer becomes a "
                        "`timeout` error row (default 60 s)")
    http_arguments(e)
    provenance_arguments(e)


def run(args: argparse.Namespace, beam_args: list[str]) -> int:
    from synthsieve.io.sources import SourceError, check_manifest, classify_source
    from synthsieve.pipelines.evaluate import EvalConfig, run_eval

    try:
        kind, pattern = classify_source(args.manifest)
        if kind != "manifest":
            raise SourceError(f"{args.manifest} is not a manifest (.csv, .jsonl, .parquet)")
        if "://" not in pattern and Path(pattern).is_file():
            check_manifest(pattern, uri_columns(args))
    except SourceError as e:
        return refuse("eval", str(e))
    loaded = model_and_provenance("eval", args, beam_args)
    if loaded is None:
        return 2
    cfg = EvalConfig(manifest=args.manifest, out_dir=args.out, model_dir=args.model,
                     label_column=args.label_column, group_column=args.group_column,
                     uri_columns=uri_columns(args),
                     conditions=tuple(c.strip() for c in args.conditions.split(",") if c.strip()),
                     batch_size=args.batch_size, http=http_config(args),
                     decode_timeout_s=args.decode_timeout, provenance=loaded[1])
    from synthsieve.cli.console import ConsoleProgress, shown_here
    from synthsieve.io.sources import count_references

    def rows_due() -> int | None:  # one row per reference and condition
        n = count_references([cfg.manifest])
        return None if n is None else n * len(cfg.conditions)

    shown = shown_here(args.quiet, beam_args)
    try:
        with ConsoleProgress("eval", rows_due, enabled=shown):
            report = run_eval(cfg, beam_args)
    except ValueError as e:
        return refuse("eval", str(e))
    o = report["overall"]
    print(f"{o['n']} labelled images ({o['n_ai']} AI, {o['n_real']} real), "
          f"{report['errors']} error rows; report: {args.out}/eval.html")
    for cond, m in report["robustness"].items():
        print(f"  {cond:<12} ROC-AUC {m['roc_auc']}  AP {m['average_precision']}  "
              f"TPR@1%FPR {m['tpr_at_1pct_fpr']}  ECE {m['ece']}  precision {m['precision']}"
              f"  recall {m['recall']}")
    print(f"ROC-AUC {o['roc_auc']}")
    if report["accounted_for"] is None:
        return refuse("eval", "the runner's counters could not be read, so whether every "
                      "input got its rows is unknown (eval.json: accounted_for null)", 5)
    if not report["accounted_for"]:
        return refuse("eval", f"{report['rows']} rows written where {report['expected_rows']} "
                      f"were due for {report['inputs']} inputs; see eval.json", 1)
    return 0
