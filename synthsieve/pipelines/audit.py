"""The batch audit job: image references in, `scores` and `errors` Parquet tables out."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystems import FileSystems

from synthsieve.counters import (
    DUPLICATE_BYTES,
    RESUME_SKIPPED,
    WOULD_SEND,
    CountInputs,
    counted_inputs,
    read_counters,
)
from synthsieve.io.filesystems import is_remote
from synthsieve.io.read import EACH_TIME, ONCE_NEARBY, ONCE_PER_RUN
from synthsieve.io.resume import DoneIds, SkipDone
from synthsieve.io.sinks import (
    ERRORS_DIR,
    SCORES_DIR,
    WriteTable,
    iter_run_batches,
    run_shards,
    write_shard,
)
from synthsieve.io.sources import URI_COLUMNS, ExpandSources
from synthsieve.pipelines.job import Job, JobConfig, set_up_job
from synthsieve.runners.choice import fuses_stages, is_local, one_worker_in_process
from synthsieve.schema import ERRORS_SCHEMA, SCORES_SCHEMA
from synthsieve.transforms.chain import ScoreReferences
from synthsieve.transforms.progress import ReportProgress

__all__ = ["AuditConfig", "build_audit", "run_audit", "summarize", "top_errors",
           "write_empty_tables"]

log = logging.getLogger("synthsieve.audit")


@dataclass(kw_only=True)
class AuditConfig(JobConfig):
    """An audit: the sources to read, and how the run commits and resumes."""

    sources: list[str]
    # a manifest's URI column: the first of these it has
    uri_columns: tuple[str, ...] = URI_COLUMNS
    resume: bool = False
    # rows per committed shard and worker (a run that dies keeps what it committed)
    commit_rows: int = 5000
    # count what a vendor-API run would send (after dedupe and --resume), write nothing
    dry_run: bool = False


def build_audit(p: beam.Pipeline, cfg: AuditConfig, job: Job) -> None:
    """Adds the audit's transforms to `p`: sources, the scoring chain, and one writer per
    producer of rows."""
    run_id = cfg.run_id
    in_process = one_worker_in_process(p.options)
    sources = ExpandSources(cfg.sources, run_id, local_roots=cfg.local_roots,
                            local_runner=is_local(p.options), spread=not in_process,
                            uri_columns=cfg.uri_columns)
    src = p | "Sources" >> sources
    refs, bad_rows = src["refs"], src["errors"]
    if cfg.resume:
        done = p | "AlreadyDone" >> DoneIds(cfg.out_dir)
        refs = refs | "SkipDoneRefs" >> SkipDone(done, lambda r: r.image_id)
        bad_rows = bad_rows | "SkipDoneRows" >> SkipDone(done, lambda r: r["image_id"])
    refs = refs | "CountRefs" >> beam.ParDo(CountInputs())
    bad_rows = bad_rows | "CountBadRows" >> beam.ParDo(CountInputs())
    rows = refs | "Chain" >> ScoreReferences(
        cfg.chain_settings(), job.spec, job.handler, same_uri=(
            EACH_TIME if sources.unique_uris else ONCE_NEARBY if in_process else ONCE_PER_RUN),
        dedupe=True, wait_for_leaders=fuses_stages(p.options), score=not cfg.dry_run)
    if cfg.dry_run:
        return
    # One writer per producer rather than a Flatten in front of one writer: the DirectRunner
    # runs a Flatten of several producers as a stage of its own and holds its whole input in
    # memory (bench/memory.py: peak memory grew with the corpus).
    tables = ((SCORES_DIR, SCORES_SCHEMA, {name: rows[name] for name in ScoreReferences.SCORES}),
              (ERRORS_DIR, ERRORS_SCHEMA, {"source_errors": bad_rows, **{
                  name: rows[name] for name in ScoreReferences.ERRORS}}))
    for table, schema, producers in tables:
        for name, producer in producers.items():
            label = name.title().replace("_", "")
            (producer
             | f"{label}Progress" >> beam.ParDo(ReportProgress())
             | f"Write{label}" >> WriteTable(cfg.out_dir, table, schema, run_id,
                                             commit_rows=cfg.commit_rows))


class _Tally:
    """Counts of each column's values and of error messages, fed a batch at a time."""

    def __init__(self, columns: tuple[str, ...]):
        self.rows = 0
        self.values: dict[str, dict[str, int]] = {c: {} for c in columns}
        self.messages: dict[tuple[str, str, str], int] = {}
        self.examples: dict[tuple[str, str, str], str] = {}

    def add(self, batch: pa.RecordBatch, messages: bool = False) -> None:
        self.rows += batch.num_rows
        for column, counts in self.values.items():
            for c in pc.value_counts(batch.column(column).drop_null()).to_pylist():
                counts[c["values"]] = counts.get(c["values"], 0) + c["counts"]
        if messages:
            for uri, stage, kind, message in zip(*(batch.column(c).to_pylist() for c in (
                    "uri", "stage", "error_type", "message")), strict=True):
                text = (message or "").replace(uri, "{uri}") if uri else (message or "")
                key = (stage, kind, text)
                self.messages[key] = self.messages.get(key, 0) + 1
                self.examples.setdefault(key, uri)

    def counts(self, column: str) -> dict[str, int]:
        """Non-null values of one column and how often each occurs, sorted by value."""
        return dict(sorted(self.values[column].items()))


