"""The eval job: audit a labelled manifest as-is and under each robustness condition.

The same read, decode and scoring transforms as `audit` run on every (image, condition)
pair; conditions are applied to the bytes between read and decode. Scores and errors land
in DIR/scores and DIR/errors like an audit's, and the metrics are computed from what was
written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from synthsieve.counters import CountInputs, counted_inputs, read_counters
from synthsieve.elements import FetchedImage, ImageRef
from synthsieve.evaluation import metrics
from synthsieve.evaluation.breakdown import Labelled, by_group, confounds, worst
from synthsieve.evaluation.perturb import AS_IS, CONDITIONS
from synthsieve.inference.spec import ModelSpec
from synthsieve.io.read import ONCE_PER_RUN
from synthsieve.io.sinks import ERRORS_DIR, SCORES_DIR, WriteTable, read_run_table
from synthsieve.io.sources import URI_COLUMNS, ExpandSources
from synthsieve.pipelines.job import (
    LOCAL_BACKENDS,
    Job,
    JobConfig,
    set_up_job,
)
from synthsieve.schema import ERRORS_SCHEMA, SCORES_SCHEMA, STAGE_FETCH, STAGE_READ
from synthsieve.transforms.chain import ScoreReferences
from synthsieve.transforms.progress import ReportProgress

__all__ = ["EvalConfig", "build_eval", "compute_report", "run_eval"]

log = logging.getLogger("synthsieve.eval")

CONDITION_KEY = "eval_condition"
POSITIVE = {"ai", "1", "true", "fake", "generated", "synthetic", "ai_generated"}
NEGATIVE = {"real", "0", "false", "human", "authentic", "camera", "not_ai_generated"}
SIZE_BUCKETS = ((0.25, "<0.25 MP"), (1.0, "0.25-1 MP"), (4.0, "1-4 MP"),
                (float("inf"), ">=4 MP"))


def parse_label(value: str | None) -> int | None:
    if value is None:
        return None
    v = value.strip().lower()
    if v in POSITIVE:
        return 1
    if v in NEGATIVE:
        return 0
    return None


def size_bucket(width: int, height: int) -> str:
    mp = width * height / 1e6
    return next(name for top, name in SIZE_BUCKETS if mp < top)


@dataclass(kw_only=True)
class EvalConfig(JobConfig):
    """An eval: the labelled manifest, its label and group columns, and the robustness
    conditions each image is also scored under."""

    manifest: str
    label_column: str = "label"
    # the manifest's URI column: the first of these it has
    uri_columns: tuple[str, ...] = URI_COLUMNS
    group_column: str | None = None
    conditions: tuple[str, ...] = tuple(CONDITIONS)


class _Perturb(beam.DoFn):
    """One FetchedImage -> one per condition, each with its own image_id and sha256.

    Bytes that a condition cannot open pass through unchanged, so decode reports the real
    problem once per condition and the image is still accounted for.
    """

    def __init__(self, conditions: tuple[str, ...]):
        self._conditions = conditions

    def process(self, item: FetchedImage) -> Iterable[FetchedImage]:
        for name in self._conditions:
            fn = CONDITIONS[name]
            data = item.data
            if fn is not None:
                try:
                    data = fn(item.data)
                except Exception:  # decode will turn the original into an error row
                    data = item.data
            image_id = item.ref.image_id if name == AS_IS else f"{item.ref.image_id}@{name}"
            extra = dict(item.ref.extra or {})
            extra[CONDITION_KEY] = name
            ref = ImageRef(uri=item.ref.uri, image_id=image_id, extra=extra)
            sha = item.sha256 if data is item.data else hashlib.sha256(data).hexdigest()
            yield FetchedImage(ref=ref, data=data, sha256=sha)


def build_eval(p: beam.Pipeline, cfg: EvalConfig, job: Job) -> None:
    """Adds the eval's transforms to `p`: the manifest, the scoring chain with each
    condition's variant of the bytes between read and decode, and the two tables."""
    run_id = cfg.run_id
    src = p | "Sources" >> ExpandSources([cfg.manifest], run_id, local_roots=cfg.local_roots,
                                               uri_columns=cfg.uri_columns)
    refs = src["refs"] | "CountRefs" >> beam.ParDo(CountInputs())
    bad_rows = src["errors"] | "CountBadRows" >> beam.ParDo(CountInputs())
    rows = refs | "Chain" >> ScoreReferences(
        cfg.chain_settings(), job.spec, job.handler, same_uri=ONCE_PER_RUN,
        variants=beam.ParDo(_Perturb(cfg.conditions)))
    errors = (bad_rows, *ScoreReferences.errors(rows)) | "AllErrors" >> beam.Flatten()
    (rows["scores"]
     | "ScoresProgress" >> beam.ParDo(ReportProgress())
     | "WriteScores" >> WriteTable(cfg.out_dir, SCORES_DIR, SCORES_SCHEMA, run_id))
    (errors
     | "ErrorsProgress" >> beam.ParDo(ReportProgress())
     | "WriteErrors" >> WriteTable(cfg.out_dir, ERRORS_DIR, ERRORS_SCHEMA, run_id))


