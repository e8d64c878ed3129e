"""What several commands share: argument groups, value checks, and the configs built from
them (model and provenance, vendor API, HTTP fetching)."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import typing as t
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synthsieve.models import DEFAULT_MODEL_DIR

if TYPE_CHECKING:
    from synthsieve.provenance import ProvenanceOptions

__all__ = [
    "API_BATCH", "LOCAL_BATCH", "VENDOR_BACKENDS", "OneLineParser", "api_arguments",
    "api_config", "batch_size", "counted", "http_arguments", "http_config", "job_settings",
    "local_roots", "model_and_provenance", "non_negative_int", "number", "out_dir_problem",
    "positive_float", "positive_int", "provenance_arguments", "provenance_options",
    "pubsub_name_problem", "rate", "refuse", "scoring_arguments", "uri_column_argument",
    "uri_columns",
]


def refuse(command: str, message: str, code: int = 2) -> int:
    """Says why on stderr, in one `synthsieve COMMAND: ...` line; returns the exit code."""
    print(f"synthsieve {command}: {message}", file=sys.stderr)
    return code


def number(text: str, kind: type[int] | type[float], what: str) -> t.Any:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text}") from None


def positive_int(text: str) -> int:
    value = number(text, int, "a positive integer")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = number(text, int, "an integer 0 or more")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer 0 or more, got {text}")
    return value


def rate(text: str) -> float:
    value = number(text, float, "a number from 0 to 1")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1, got {text}")
    return value


def positive_float(text: str) -> float:
    value = number(text, float, "a positive number")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


VENDOR_BACKENDS = ("hive", "nim", "sightengine")


LOCAL_BATCH = 16


# For a vendor API, the calls one worker keeps open (each image's call starts when it is
# decoded): enough to keep the rate limiter busy through the answers' latency and retries.
API_BATCH = 128


def batch_size(args: argparse.Namespace) -> int:
    if args.batch_size:
        return args.batch_size
    return API_BATCH if args.backend in VENDOR_BACKENDS else LOCAL_BATCH


def counted(n: int, noun: str) -> str:
    """'1 image', '2 images', '1,000 images'."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def uri_column_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--uri-column", default=None, metavar="NAME",
                   help="the manifest column that holds each image's URI or path (default: "
                        "uri, else url)")


def uri_columns(args: argparse.Namespace) -> tuple[str, ...]:
    from synthsieve.io.sources import URI_COLUMNS

    return (args.uri_column,) if args.uri_column else URI_COLUMNS


def local_roots(args: argparse.Namespace) -> tuple[str, ...] | None:
    return tuple(args.local_root) if args.local_root else None


def job_settings(args: argparse.Namespace, provenance: ProvenanceOptions | None,
                 api: Any) -> dict[str, Any]:
    """The JobConfig fields that audit and stream take from their shared options."""
    settings: dict[str, Any] = dict(
        out_dir=args.out, model_dir=args.model, backend=args.backend, api=api,
        batch_size=batch_size(args), max_pixels=args.max_pixels, max_bytes=args.max_bytes,
        decode_timeout_s=args.decode_timeout, intra_op_threads=args.ort_threads,
        http=http_config(args), provenance=provenance, local_roots=local_roots(args))
    if args.run_id:
        settings["run_id"] = args.run_id
    return settings


def scoring_arguments(p: argparse.ArgumentParser) -> None:
    """What audit and stream share: the backend, the model and the per-image limits."""
    p.add_argument("--model", default=str(DEFAULT_MODEL_DIR), metavar="DIR",
                   help="model directory with model.json (default: the bundled model)")
    p.add_argument("--batch-size", type=positive_int, default=None, metavar="N",
                   help=f"images per inference batch (default {LOCAL_BATCH} for a local model, "
                        f"{API_BATCH} calls kept open for a vendor API)")
    p.add_argument("--max-pixels", type=positive_int, default=100_000_000, metavar="N",
                   help="images with more pixels become error rows (default 100,000,000)")
    p.add_argument("--max-bytes", type=positive_int, default=64 * 1024 * 1024, metavar="N",
                   help="files larger than this become error rows (default 64 MiB)")
    p.add_argument("--decode-timeout", type=positive_float, default=60.0, metavar="S",
                   help="an image whose decode and provenance read take longer becomes a "
                        "`timeout` error row (default 60 s)")
    p.add_argument("--ort-threads", type=positive_int, default=None, metavar="N",
                   help="threads the model uses per worker (default: cores / direct workers); "
                        "a model that runs one image per call runs that many calls at once")
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


