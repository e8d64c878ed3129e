"""The batch audit job: image references in, `scores` and `errors` Parquet tables out."""

from __future__ import annotations

import datetime as dt
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import (
    DirectOptions,
    PipelineOptions,
    StandardOptions,
)

from synthsieve.elements import ERRORS
from synthsieve.exception_chain import causes
from synthsieve.filesystems import configure as configure_filesystems
from synthsieve.filesystems import is_remote
from synthsieve.inference.onnx_handler import OnnxImageModelHandler, default_intra_op_threads
from synthsieve.inference.remote import BACKENDS, ApiAuthError, ApiConfig, RemoteApiModelHandler
from synthsieve.inference.spec import ModelSpec, load_spec
from synthsieve.models import DEFAULT_MODEL_DIR
from synthsieve.pipelines.runners import (
    fuses_stages,
    is_local,
    local_runner,
    names_dask,
    workers_elsewhere,
)
from synthsieve.provenance import ProvenanceOptions
from synthsieve.schema import ERRORS_SCHEMA, SCORES_SCHEMA
from synthsieve.transforms.decode import (
    DEFAULT_DECODE_TIMEOUT_S,
    DEFAULT_MAX_PIXELS,
    DecodeImages,
)
from synthsieve.transforms.dedupe import ERROR, SCORE, RecordLeaders, SplitDuplicates
from synthsieve.transforms.fetch_http import HttpConfig, close_http
from synthsieve.transforms.progress import ReportProgress
from synthsieve.transforms.read import DEFAULT_MAX_BYTES, FetchImages
from synthsieve.transforms.resume import DoneIds, SkipDone
from synthsieve.transforms.score import ScoreImages, ScoreRemote, SkipScoring
from synthsieve.transforms.sinks import (
    ERRORS_DIR,
    SCORES_DIR,
    WriteTable,
    read_run_table,
    run_shards,
    write_shard,
)
from synthsieve.transforms.sources import ExpandSources

log = logging.getLogger("synthsieve.audit")


def new_run_id() -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(3)}"


@dataclass
class AuditConfig:
    sources: list[str]
    out_dir: str
    model_dir: str = str(DEFAULT_MODEL_DIR)
    batch_size: int = 16
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = DEFAULT_MAX_BYTES
    # an image whose decode (and provenance read) takes longer is a `timeout` error row
    decode_timeout_s: float = DEFAULT_DECODE_TIMEOUT_S
    intra_op_threads: int | None = None
    resume: bool = False
    # "onnx" (the model in model_dir), "none" (read, decode and provenance only: a
    # metadata audit), or a vendor API ("hive"), configured by `api`
    backend: str = "onnx"
    api: ApiConfig | None = None
    # with roots, a manifest's local paths must resolve inside one of them (see sources.py)
    local_roots: tuple[str, ...] | None = None
    # rows per committed shard and worker (a run that dies keeps what it committed)
    commit_rows: int = 5000
    # count what a vendor-API run would send (after dedupe and --resume), write nothing
    dry_run: bool = False
    run_id: str = field(default_factory=new_run_id)
    # http(s) fetching: limits, retries, SSRF guard (max_bytes is taken from max_bytes)
    http: HttpConfig | None = None
    # what the file says about its origin (C2PA, XMP, EXIF, generator text, watermarks);
    # None skips it
    provenance: ProvenanceOptions | None = field(default_factory=ProvenanceOptions)


class _CountInputs(beam.DoFn):
    def __init__(self):
        self._inputs = beam.metrics.Metrics.counter("synthsieve", "inputs")

    def process(self, element):
        self._inputs.inc()
        yield element