def accounting(inputs: int | None, conditions: int, scores: int,
               errors: list[dict]) -> dict[str, Any]:
    """Whether every input has its rows: one per condition, or a single error row when it
    could not be read at all (conditions apply to bytes that were read)."""
    unread = sum(1 for e in errors if e["stage"] in (STAGE_READ, STAGE_FETCH))
    expected = None if inputs is None else (inputs - unread) * conditions + unread
    return {"inputs": inputs, "expected_rows": expected, "rows": scores + len(errors),
            "accounted_for": None if expected is None else expected == scores + len(errors)}


def compute_report(cfg: EvalConfig, spec: ModelSpec, scores: list[dict],
                   errors: list[dict]) -> dict[str, Any]:
    """The eval.json document, from the rows the run wrote.

    Verdict counts use the verdict each row carries (a model may abstain whatever the score);
    the threshold-free metrics use the scores."""
    t_not, t_ai = spec.threshold_not_ai, spec.threshold_ai
    by_cond: dict[str, dict[str, list]] = defaultdict(
        lambda: {"y": [], "p": [], "v": [], "rows": []})
    unlabelled = 0
    for r in scores:
        extra = dict(r["extra"] or {})
        y = parse_label(extra.get(cfg.label_column))
        if y is None:
            unlabelled += 1
            continue
        cond = extra.get(CONDITION_KEY, AS_IS)
        by_cond[cond]["y"].append(y)
        by_cond[cond]["p"].append(r["ai_generated"])
        by_cond[cond]["v"].append(r["verdict"])
        by_cond[cond]["rows"].append((r, extra))
    if AS_IS not in by_cond:
        raise ValueError(f"no scored image has a usable {cfg.label_column!r} label "
                         f"(ai/real or 1/0); nothing to evaluate")

    def summarise(d: dict[str, list]) -> dict[str, Any]:
        return metrics.summary(d["y"], d["p"], t_not, t_ai, d["v"])

    def breakdown(key_fn) -> dict[str, Any]:
        groups: dict[str, dict[str, list]] = defaultdict(lambda: {"y": [], "p": [], "v": []})
        data = by_cond[AS_IS]
        for y, p, v, (r, extra) in zip(data["y"], data["p"], data["v"], data["rows"],
                                       strict=True):
            g = groups[key_fn(r, extra)]
            g["y"].append(y)
            g["p"].append(p)
            g["v"].append(v)
        return {k: summarise(v) for k, v in sorted(groups.items(), key=lambda kv: kv[0])}

    as_is = by_cond[AS_IS]
    labelled = [
        Labelled(y=y, p=p, verdict=v, uri=r["uri"], image_id=r["image_id"],
                 group=(extra.get(cfg.group_column) or "(none)") if cfg.group_column else None,
                 format=r["format"], megapixels=(r["width"] or 0) * (r["height"] or 0) / 1e6)
        for y, p, v, (r, extra) in zip(as_is["y"], as_is["p"], as_is["v"], as_is["rows"],
                                       strict=True)]
    warnings = confounds(labelled)
    for w in warnings:
        log.warning("%s", w)
    fpr, tpr, _ = metrics.roc_curve(as_is["y"], as_is["p"])
    reliability = metrics.reliability(as_is["y"], as_is["p"])
    report: dict[str, Any] = {
        "run_id": cfg.run_id,
        "manifest": cfg.manifest,
        "model": spec.model_id,
        "thresholds": {"ai_generated": t_ai, "not_ai_generated": t_not},
        "label_column": cfg.label_column,
        "group_column": cfg.group_column,
        "rows_scored": len(scores),
        "rows_unlabelled": unlabelled,
        "errors": len(errors),
        "errors_by_type": _count(e["error_type"] for e in errors),
        "warnings": warnings,
        "overall": summarise(as_is),
        "robustness": {c: summarise(v) for c, v in by_cond.items()},
        "by_format": breakdown(lambda r, e: r["format"] or "unknown"),
        "by_size": {k: v for k, v in breakdown(
            lambda r, e: size_bucket(r["width"], r["height"])).items()},
        "roc_curve": {"fpr": [round(float(v), 5) for v in fpr],
                      "tpr": [round(float(v), 5) for v in tpr]},
        "reliability": reliability,
        "worst": worst(labelled),
    }
    order = [name for _, name in SIZE_BUCKETS]
    report["by_size"] = dict(sorted(report["by_size"].items(),
                                    key=lambda kv: order.index(kv[0])))
    if cfg.group_column:
        report["by_group"] = by_group(labelled)
    report["scores_as_is"] = [
        {"image_id": r["image_id"], "uri": r["uri"], "label": y, "ai_generated": round(p, 5),
         "verdict": v}
        for y, p, v, (r, _e) in zip(as_is["y"], as_is["p"], as_is["v"], as_is["rows"],
                                    strict=True)]
    return report


