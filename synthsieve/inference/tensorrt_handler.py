"""TensorRT ModelHandler: runs the engine `synthsieve build-engine` wrote.

Beam's TensorRTEngineHandlerNumPy sizes its buffers from the engine's static shapes (a
dynamic batch axis is -1 there), copies from pageable memory, and returns outputs by
position; ours allocates once for the profile's largest batch, stages batches in pinned
host memory so the copies are real DMA, sets the batch shape per call, normalises as
model.json says and returns outputs by name, like the ONNX handler.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from synthsieve.inference.spec import ModelSpec, WorkerModelSpec

__all__ = ["EngineMismatch", "TensorRTEngine", "TensorRTImageModelHandler"]


class EngineMismatch(RuntimeError):
    pass


def _check(result: Any) -> Any:
    from cuda.bindings import runtime as cudart

    err, *rest = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        raise RuntimeError(f"CUDA: {cudart.cudaGetErrorString(err)[1].decode()}")
    return rest[0] if len(rest) == 1 else rest


class _Pinned:
    """A page-locked host buffer seen as a numpy array."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype):
        from cuda.bindings import runtime as cudart

        self.nbytes = int(np.prod(shape)) * dtype.itemsize
        self.ptr = _check(cudart.cudaMallocHost(self.nbytes))
        buf = (ctypes.c_byte * self.nbytes).from_address(int(self.ptr))
        self.array = np.frombuffer(buf, dtype=dtype).reshape(shape)


class TensorRTEngine:
    """One engine, its execution context, a CUDA stream and buffers for max_batch images.
    A lock serialises callers: one context runs one batch at a time."""

    def __init__(self, spec: ModelSpec):
        import tensorrt as trt
        from cuda.bindings import runtime as cudart

        from synthsieve.inference.tensorrt_engine import gpu_name

        info = spec.raw.get("engine") or {}
        plan = Path(spec.model_dir) / info.get("plan", "model.plan")
        if not plan.is_file():
            raise FileNotFoundError(f"{plan} not found: run `synthsieve build-engine` on this "
                                    "GPU first")
        device, capability = gpu_name()
        if info.get("tensorrt") != trt.__version__ or info.get("compute_capability") != capability:
            raise EngineMismatch(
                f"{plan} was built with TensorRT {info.get('tensorrt')} for "
                f"{info.get('device')} (sm {info.get('compute_capability')}); this worker has "
                f"TensorRT {trt.__version__} on {device} (sm {capability}): rebuild it here")
        self.max_batch = int(info["max_batch"])
        self._logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(self._logger).deserialize_cuda_engine(plan.read_bytes())
        if self.engine is None:
            raise EngineMismatch(f"TensorRT could not deserialize {plan}")
        self.context = self.engine.create_execution_context()
        self.stream = _check(cudart.cudaStreamCreate())
        self.lock = threading.Lock()
        self.outputs: list[tuple[str, _Pinned, Any]] = []
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            shape = tuple(self.engine.get_tensor_shape(name))
            full = (self.max_batch, *shape[1:])
            host = _Pinned(full, dtype)
            device_ptr = _check(cudart.cudaMalloc(host.nbytes))
            self.context.set_tensor_address(name, int(device_ptr))
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self.input = (name, host, device_ptr)
            else:
                self.outputs.append((name, host, device_ptr))

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        from cuda.bindings import runtime as cudart

        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        n = len(x)
        name, host, device_ptr = self.input
        with self.lock:
            host.array[:n] = x
            nbytes = host.array[:n].nbytes
            _check(cudart.cudaMemcpyAsync(device_ptr, host.ptr, nbytes, h2d, self.stream))
            self.context.set_input_shape(name, (n, *host.array.shape[1:]))
            if not self.context.execute_async_v3(self.stream):
                raise RuntimeError("TensorRT execution failed")
            for _, out_host, out_ptr in self.outputs:
                _check(cudart.cudaMemcpyAsync(out_host.ptr, out_ptr,
                                              out_host.array[:n].nbytes, d2h, self.stream))
            _check(cudart.cudaStreamSynchronize(self.stream))
            return {out: out_host.array[:n].copy() for out, out_host, _ in self.outputs}


def _max_batch(spec: ModelSpec | WorkerModelSpec) -> int:
    info = spec.raw.get("engine")
    if not info:
        raise ValueError(f"{spec.model_dir}/model.json has no engine: run "
                         "`synthsieve build-engine MODEL_DIR --out DIR` and pass --model DIR")
    return int(info["max_batch"])


class TensorRTImageModelHandler(ModelHandler[np.ndarray, PredictionResult, TensorRTEngine]):
    """Runs batches of HWC uint8 images through a TensorRT engine on the worker's GPU.

    RunInference keeps one engine per worker process; its calls are serialised, and the
    batch size is fixed to one the engine's optimisation profile covers.
    """

    backend_name = "tensorrt"

    def __init__(self, spec: ModelSpec | WorkerModelSpec, *, batch_size: int | None = None):
        """
        Args:
          spec: the model directory from `synthsieve build-engine` (model.plan), or a
            WorkerModelSpec when only the workers can read it.
          batch_size: images per engine call, at most the engine's max batch (default: that).

        Raises:
          ValueError: no batch size for a model only the workers can read.
        """
        if isinstance(spec, WorkerModelSpec):  # the engine is only on the workers
            if not batch_size:
                raise ValueError(f"--model {spec.model_dir} is read on the workers: give "
                                 "--batch-size (at most the engine's max batch)")
            size = batch_size
        else:
            max_batch = _max_batch(spec)
            size = min(batch_size or max_batch, max_batch)
        super().__init__(min_batch_size=size, max_batch_size=size)
        self._spec = spec
        self._batch_size = size

    @property
    def spec(self) -> ModelSpec:
        return self._spec

    def load_model(self) -> TensorRTEngine:
        max_batch = _max_batch(self._spec)  # known here when the worker read it
        if self._batch_size > max_batch:
            raise ValueError(f"--batch-size {self._batch_size} is over the engine's max batch "
                             f"of {max_batch} ({self._spec.model_dir})")
        return TensorRTEngine(self._spec)

    def run_inference(self, batch: Sequence[np.ndarray], model: TensorRTEngine,
                      inference_args: dict[str, Any] | None = None
                      ) -> Iterable[PredictionResult]:
        x = self._spec.normalize_batch(np.stack(batch, axis=0))
        outs: dict[str, list[np.ndarray]] = {}
        for start in range(0, len(x), model.max_batch):
            for name, value in model.run(x[start:start + model.max_batch]).items():
                outs.setdefault(name, []).append(value)
        merged = {k: np.concatenate(v, axis=0) for k, v in outs.items()}
        for i, example in enumerate(batch):
            yield PredictionResult(example, {k: v[i] for k, v in merged.items()})

    def get_num_bytes(self, batch: Sequence[np.ndarray]) -> int:
        return sum(a.nbytes for a in batch)

    def get_metrics_namespace(self) -> str:
        return "synthsieve_tensorrt"