TOP_ERRORS = 3


def top_errors(tally: _Tally, k: int = TOP_ERRORS) -> list[dict[str, Any]]:
    """The k most common error messages, with each row's own URI replaced by {uri} so that
    "cannot read a.jpg: not found" and "cannot read b.jpg: not found" count as one."""
    best = sorted(tally.messages.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    return [{"count": n, "stage": st, "error_type": et, "message": msg[:300],
             "example_uri": tally.examples[(st, et, msg)]} for (st, et, msg), n in best]


def summarize(cfg: AuditConfig, model_id: str | None, backend: str,
              counters: dict[str, int] | None, wall_s: float) -> dict[str, Any]:
    """Counts what the run actually wrote, so the summary checks the invariant on disk.
    `accounted_for` is None (JSON null) when the inputs could not be counted."""
    # Counted in Arrow, a bounded batch at a time: a run of millions of rows is never held.
    scores = _Tally(("verdict", "evidence_verdict", "provenance_source"))
    for batch in iter_run_batches(cfg.out_dir, SCORES_DIR, cfg.run_id, list(scores.values)):
        scores.add(batch)
    errors = _Tally(("stage", "error_type"))
    for batch in iter_run_batches(cfg.out_dir, ERRORS_DIR, cfg.run_id,
                                  ["uri", "stage", "error_type", "message"]):
        errors.add(batch, messages=True)
    done = scores.rows + errors.rows
    inputs = counted_inputs(counters, done)
    return {
        "run_id": cfg.run_id,
        "inputs": inputs,
        "scores": scores.rows,
        "errors": errors.rows,
        "errors_by_stage": errors.counts("stage"),
        "errors_by_type": errors.counts("error_type"),
        "top_errors": top_errors(errors),
        "verdicts": scores.counts("verdict"),
        "evidence_verdicts": scores.counts("evidence_verdict"),
        "provenance_sources": scores.counts("provenance_source"),
        "accounted_for": None if inputs is None else inputs == done,
        "skipped_by_resume": (counters or {}).get(RESUME_SKIPPED, 0),
        "duplicate_bytes_scored_once": (counters or {}).get(DUPLICATE_BYTES, 0),
        "images_per_s": round(done / wall_s, 2) if wall_s > 0 else None,
        "wall_s": round(wall_s, 2),
        "model": model_id if backend != "none" else None,
        "backend": backend,
        "sources": cfg.sources,
        "out": cfg.out_dir,
    }


def write_empty_tables(out_dir: str, run_id: str) -> None:
    """An empty shard, with the schema, for a table the run wrote no row to: queries over
    DIR/errors/*.parquet then work on a run without errors."""
    for table, schema in ((SCORES_DIR, SCORES_SCHEMA), (ERRORS_DIR, ERRORS_SCHEMA)):
        if not FileSystems.match([run_shards(out_dir, table, run_id)])[0].metadata_list:
            directory = FileSystems.join(out_dir, table)
            if not is_remote(directory):
                Path(directory).mkdir(parents=True, exist_ok=True)
            write_shard(directory, run_id, schema, schema.empty_table())


def run_audit(cfg: AuditConfig, pipeline_args: list[str] | None = None) -> dict[str, Any]:
    """Runs the audit to completion and returns (and writes) DIR/summary.json.

    Args:
      cfg: what to read, where to write, and how to score.
      pipeline_args: Beam arguments (runner, workers).

    Returns:
      The summary: counts on disk, `accounted_for` (inputs == scores + errors; None when
      the inputs could not be counted), verdicts, top errors; for a dry run, the count of
      what would be sent.

    Raises:
      ApiAuthError: the vendor API refused the key or its configuration.
      ApiKeyMissing, ModelSpecError, UnsafeRunnerMode, RunnerUnavailable: it cannot start.
    """
    job = set_up_job(cfg, pipeline_args, check_credentials=not cfg.dry_run,
                     create_out_dir=not cfg.dry_run)  # a dry run sends and writes nothing
    log.info("run %s: %s -> %s (model %s, batch %d, %d ORT threads per worker)", cfg.run_id,
             ", ".join(cfg.sources), cfg.out_dir, job.spec.model_id, cfg.batch_size,
             job.threads)
    start = time.monotonic()
    result = job.run(lambda p: build_audit(p, cfg, job))
    wall_s = time.monotonic() - start
    counters = read_counters(result)
    if cfg.dry_run:
        known = counters or {}
        return {"run_id": cfg.run_id, "dry_run": True, "backend": job.backend_name,
                "inputs": counted_inputs(counters, 0),
                "would_send_requests": known.get(WOULD_SEND, 0),
                "duplicate_bytes_not_sent": known.get(DUPLICATE_BYTES, 0),
                "skipped_by_resume": known.get(RESUME_SKIPPED, 0),
                "wall_s": round(wall_s, 2)}
    write_empty_tables(cfg.out_dir, cfg.run_id)
    summary = summarize(cfg, job.model_id, job.backend_name, counters, wall_s)
    thresholds = job.thresholds()
    if thresholds is not None:
        summary["thresholds"] = thresholds
    kernel = job.int8_kernel()
    if kernel is not None:
        summary["int8_kernel"] = kernel
    with FileSystems.create(FileSystems.join(cfg.out_dir, "summary.json")) as fh:
        fh.write(json.dumps(summary, indent=2).encode())
    return summary