def build_audit(p: beam.Pipeline, cfg: AuditConfig, spec: ModelSpec,
                handler: OnnxImageModelHandler | RemoteApiModelHandler | None) -> None:
    """Adds the audit's transforms to `p`."""
    fused = fuses_stages(p.options)
    run_id = cfg.run_id
    sources = ExpandSources(cfg.sources, run_id, local_roots=cfg.local_roots,
                            local_runner=is_local(p.options))
    src = p | "Sources" >> sources
    refs, bad_rows = src["refs"], src["errors"]
    if cfg.resume:
        done = p | "AlreadyDone" >> DoneIds(cfg.out_dir)
        refs = refs | "SkipDoneRefs" >> SkipDone(done, lambda r: r.image_id)
        bad_rows = bad_rows | "SkipDoneRows" >> SkipDone(done, lambda r: r["image_id"])
    refs = refs | "CountRefs" >> beam.ParDo(_CountInputs())
    bad_rows = bad_rows | "CountBadRows" >> beam.ParDo(_CountInputs())
    read = refs | "Read" >> FetchImages(run_id, max_bytes=cfg.max_bytes, http=cfg.http,
                                        same_uri_once=not sources.unique_uris)
    split = read["images"] | "SameBytesOnce" >> beam.ParDo(
        SplitDuplicates(run_id, wait_for_leaders=fused)).with_outputs(
        SplitDuplicates.FOLLOWER_SCORES, ERRORS, main="leaders")
    # No local model: decode only to validate (and to read provenance), not to preprocess.
    validate_only = handler is None or isinstance(handler, RemoteApiModelHandler) or cfg.dry_run
    decoded = split.leaders | "Decode" >> DecodeImages(
        None if validate_only else spec, run_id, max_pixels=cfg.max_pixels,
        provenance=cfg.provenance, timeout_s=cfg.decode_timeout_s)
    scored = decoded["images"] | "Score" >> score_transform(
        None if cfg.dry_run else handler, spec, run_id)
    # Leaders' rows are remembered for their duplicates, whose rows come out with them.
    leader_scores = scored["scores"] | "RecordLeaderScores" >> beam.ParDo(
        RecordLeaders(run_id, SCORE))
    decode_errors = decoded["errors"] | "RecordDecodeErrors" >> beam.ParDo(
        RecordLeaders(run_id, ERROR))
    score_errors = scored["errors"] | "RecordScoreErrors" >> beam.ParDo(
        RecordLeaders(run_id, ERROR))
    if cfg.dry_run:
        return
    # One writer per producer rather than a Flatten in front of one writer: the DirectRunner
    # runs a Flatten of several producers as a stage of its own and holds its whole input in
    # memory (bench/memory.py: peak memory grew with the corpus).
    tables = (
        (SCORES_DIR, SCORES_SCHEMA, {"Scores": leader_scores,
                                     "DuplicateScores": split[SplitDuplicates.FOLLOWER_SCORES]}),
        (ERRORS_DIR, ERRORS_SCHEMA, {"SourceErrors": bad_rows, "ReadErrors": read["errors"],
                                     "DecodeErrors": decode_errors,
                                     "ScoreErrors": score_errors,
                                     "DuplicateErrors": split[ERRORS]}),
    )
    for table, schema, producers in tables:
        for label, rows in producers.items():
            (rows
             | f"{label}Progress" >> beam.ParDo(ReportProgress())
             | f"Write{label}" >> WriteTable(cfg.out_dir, table, schema, run_id,
                                             commit_rows=cfg.commit_rows))


class UnsafeRunnerMode(ValueError):
    """A local runner setting that is known to lose data."""


