"""What every scoring job (audit, stream, eval) shares before and after its graph: the config
core, the model handler for --backend, the setup of options, filesystems and threads, and the
release of what an in-process run leaves behind.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from synthsieve.exception_chain import causes
from synthsieve.images import DEFAULT_MAX_PIXELS
from synthsieve.inference.kernels import kernel_report
from synthsieve.inference.onnx_handler import OnnxImageModelHandler, default_intra_op_threads
from synthsieve.inference.remote import BACKENDS, ApiAuthError, ApiConfig, RemoteApiModelHandler
from synthsieve.inference.spec import ModelSpec, WorkerModelSpec, load_spec
from synthsieve.io.filesystems import configure as configure_filesystems
from synthsieve.io.filesystems import is_remote
from synthsieve.io.http import HttpConfig, close_http
from synthsieve.io.read import DEFAULT_MAX_BYTES
from synthsieve.models import DEFAULT_MODEL_DIR
from synthsieve.provenance import ProvenanceOptions
from synthsieve.runners.choice import (
    local_runner,
    with_local_defaults,
    workers_elsewhere,
    workers_per_machine,
)
from synthsieve.transforms.chain import ChainSettings
from synthsieve.transforms.decode import DEFAULT_DECODE_TIMEOUT_S

__all__ = ["Handler", "Job", "JobConfig", "make_handler", "new_run_id",
           "release_in_process_resources", "set_up_job", "stopped_by_api"]

Handler = OnnxImageModelHandler | RemoteApiModelHandler | None
LOCAL_BACKENDS = ("onnx", "onnx-cuda", "tensorrt")


def new_run_id() -> str:
    """A run's name: its UTC start time and 6 random hex digits."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(3)}"


@dataclass(kw_only=True)
class JobConfig:
    """The settings every scoring job has: where rows go, which model scores, the limits
    on each image, and how URLs and provenance are read."""

    out_dir: str
    model_dir: str = str(DEFAULT_MODEL_DIR)
    # "onnx" (the model in model_dir), "onnx-cuda", "tensorrt", "none" (read, decode and
    # provenance only: a metadata audit), or a vendor API ("hive", ...) configured by `api`
    backend: str = "onnx"
    api: ApiConfig | None = None
    batch_size: int = 16
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = DEFAULT_MAX_BYTES
    # an image whose decode (and provenance read) takes longer is a `timeout` error row
    decode_timeout_s: float = DEFAULT_DECODE_TIMEOUT_S
    intra_op_threads: int | None = None
    # http(s) fetching: limits, retries, SSRF guard (max_bytes is taken from max_bytes)
    http: HttpConfig | None = None
    # what the file says about its origin (C2PA, XMP, EXIF, generator text, watermarks);
    # None skips it
    provenance: ProvenanceOptions | None = field(default_factory=ProvenanceOptions)
    # with roots, local paths a manifest or message names must resolve inside one of them
    local_roots: tuple[str, ...] | None = None
    run_id: str = field(default_factory=new_run_id)
    # images decoded ahead of scoring (so decode overlaps the model), and how many at once
    # (None: one per core)
    decode_ahead: int = 16
    decode_workers: int | None = None

    def chain_settings(self) -> ChainSettings:
        """The settings of the scoring chain (transforms/chain.py) this job runs."""
        return ChainSettings(run_id=self.run_id, max_bytes=self.max_bytes,
                             max_pixels=self.max_pixels,
                             decode_timeout_s=self.decode_timeout_s, http=self.http,
                             provenance=self.provenance, decode_ahead=self.decode_ahead,
                             decode_workers=self.decode_workers or default_intra_op_threads())


def make_handler(backend: str, spec: ModelSpec | WorkerModelSpec, batch_size: int,
                 threads: int, api: ApiConfig | None,
                 check_credentials: bool = True) -> Handler:
    """The ModelHandler for a --backend.

    Args:
      backend: onnx, onnx-cuda, tensorrt, none, or a vendor API's name.
      spec: the model (for the local backends).
      batch_size: images per inference batch, or per batch of concurrent API requests.
      threads: ONNX Runtime intra-op threads per session.
      api: the vendor API's settings (vendor backends only).
      check_credentials: read the API key now, so that a missing one stops the job before
        it starts.

    Returns:
      The handler, or None for `none` (no model runs).

    Raises:
      ValueError: an unknown backend, or a vendor backend without `api`.
      ApiKeyMissing: the API key's environment variable is not set.
    """
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
            api.credentials()
        return RemoteApiModelHandler(BACKENDS[backend], api, batch_size=batch_size)
    if backend != "none":
        raise ValueError(f"unknown backend {backend!r}")
    return None


