"""CPU throughput of the audit: decode+preprocess alone, inference alone, whole pipeline.

All run in this one process on the same images, so the ratios printed at the end are
comparable across noisy machines: the pipeline's images/s over the slower of the two stages,
and inference with the integer kernels this CPU gets (inference/kernels.py) over the same
model forced onto the UINT8 x UINT8 kernels (SYNTHSIEVE_INT8_KERNEL=u8u8), the choice an
AVX2-only CPU gets, one image per call as before; and inference as the handler runs this
model (one-image calls on a thread each, several at once) over the same calls run one at a
time on every thread. Decode and inference alone each have every core to themselves; the
pipeline runs both on the same cores, so it is also compared with the rate the two reach
when they take turns on them. On a shared machine one measurement of each moves by a fifth
from run to run, so `--repeat` measures all three in turn several times and reports the
median of each repeat's ratios. It also counts the CPU seconds each part takes (decode,
provenance read, inference, the whole pipeline from start to finish): the pipeline's CPU
seconds over the cores is the least time it can take here, which bounds its ratio however
well the parts overlap.

    .venv/bin/python bench/audit_cpu.py                       # ../shared/data if present
    .venv/bin/python bench/audit_cpu.py --source DIR --limit 300
    .venv/bin/python bench/audit_cpu.py -- --direct_num_workers 1   # the runner's own default
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from synthsieve.inference.kernels import ENV, U8U8
from synthsieve.inference.onnx_handler import OnnxImageModelHandler, default_intra_op_threads
from synthsieve.inference.preprocess import prepare
from synthsieve.inference.spec import ModelSpec
from synthsieve.models import DEFAULT_MODEL_DIR
from synthsieve.pipelines.audit import AuditConfig, run_audit
from synthsieve.provenance import ProvenanceOptions, ProvenanceReader
from synthsieve.runners.choice import with_local_defaults

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def synthetic_corpus(root: Path, n: int) -> Path:
    """Camera-like JPEGs and generator-like PNGs of mixed sizes (when ../shared is absent)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        w, h = (int(v) for v in rng.choice([(4000, 3000), (1024, 1024), (1920, 1080),
                                            (768, 512)], 1)[0])
        yy, xx = np.mgrid[0:h:4, 0:w:4]
        base = np.stack([xx % 256, yy % 256, (xx + yy) % 256], -1).astype(np.float32)
        small = Image.fromarray(np.clip(base + rng.normal(0, 20, base.shape), 0, 255)
                                .astype(np.uint8)).resize((w, h))
        buf = io.BytesIO()
        if i % 2:
            small.save(buf, "JPEG", quality=90)
            (root / f"{i:04d}.jpg").write_bytes(buf.getvalue())
        else:
            small.save(buf, "PNG")
            (root / f"{i:04d}.png").write_bytes(buf.getvalue())
    return root