def with_local_defaults(pipeline_args: list[str]) -> list[str]:
    """Beam arguments for a batch job, refusing the FnApiRunner's multi_threading mode.

    In Beam 2.77 that mode (the in-process gRPC data plane) loses elements, or decodes
    garbage and grows without bound, once one bundle sends more than the data channel's
    10 MB flush size across a stage boundary: a manifest of 100,000 references is enough.
    bench/fnapi_data_loss.py reproduces it with Beam alone; the in-memory mode (one worker,
    the default here) and multi_processing are exact. So a local batch job runs one
    in-memory worker, whose ONNX Runtime session uses every core, unless the user asks for
    --direct_running_mode multi_processing.
    """
    args = list(pipeline_args)
    options = PipelineOptions(args)
    runner = options.view_as(StandardOptions).runner
    if runner not in (None, "DirectRunner", "direct"):
        return args
    mode = options.view_as(DirectOptions).direct_running_mode
    if mode == "multi_threading":
        raise UnsafeRunnerMode(
            "--direct_running_mode multi_threading loses data in Beam 2.77 once a bundle "
            "passes 10 MB between stages (bench/fnapi_data_loss.py); use multi_processing "
            "for several local workers")
    return args


def workers_per_machine(options: PipelineOptions) -> int:
    if names_dask(options):
        from synthsieve.pipelines.dask_runner import local_cluster_size, starts_local_cluster

        if starts_local_cluster(options):  # a scheduler's machines are not known here
            workers, threads = local_cluster_size(options)
            return workers * threads
    direct = options.view_as(DirectOptions)
    return max(1, int(direct.direct_num_workers or 1))


def _value_counts(table: pa.Table, column: str) -> dict[str, int]:
    """Non-null values of one column and how often each occurs, sorted by value."""
    counts = pc.value_counts(table.column(column).drop_null()).to_pylist() \
        if table.num_rows else []
    return dict(sorted((c["values"], c["counts"]) for c in counts))


TOP_ERRORS = 3


def top_errors(errors: pa.Table, k: int = TOP_ERRORS) -> list[dict[str, Any]]:
    """The k most common error messages, with each row's own URI replaced by {uri} so that
    "cannot read a.jpg: not found" and "cannot read b.jpg: not found" count as one."""
    if not errors.num_rows:
        return []
    counts: dict[tuple[str, str, str], int] = {}
    example: dict[tuple[str, str, str], str] = {}
    for uri, stage, kind, message in zip(*(errors.column(c).to_pylist() for c in (
            "uri", "stage", "error_type", "message")), strict=True):
        text = (message or "").replace(uri, "{uri}") if uri else (message or "")
        key = (stage, kind, text)
        counts[key] = counts.get(key, 0) + 1
        example.setdefault(key, uri)
    best = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    return [{"count": n, "stage": st, "error_type": et, "message": msg[:300],
             "example_uri": example[(st, et, msg)]} for (st, et, msg), n in best]


def summarize(cfg: AuditConfig, model_id: str | None, backend: str,
              counters: dict[str, int] | None, wall_s: float) -> dict[str, Any]:
    """Counts what the run actually wrote, so the summary checks the invariant on disk.
    `accounted_for` is None (JSON null) when the inputs could not be counted."""
    # Counted in Arrow: a million-row run is a million values, not a million dicts.
    scores = read_run_table(cfg.out_dir, SCORES_DIR, cfg.run_id,
                            ["verdict", "evidence_verdict", "provenance_source"])
    errors = read_run_table(cfg.out_dir, ERRORS_DIR, cfg.run_id,
                            ["uri", "stage", "error_type", "message"])
    verdicts = _value_counts(scores, "verdict")
    by_stage = _value_counts(errors, "stage")
    done = scores.num_rows + errors.num_rows
    inputs = counted_inputs(counters, done)
    return {
        "run_id": cfg.run_id,
        "inputs": inputs,
        "scores": scores.num_rows,
        "errors": errors.num_rows,
        "errors_by_stage": by_stage,
        "errors_by_type": _value_counts(errors, "error_type"),
        "top_errors": top_errors(errors),
        "verdicts": verdicts,
        "evidence_verdicts": _value_counts(scores, "evidence_verdict"),
        "provenance_sources": _value_counts(scores, "provenance_source"),
        "accounted_for": None if inputs is None else inputs == done,
        "skipped_by_resume": (counters or {}).get("resume_skipped", 0),
        "duplicate_bytes_scored_once": (counters or {}).get("duplicate_bytes", 0),
        "images_per_s": round(done / wall_s, 2) if wall_s > 0 else None,
        "wall_s": round(wall_s, 2),
        "model": model_id if backend != "none" else None,
        "backend": backend,
        "sources": cfg.sources,
        "out": cfg.out_dir,
    }