@dataclass
class Job:
    """A scoring job ready to build: its options, model, handler and thread count."""

    options: PipelineOptions
    spec: ModelSpec | WorkerModelSpec
    handler: Handler
    threads: int

    def pipeline(self) -> beam.Pipeline:
        """A pipeline on the runner the options name (synthsieve's choice for local ones)."""
        return beam.Pipeline(runner=local_runner(self.options), options=self.options)

    @property
    def backend_name(self) -> str:
        return self.handler.backend_name if self.handler is not None else "none"

    @property
    def model_id(self) -> str | None:
        """What scored the rows: the vendor's model or the model directory's id."""
        if isinstance(self.handler, RemoteApiModelHandler):
            return self.handler.model_name
        return self.spec.model_id

    def run(self, build: Callable[[beam.Pipeline], None]) -> Any:
        """Builds the pipeline with `build(p)`, runs it to the end and releases what its
        in-process workers left here; returns the PipelineResult.

        Raises:
          ApiAuthError: the vendor API refused the key or its configuration (unwrapped from
            whatever the runner raised).
        """
        p = self.pipeline()
        build(p)
        try:
            result = p.run()
            result.wait_until_finish()
        except Exception as e:
            refused = stopped_by_api(e)
            if refused is not None:  # the runner wraps it, sometimes only as text
                raise refused from None
            raise
        finally:
            release_in_process_resources(self.handler)
        return result

    def int8_kernel(self) -> dict[str, Any] | None:
        """The integer kernels the ONNX CPU backend runs on, what chose them and on which CPU
        (inference/kernels.py); None for other backends. Workers on other machines choose
        by their own CPU, which this process cannot see."""
        if self.backend_name != OnnxImageModelHandler.backend_name:
            return None
        if workers_elsewhere(self.options):
            return {"kernel": None, "decided_by": "each worker's CPU (workers run elsewhere)",
                    "cpu": None, "cpu_flags": []}
        return kernel_report()

    def thresholds(self) -> dict[str, float] | None:
        """The verdict thresholds in force, when this process knows them."""
        if isinstance(self.handler, RemoteApiModelHandler):
            return {"ai_generated": self.handler.api.threshold_ai,
                    "not_ai_generated": self.handler.api.threshold_not_ai}
        if self.handler is not None and isinstance(self.spec, ModelSpec):
            return {"ai_generated": self.spec.threshold_ai,
                    "not_ai_generated": self.spec.threshold_not_ai}
        return None  # no model, or only the workers can read it


def set_up_job(cfg: JobConfig, pipeline_args: list[str] | None, *, streaming: bool = False,
               check_credentials: bool = True, create_out_dir: bool = True) -> Job:
    """Options, model, filesystems, threads and handler for a job, checked before it starts.

    Args:
      cfg: the job's settings.
      pipeline_args: the Beam arguments left on the command line.
      streaming: a streaming job (the DirectRunner's streaming runner, no batch defaults).
      check_credentials: read a vendor API's key now (not for a dry run, which sends
        nothing).
      create_out_dir: make a local out_dir (not for a dry run, which writes nothing).

    Raises:
      UnsafeRunnerMode, ModelSpecError, ApiKeyMissing, ValueError: the job cannot start.
    """
    args = list(pipeline_args or [])
    options = PipelineOptions(args if streaming else with_local_defaults(args))
    if streaming:
        options.view_as(StandardOptions).streaming = True
    spec = load_spec(cfg.model_dir, on_workers_only=workers_elsewhere(options))
    configure_filesystems(options)
    threads = cfg.intra_op_threads or default_intra_op_threads(workers_per_machine(options))
    handler = make_handler(cfg.backend, spec, cfg.batch_size, threads, cfg.api,
                           check_credentials=check_credentials)
    if create_out_dir and not is_remote(cfg.out_dir):
        Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    return Job(options=options, spec=spec, handler=handler, threads=threads)


def release_in_process_resources(handler: Any) -> None:
    """Closes what an in-process run's workers left in this process once it is done: the
    handler's model sessions and the HTTP event loop thread with its sessions. Left to
    interpreter exit, their native thread pools and sockets are torn down in no set order.
    A worker in another process (multi_processing, Dask, Dataflow) ends with its process."""
    release = getattr(handler, "release", None)
    if callable(release):
        release()
    close_http()


def stopped_by_api(exc: BaseException) -> ApiAuthError | None:
    """The ApiAuthError inside whatever the runner raised, if the API stopped the job.

    The runner wraps it, and a worker in another process (multi_processing) sends it back
    as text only, hence the second test."""
    marker = f"{ApiAuthError.__name__}: "
    for e in causes(exc):
        if isinstance(e, ApiAuthError):
            return ApiAuthError(str(e).split(" [while running")[0])
        text = str(e)
        if marker in text:
            line = text[text.rindex(marker) + len(marker):].splitlines()[0]
            return ApiAuthError(line.split(" [while running")[0])
    return None
