"""`synthsieve build-engine`: a model directory for GPU workers.

From MODEL_DIR (model.json + model.onnx) it writes OUT_DIR with
- `model.float.onnx`: the graph with no integer kernels (inference/precision.py), FP16 with
  `--fp16`. ONNX Runtime runs it on CUDA (`--backend onnx-cuda`) or on a CPU;
- `model.plan`: a TensorRT engine built from it with one optimisation profile over batch
  sizes 1..max_batch (optimised for opt_batch), unless `onnx_only`;
- `model.json`: the same preprocessing and outputs, `file` pointing at the float graph and
  `engine` describing the plan (TensorRT version, GPU, batch sizes, precision).

An engine runs only on the GPU model and TensorRT version it was built with; the handler
checks both before deserialising.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import onnx

from synthsieve.inference.precision import float_graph
from synthsieve.inference.spec import ModelSpec

__all__ = [
    "FLOAT_FILE", "PLAN_FILE", "EngineBuildError", "EngineInfo", "build_engine_dir",
    "build_plan", "gpu_name",
]

FLOAT_FILE = "model.float.onnx"
PLAN_FILE = "model.plan"


class EngineBuildError(RuntimeError):
    pass


@dataclass(frozen=True)
class EngineInfo:
    plan: str
    tensorrt: str
    device: str
    compute_capability: str
    min_batch: int
    opt_batch: int
    max_batch: int
    precision: str
    build_s: float


def gpu_name() -> tuple[str, str]:
    """(name, compute capability) of GPU 0, through the CUDA runtime."""
    from cuda.bindings import runtime as cudart

    err, props = cudart.cudaGetDeviceProperties(0)
    if err != cudart.cudaError_t.cudaSuccess:
        raise EngineBuildError(f"no CUDA device: {err}")
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return name.strip("\x00 "), f"{props.major}.{props.minor}"


def build_plan(model: onnx.ModelProto, input_name: str, max_batch: int, opt_batch: int,
               workspace_gib: float = 4.0) -> bytes:
    """A serialized TensorRT engine for `model` (strongly typed: its own precision)."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(model.SerializeToString()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT cannot parse the graph: {errors}")
    inputs = {network.get_input(i).name: network.get_input(i) for i in range(network.num_inputs)}
    if input_name not in inputs:
        raise EngineBuildError(f"the graph has inputs {sorted(inputs)}, model.json names "
                               f"{input_name!r}")
    chw = tuple(inputs[input_name].shape)[1:]
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * 2**30))
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, (1, *chw), (opt_batch, *chw), (max_batch, *chw))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineBuildError("TensorRT could not build the engine (see its log above)")
    return bytes(plan)


def build_engine_dir(model_dir: str | Path, out_dir: str | Path, *, fp16: bool = False,
                     max_batch: int = 64, opt_batch: int | None = None,
                     onnx_only: bool = False) -> dict[str, Any]:
    spec = ModelSpec.load(model_dir)
    if not 1 <= max_batch <= 4096:
        raise ValueError("--max-batch must be within 1..4096")
    opt_batch = min(opt_batch or max_batch, max_batch)
    if not onnx_only:
        try:
            import tensorrt as trt
        except ImportError as e:
            raise EngineBuildError("tensorrt is not installed: pip install 'synthsieve[gpu]' "
                                   "on a machine with an NVIDIA GPU, or pass --onnx-only") from e
        device, capability = gpu_name()
    precision = "fp16" if fp16 else "fp32"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    graph = float_graph(spec.model_path, fp16=fp16)
    onnx.save(graph, str(out / FLOAT_FILE))
    raw = json.loads(json.dumps(spec.raw))
    raw["file"] = FLOAT_FILE
    # each image has its own quantisation grid in the float graph, so batches are free
    raw.setdefault("input", {})["batch_invariant"] = True
    raw["derived_from"] = {"model": spec.model_id, "precision": precision}
    summary: dict[str, Any] = {"out": str(out), "float_graph": str(out / FLOAT_FILE),
                               "precision": precision}
    if not onnx_only:
        plan_started = time.monotonic()
        plan = build_plan(graph, spec.input_name, max_batch, opt_batch)
        (out / PLAN_FILE).write_bytes(plan)
        info = EngineInfo(plan=PLAN_FILE, tensorrt=trt.__version__, device=device,
                          compute_capability=capability, min_batch=1, opt_batch=opt_batch,
                          max_batch=max_batch, precision=precision,
                          build_s=round(time.monotonic() - plan_started, 1))
        raw["engine"] = asdict(info)
        summary["engine"] = raw["engine"]
    (out / "model.json").write_text(json.dumps(raw, indent=2) + "\n")
    ModelSpec.load(out)  # what we wrote must load
    summary["wall_s"] = round(time.monotonic() - started, 1)
    return summary