def _auth_failure(exc: BaseException) -> str | None:
    """The ApiAuthError message inside whatever the runner raised, if it is one. A worker in
    another process (multi_processing) sends its exception back as text only, hence the
    second test."""
    marker = f"{ApiAuthError.__name__}: "
    for e in causes(exc):
        if isinstance(e, ApiAuthError):
            return str(e).split(" [while running")[0]
        text = str(e)
        if marker in text:
            line = text[text.rindex(marker) + len(marker):].splitlines()[0]
            return line.split(" [while running")[0]
    return None


def write_empty_tables(out_dir: str, run_id: str) -> None:
    """An empty shard, with the schema, for a table the run wrote no row to: queries over
    DIR/errors/*.parquet then work on a run without errors."""
    for table, schema in ((SCORES_DIR, SCORES_SCHEMA), (ERRORS_DIR, ERRORS_SCHEMA)):
        if not FileSystems.match([run_shards(out_dir, table, run_id)])[0].metadata_list:
            directory = FileSystems.join(out_dir, table)
            if not is_remote(directory):
                Path(directory).mkdir(parents=True, exist_ok=True)
            write_shard(directory, run_id, schema, schema.empty_table())


def release_in_process_resources(handler: Any) -> None:
    """Closes what an in-process run's workers left in this process once it is done: the
    handler's model sessions and the HTTP event loop thread with its sessions. Left to
    interpreter exit, their native thread pools and sockets are torn down in no set order.
    A worker in another process (multi_processing, Dask, Dataflow) ends with its process."""
    release = getattr(handler, "release", None)
    if callable(release):
        release()
    close_http()


def pipeline_counters(result: Any) -> dict[str, int] | None:
    """Our Beam counters by name; None when the runner's metrics cannot be read (the caller
    must then say the count is unknown, not assume it)."""
    try:
        found = result.metrics().query(MetricsFilter().with_namespace("synthsieve"))["counters"]
    except Exception as e:  # noqa: BLE001 - any runner's failure means "unknown"
        log.warning("could not read the pipeline's counters: %s: %s", type(e).__name__, e)
        return None
    out: dict[str, int] = {}
    for c in found:
        out[c.key.metric.name] = out.get(c.key.metric.name, 0) + int(
            c.committed or c.attempted or 0)
    return out


def counted_inputs(counters: dict[str, int] | None, rows_written: int) -> int | None:
    """How many inputs the sources gave, or None when that is not known: the counters could
    not be read, or rows were written while no input was counted (a runner that reports no
    metrics). A counter never incremented is absent, so no rows and no counter is 0."""
    if counters is None:
        return None
    if "inputs" in counters:
        return counters["inputs"]
    return 0 if rows_written == 0 else None


Handler = OnnxImageModelHandler | RemoteApiModelHandler | None


def score_transform(handler: Handler, spec: ModelSpec, run_id: str) -> beam.PTransform:
    """(ImageInfo, payload) -> {'scores', 'errors'} for a backend's handler (None: no model)."""
    if handler is None:  # --backend none / --dry-run: read and decode only
        return SkipScoring(run_id)
    if isinstance(handler, RemoteApiModelHandler):
        return ScoreRemote(handler, run_id)
    return ScoreImages(handler, spec, handler.backend_name, run_id)


