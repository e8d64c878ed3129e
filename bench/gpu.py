"""GPU backends against the CPU model, in one process: images/s per batch size for
TensorRT, ONNX Runtime CUDA and ONNX Runtime CPU, the decode rate that must keep up, and how
far the GPU graph's scores are from the CPU model's on real images.

    # on a GPU worker, after `synthsieve build-engine synthsieve/models/default --out /tmp/gpu`
    .venv/bin/python bench/gpu.py --gpu-model /tmp/gpu --images ../shared/data
    # anywhere: only the agreement of the float graph (runs it on the CPU)
    .venv/bin/synthsieve build-engine synthsieve/models/default --out /tmp/gpu --onnx-only
    .venv/bin/python bench/gpu.py --gpu-model /tmp/gpu --images ../shared/data --cpu-only
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from synthsieve.inference.onnx_handler import OnnxImageModelHandler
from synthsieve.inference.spec import ModelSpec
from synthsieve.models import DEFAULT_MODEL_DIR

EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp"}


def load_images(root: Path, limit: int, spec: ModelSpec) -> tuple[list[Path], np.ndarray, float]:
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS)[:limit]
    started = time.perf_counter()
    arrays = [spec.to_uint8(spec.resize_crop(Image.open(p).convert("RGB"))) for p in paths]
    decode_rate = len(paths) / (time.perf_counter() - started)
    return paths, np.stack(arrays), decode_rate


def scores(handler, x: np.ndarray, batch: int) -> np.ndarray:
    model = handler.load_model()
    out = []
    for start in range(0, len(x), batch):
        chunk = list(x[start:start + batch])
        out += [float(np.ravel(r.inference[handler.spec.ai_output])[0])
                for r in handler.run_inference(chunk, model)]
    return np.array(out)


def throughput(handler, x: np.ndarray, batch: int, seconds: float) -> float:
    model = handler.load_model()
    chunk = [x[i % len(x)] for i in range(batch)]
    list(handler.run_inference(chunk, model))  # warm-up (and TensorRT's lazy init)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        list(handler.run_inference(chunk, model))
        done += batch
    return done / (time.perf_counter() - started)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu-model", required=True, help="OUT of synthsieve build-engine")
    ap.add_argument("--cpu-model", default=str(DEFAULT_MODEL_DIR))
    ap.add_argument("--images", required=True, help="a directory of real images")
    ap.add_argument("--limit", type=int, default=300)
    ap.add_argument("--batches", default="1,8,32,64")
    ap.add_argument("--seconds", type=float, default=10.0, help="per throughput point")
    ap.add_argument("--cpu-only", action="store_true",
                    help="no GPU here: agreement of the float graph only, run on the CPU")
    args = ap.parse_args()
    cpu_spec, gpu_spec = ModelSpec.load(args.cpu_model), ModelSpec.load(args.gpu_model)
    paths, x, decode_rate = load_images(Path(args.images), args.limit, cpu_spec)
    result: dict = {"images": len(paths), "decode_preprocess_images_per_s_one_core":
                    round(decode_rate, 1), "gpu_model": gpu_spec.raw.get("derived_from"),
                    "engine": gpu_spec.raw.get("engine")}

    cpu = OnnxImageModelHandler(cpu_spec, batch_size=1)
    providers = ("CPUExecutionProvider",) if args.cpu_only else ("CUDAExecutionProvider",)
    float_handler = OnnxImageModelHandler(gpu_spec, batch_size=32, providers=providers)
    reference, floated = scores(cpu, x, 1), scores(float_handler, x, 32)
    threshold = cpu_spec.threshold_ai
    result["agreement_with_cpu_model"] = {
        "mean_abs_score_diff": round(float(np.abs(reference - floated).mean()), 4),
        "max_abs_score_diff": round(float(np.abs(reference - floated).max()), 4),
        "same_side_of_threshold": round(float(((reference >= threshold) ==
                                                (floated >= threshold)).mean()), 4),
    }
    if not args.cpu_only:
        from synthsieve.inference.tensorrt_handler import TensorRTImageModelHandler

        table = {}
        for b in (int(v) for v in args.batches.split(",")):
            row = {"onnx-cpu": throughput(OnnxImageModelHandler(cpu_spec, batch_size=b),
                                          x, b, args.seconds),
                   "onnx-cuda": throughput(OnnxImageModelHandler(
                       gpu_spec, batch_size=b, providers=("CUDAExecutionProvider",)),
                       x, b, args.seconds)}
            if gpu_spec.raw.get("engine"):
                row["tensorrt"] = throughput(TensorRTImageModelHandler(gpu_spec, batch_size=b),
                                             x, b, args.seconds)
                row["tensorrt_over_cpu"] = row["tensorrt"] / row["onnx-cpu"]
            table[b] = {k: round(v, 1) for k, v in row.items()}
        result["images_per_s"] = table
        trt = scores(TensorRTImageModelHandler(gpu_spec, batch_size=32), x, 32) \
            if gpu_spec.raw.get("engine") else None
        if trt is not None:
            result["tensorrt_vs_float_graph_max_abs_diff"] = round(
                float(np.abs(trt - floated).max()), 4)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