def model_and_provenance(command: str, args: argparse.Namespace,
                          beam_args: list[str] | None = None):
    """(ModelSpec, ProvenanceOptions | None), or None after printing why the job cannot
    start (no model.json, no assembled model.onnx, unreadable trust anchors). For a runner
    whose workers run elsewhere the model and GPU checks are theirs: the model directory
    may exist only in the workers' container."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from synthsieve.inference.gpu import GPU_BACKENDS, gpu_backend_problem
    from synthsieve.inference.spec import ModelSpecError, WorkerModelSpec, load_spec
    from synthsieve.runners.choice import workers_elsewhere

    remote = workers_elsewhere(PipelineOptions(beam_args or []))
    try:
        spec = load_spec(args.model, on_workers_only=remote)
    except ModelSpecError as e:
        print(f"synthsieve {command}: {e}", file=sys.stderr)
        return None
    try:
        provenance = provenance_options(args)
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


def provenance_arguments(p: argparse.ArgumentParser) -> None:
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


def provenance_options(args: argparse.Namespace) -> ProvenanceOptions | None:
    from synthsieve.provenance import ProvenanceOptions

    if args.no_provenance:
        return None
    anchors = Path(args.c2pa_trust_anchors).read_text() if args.c2pa_trust_anchors else None
    return ProvenanceOptions(c2pa_trust_anchors=anchors, keep_prompts=args.keep_prompts,
                             watermark=not args.no_watermark)


def api_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("vendor API backends")
    g.add_argument("--api-url", default=None, metavar="URL",
                   help="send requests here instead of the vendor's endpoint (an emulator, "
                        "a proxy, a self-hosted container): a base URL (http://host:port) "
                        "gets the vendor's endpoint path, a URL with a path is used as is")
    g.add_argument("--api-rate", type=positive_float, default=10.0, metavar="R",
                   help="requests per second for the whole job (default 10)")
    g.add_argument("--api-workers", type=positive_int, default=1, metavar="N",
                   help="worker processes sharing --api-rate (default 1: the DirectRunner's "
                        "threads share one process)")
    g.add_argument("--api-concurrency", type=positive_int, default=16, metavar="N",
                   help="requests in flight per worker process (default 16)")
    g.add_argument("--api-retries", type=non_negative_int, default=5, metavar="N",
                   help="retries on 429, 5xx, timeouts and unreadable answers (default 5)")
    g.add_argument("--api-timeout", type=positive_float, default=60.0, metavar="S",
                   help="seconds for one request (default 60)")
    g.add_argument("--api-assets-url", default=None, metavar="URL",
                   help="nim: the asset-upload endpoint for images over the inline limit "
                        "(default: NVIDIA's, or the --api-url host's /v2/nvcf/assets)")
    g.add_argument("--api-send-urls", choices=("public", "always", "never"), default="public",
                   help="sightengine: send http(s) inputs by URL instead of uploading them "
                        "(public hosts only by default)")
    g.add_argument("--api-ai-threshold", type=rate, default=0.8, metavar="T",
                   help="a vendor's ai_generated score at or above T is verdict ai_generated "
                        "(default 0.8)")
    g.add_argument("--api-not-ai-threshold", type=rate, default=0.2, metavar="T",
                   help="at or below T, not_ai_generated; between the two, inconclusive "
                        "(default 0.2)")
    g.add_argument("--max-requests", type=non_negative_int, default=None, metavar="N",
                   help="send at most N images to the API; the rest become error rows")
    g.add_argument("--dry-run", action="store_true",
                   help="read and decode everything and print how many images a vendor "
                        "backend would send (after dedupe and --resume); send and write "
                        "nothing")


def api_config(args: argparse.Namespace):
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


def http_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("http(s) URLs in manifests")
    g.add_argument("--allow-private-networks", action="store_true",
                   help="allow URLs that resolve to loopback, private or link-local addresses "
                        "(refused by default; cloud metadata addresses stay refused)")
    g.add_argument("--http-concurrency", type=positive_int, default=64, metavar="N",
                   help="requests in flight per worker process (default 64)")
    g.add_argument("--http-per-host", type=positive_int, default=8, metavar="N",
                   help="requests in flight per host and worker process (default 8)")
    g.add_argument("--http-retries", type=non_negative_int, default=3, metavar="N",
                   help="retries on 429, 5xx, timeouts and connection errors (default 3)")
    g.add_argument("--http-timeout", type=positive_float, default=30.0, metavar="S",
                   help="seconds to wait for the next bytes of a response (default 30)")


def http_config(args: argparse.Namespace):
    from synthsieve.io.http import HttpConfig

    return HttpConfig(max_bytes=getattr(args, "max_bytes", 64 * 1024 * 1024),
                      concurrency=args.http_concurrency, per_host=args.http_per_host,
                      retries=args.http_retries, read_timeout_s=args.http_timeout,
                      allow_private_networks=args.allow_private_networks)


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


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line (argparse prints the whole usage first)."""

    def error(self, message: str) -> t.NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


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