def _count(items: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for i in items:
        out[i] += 1
    return dict(sorted(out.items()))


def run_eval(cfg: EvalConfig, pipeline_args: list[str] | None = None) -> dict[str, Any]:
    """Runs the eval and returns (and writes) DIR/eval.json; also writes DIR/eval.html.

    Raises:
      ValueError: unknown conditions, a backend without a local model, or no usable label.
    """
    from synthsieve.evaluation.report import write_html

    unknown = [c for c in cfg.conditions if c not in CONDITIONS]
    if unknown:
        raise ValueError(f"unknown conditions {unknown}; choose from {list(CONDITIONS)}")
    if cfg.backend not in LOCAL_BACKENDS:
        raise ValueError(f"eval measures a local model (--backend {', '.join(LOCAL_BACKENDS)})")
    if AS_IS not in cfg.conditions:
        cfg = dataclasses.replace(cfg, conditions=(AS_IS, *cfg.conditions))
    job = set_up_job(cfg, pipeline_args)
    if not isinstance(job.spec, ModelSpec):
        raise ValueError("eval reads the model's thresholds here: run it where the model is")
    start = time.monotonic()
    result = job.run(lambda p: build_eval(p, cfg, job))
    # Labelled eval sets are small: the report works on rows.
    scores = read_run_table(cfg.out_dir, SCORES_DIR, cfg.run_id,
                            ["image_id", "uri", "ai_generated", "verdict", "format", "width",
                             "height", "extra", "provenance_source",
                             "evidence_verdict"]).to_pylist()
    errors = read_run_table(cfg.out_dir, ERRORS_DIR, cfg.run_id,
                            ["image_id", "stage", "error_type"]).to_pylist()
    report = compute_report(cfg, job.spec, scores, errors)
    counted = counted_inputs(read_counters(result), len(scores) + len(errors))
    report.update(accounting(counted, len(cfg.conditions), len(scores), errors))
    as_is = [r for r in scores if dict(r["extra"] or {}).get(CONDITION_KEY, AS_IS) == AS_IS]
    report["evidence"] = {
        "provenance_sources": _count(r["provenance_source"] for r in as_is
                                     if r["provenance_source"]),
        "evidence_verdicts": _count(r["evidence_verdict"] for r in as_is
                                    if r["evidence_verdict"])}
    report["wall_s"] = round(time.monotonic() - start, 2)
    kernel = job.int8_kernel()
    if kernel is not None:
        report["int8_kernel"] = kernel
    with FileSystems.create(FileSystems.join(cfg.out_dir, "eval.json")) as fh:
        fh.write(json.dumps(report, indent=2).encode())
    with FileSystems.create(FileSystems.join(cfg.out_dir, "eval.html")) as fh:
        fh.write(write_html(report).encode())
    return report