def make_handler(backend: str, spec: ModelSpec, batch_size: int, threads: int,
                 api: ApiConfig | None, check_credentials: bool = True) -> Handler:
    """The ModelHandler for --backend; None for `none`. Raises ValueError/ApiAuthError."""
    if backend == "onnx":
        return OnnxImageModelHandler(spec, batch_size=batch_size, intra_op_threads=threads)
    if backend == "onnx-cuda":
        return OnnxImageModelHandler(spec, batch_size=batch_size, intra_op_threads=threads,
                                     providers=("CUDAExecutionProvider",))
    if backend == "tensorrt":
        from synthsieve.inference.tensorrt_handler import TensorRTImageModelHandler

        return TensorRTImageModelHandler(spec, batch_size=batch_size)
    if backend in BACKENDS:
        if api is None:
            raise ValueError(f"--backend {backend} needs an ApiConfig")
        if check_credentials:
            api.credentials()  # fail before starting when the key is missing
        # Small batches: a thread waits for its batch's slowest answer, and at the end of a
        # run big batches leave the limiter idle while the last ones drain (bench/api.py:
        # 96% of the limit while sending at 16, 87% at 64).
        return RemoteApiModelHandler(BACKENDS[backend], api, batch_size=batch_size)
    if backend != "none":
        raise ValueError(f"unknown backend {backend!r}")
    return None


def run_audit(cfg: AuditConfig, pipeline_args: list[str] | None = None) -> dict[str, Any]:
    """Runs the audit to completion and returns (and writes) DIR/summary.json."""
    options = PipelineOptions(with_local_defaults(pipeline_args or []))
    spec = load_spec(cfg.model_dir, on_workers_only=workers_elsewhere(options))
    configure_filesystems(options)
    threads = cfg.intra_op_threads or default_intra_op_threads(workers_per_machine(options))
    handler = make_handler(cfg.backend, spec, cfg.batch_size, threads, cfg.api,
                           check_credentials=not cfg.dry_run)
    model_id = handler.model_name if isinstance(handler, RemoteApiModelHandler) \
        else spec.model_id
    backend_name = handler.backend_name if handler else "none"
    if not is_remote(cfg.out_dir) and not cfg.dry_run:  # a dry run writes nothing
        Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    log.info("run %s: %s -> %s (model %s, batch %d, %d ORT threads per worker)", cfg.run_id,
             ", ".join(cfg.sources), cfg.out_dir, spec.model_id, cfg.batch_size, threads)
    start = time.monotonic()
    p = beam.Pipeline(runner=local_runner(options), options=options)
    build_audit(p, cfg, spec, handler)
    try:
        result = p.run()
        result.wait_until_finish()
    except Exception as e:
        message = _auth_failure(e)
        if message:  # the runner wraps it, sometimes only as text: give the API's message
            raise ApiAuthError(message) from None
        raise
    finally:
        release_in_process_resources(handler)
    wall_s = time.monotonic() - start
    counters = pipeline_counters(result)
    if cfg.dry_run:
        known = counters or {}
        return {"run_id": cfg.run_id, "dry_run": True, "backend": backend_name,
                "inputs": known.get("inputs", 0) if counters is not None else None,
                "would_send_requests": known.get("would_send", 0),
                "duplicate_bytes_not_sent": known.get("duplicate_bytes", 0),
                "skipped_by_resume": known.get("resume_skipped", 0),
                "wall_s": round(wall_s, 2)}
    write_empty_tables(cfg.out_dir, cfg.run_id)
    summary = summarize(cfg, model_id, backend_name, counters, wall_s)
    if isinstance(handler, RemoteApiModelHandler) and cfg.api is not None:
        summary["thresholds"] = {"ai_generated": cfg.api.threshold_ai,
                                 "not_ai_generated": cfg.api.threshold_not_ai}
    elif handler is not None and isinstance(spec, ModelSpec):  # else only workers know
        summary["thresholds"] = {"ai_generated": spec.threshold_ai,
                                 "not_ai_generated": spec.threshold_not_ai}
    with FileSystems.create(FileSystems.join(cfg.out_dir, "summary.json")) as fh:
        fh.write(json.dumps(summary, indent=2).encode())
    return summary
