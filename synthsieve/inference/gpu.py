"""Whether a GPU backend can run on this machine, said before a job starts."""

from __future__ import annotations

import importlib.util

from synthsieve.inference.spec import ModelSpec

__all__ = ["GPU_BACKENDS", "gpu_backend_problem"]

GPU_BACKENDS = ("onnx-cuda", "tensorrt")


def gpu_backend_problem(backend: str, spec: ModelSpec) -> str | None:
    """None when `backend` can run `spec` here, else what is missing and how to get it."""
    if backend == "onnx-cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return ("ONNX Runtime has no CUDAExecutionProvider here: on a GPU worker install "
                    "onnxruntime-gpu in place of onnxruntime (see deploy/README.md)")
        return None
    if backend == "tensorrt":
        if not spec.raw.get("engine"):
            return (f"{spec.model_dir}/model.json has no engine: run `synthsieve build-engine "
                    f"{spec.model_dir} --out DIR` on the GPU worker and pass --model DIR")
        missing = [m for m in ("tensorrt", "cuda") if importlib.util.find_spec(m) is None]
        if missing:
            return (f"{' and '.join(missing)} not installed: pip install 'synthsieve[gpu]' on a "
                    "machine with an NVIDIA GPU")
        return None
    raise ValueError(f"{backend} is not a GPU backend")