def images_of(source: Path, limit: int) -> list[Path]:
    files = sorted(p for p in source.rglob("*") if p.is_file()
                   and p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp", ".gif"))
    return files[:limit]


def bench_decode(files: list[Path], spec: ModelSpec, threads: int) -> tuple[float, float, list]:
    """(images/s, CPU seconds, the decoded images and their model inputs)."""
    blobs = [f.read_bytes() for f in files]
    t, cpu = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(threads) as pool:
        decoded = list(pool.map(lambda b: prepare(b, spec, 10**9), blobs))
    return (len(blobs) / (time.perf_counter() - t), time.process_time() - cpu,
            [(b, d, p) for b, (d, p) in zip(blobs, decoded, strict=True)])


def provenance_cpu_s(decoded: list) -> float:
    """CPU seconds the pipeline's provenance read takes over these images, on one thread."""
    reader = ProvenanceReader(ProvenanceOptions())
    cpu = time.process_time()
    for data, d, _ in decoded:
        reader.read(data, d.original, d.stored_pixels, d.format)
    return time.process_time() - cpu


def bench_inference(prepared: list, spec: ModelSpec, batch: int, threads: int,
                    kernel: str | None = None, calls: int | None = None
                    ) -> tuple[float, str, float]:
    """(images/s, the kernel it ran on, CPU seconds); `kernel` forces one
    (SYNTHSIEVE_INT8_KERNEL), `calls` the one-image calls run at once (default: the
    handler's)."""
    before = os.environ.get(ENV)
    if kernel:
        os.environ[ENV] = kernel
    try:
        handler = OnnxImageModelHandler(spec, batch_size=batch, intra_op_threads=threads,
                                        concurrent_calls=calls)
        session = handler.load_model()
    finally:
        if before is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = before
    list(handler.run_inference(prepared[:batch], session))  # warm-up
    t, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(prepared), batch):
        list(handler.run_inference(prepared[i:i + batch], session))
    rate = len(prepared) / (time.perf_counter() - t)
    cpu = time.process_time() - cpu
    session.close()
    return rate, session.kernel, cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default=None, help="directory of images (default ../shared/data)")
    ap.add_argument("--limit", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--model", default=str(DEFAULT_MODEL_DIR))
    ap.add_argument("--repeat", type=int, default=3,
                    help="rounds of inference, u8u8 inference and pipeline, in turn")
    ap.add_argument("--threads", type=int, default=None,
                    help="ONNX Runtime intra-op threads, alone and in the pipeline (default: "
                         "the cores, shared among the pipeline's workers)")
    ap.add_argument("beam_args", nargs="*", help="pipeline options, after --")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        if args.source:
            source = Path(args.source)
        elif (SHARED / "SOURCES.csv").is_file():
            source = SHARED
        else:
            source = synthetic_corpus(Path(tmp) / "corpus", min(args.limit, 300))
        files = images_of(source, args.limit)
        spec = ModelSpec.load(args.model)
        beam_args = with_local_defaults(args.beam_args)
        workers = 1
        if "--direct_num_workers" in beam_args:
            workers = int(beam_args[beam_args.index("--direct_num_workers") + 1])
        cores = default_intra_op_threads(1)
        # inference alone gets as many threads as the pipeline's model (one worker's share
        # of the cores unless --threads says); decode alone gets every core
        ort_threads = args.threads or default_intra_op_threads(workers)
        threads = args.threads or cores
        print(f"{len(files)} images from {source}; {cores} cores; {ort_threads} intra-op "
              f"threads in the pipeline; batch {args.batch_size}; "
              f"pipeline options {' '.join(beam_args) or '(DirectRunner defaults)'}", flush=True)

        decode_1, decode_cpu, decoded = bench_decode(files, spec, 1)
        decode_n, _, _ = bench_decode(files, spec, cores)
        prepared = [p for _, _, p in decoded]
        prov_cpu = provenance_cpu_s(decoded)
        del decoded
        # The pipeline reads from a manifest of exactly these files.
        manifest = Path(tmp) / "bench.csv"
        manifest.write_text("uri\n" + "".join(f"{f}\n" for f in files))
        rounds = []
        for i in range(args.repeat):
            infer, kernel, infer_cpu = bench_inference(prepared, spec, args.batch_size, threads)
            # one call at a time on every thread: how the handler ran this model before
            infer_serial, _, _ = bench_inference(prepared, spec, args.batch_size, threads,
                                                 calls=1)
            infer_u8u8, _, _ = bench_inference(prepared, spec, 1, threads, kernel=U8U8,
                                               calls=1)
            cfg = AuditConfig(sources=[str(manifest)], out_dir=str(Path(tmp) / f"out{i}"),
                              model_dir=args.model, batch_size=args.batch_size,
                              intra_op_threads=ort_threads)
            cpu = time.process_time()
            summary = run_audit(cfg, args.beam_args)
            pipeline_cpu = time.process_time() - cpu
            pipeline = (summary["scores"] + summary["errors"]) / summary["wall_s"]
            # decode and inference each measured with every core to itself; the pipeline
            # runs both on the same cores, so this is the most it could do
            shared = 1 / (1 / infer + 1 / decode_n)
            rounds.append({"inference": infer, "u8u8": infer_u8u8, "pipeline": pipeline,
                           "serial": infer_serial, "concurrency_gain": infer / infer_serial,
                           "wall_s": summary["wall_s"], "shared": shared,
                           "shared_ratio": pipeline / shared,
                           "pipeline_ratio": pipeline / min(decode_n, infer),
                           "kernel_ratio": infer / infer_u8u8,
                           "inference_cpu": infer_cpu, "pipeline_cpu": pipeline_cpu,
                           # were every core busy all the time, the pipeline's CPU work
                           # would still take this long: its best ratio on this machine
                           "cpu_bound_ratio": len(files) * cores / pipeline_cpu / infer})
            print(f"round {i + 1}: inference {infer:.1f} (one call at a time "
                  f"{infer_serial:.1f}), u8u8 one per call "
                  f"{infer_u8u8:.1f}, pipeline {pipeline:.1f} images/s", flush=True)

    def median(key: str) -> float:
        return float(np.median([r[key] for r in rounds]))

    result = {
        "images": len(files),
        "rounds": args.repeat,
        "decode_preprocess_img_s_1_thread": round(decode_1, 1),
        f"decode_preprocess_img_s_{cores}_threads": round(decode_n, 1),
        f"inference_img_s_batch_{args.batch_size}": round(median("inference"), 1),
        "kernel": kernel,
        "inference_img_s_one_call_at_a_time": round(median("serial"), 1),
        "ratio_inference_to_one_call_at_a_time": round(median("concurrency_gain"), 2),
        "inference_img_s_u8u8_one_per_call": round(median("u8u8"), 1),
        "ratio_inference_to_u8u8_one_per_call": round(median("kernel_ratio"), 2),
        "pipeline_img_s": round(median("pipeline"), 1),
        "pipeline_wall_s_incl_startup": round(median("wall_s"), 2),
        "slower_stage": "inference" if median("inference") <= decode_n else "decode",
        "ratio_pipeline_to_slower_stage": round(median("pipeline_ratio"), 3),
        "ratio_pipeline_to_slower_stage_each_round": [
            round(r["pipeline_ratio"], 3) for r in rounds],
        "decode_and_inference_on_shared_cores_img_s": round(median("shared"), 1),
        "ratio_pipeline_to_shared_cores": round(median("shared_ratio"), 3),
        "cpu_s_per_image": {
            "decode_preprocess": round(decode_cpu / len(files), 4),
            "provenance": round(prov_cpu / len(files), 4),
            "inference": round(median("inference_cpu") / len(files), 4),
            "pipeline_start_to_finish": round(median("pipeline_cpu") / len(files), 4)},
        "ratio_if_every_core_were_busy": round(median("cpu_bound_ratio"), 3),
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))
    print(f"ratio pipeline/slower stage: {result['ratio_pipeline_to_slower_stage']:.3f} "
          f"(to decode and inference sharing the cores: "
          f"{result['ratio_pipeline_to_shared_cores']:.3f}; the pipeline's CPU work "
          f"allows at most {result['ratio_if_every_core_were_busy']:.3f} on {cores} cores); "
          f"inference on {kernel} over u8u8 one image per call: "
          f"{result['ratio_inference_to_u8u8_one_per_call']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
