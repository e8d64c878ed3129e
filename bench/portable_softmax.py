"""What the portable softmax costs: the bundled model as shipped against the same model with
ONNX Runtime's fused Softmax, on each integer kernel this CPU computes exactly.

The fused Softmax's last bits depend on the CPU's vector width, and the model's dynamic
quantisation turns them into score differences of a few hundredths (docs/numerics.md), so
the shipped graph writes the softmax out. Both graphs run here in one process, one image per
call on synthsieve's session options, interleaved image by image, so the ratio printed at
the end (portable over fused, median per-image time) is comparable across noisy machines.
The fused graph is assembled from the pinned encoder in the cache (`synthsieve fetch-model`
put it there) and head.json.

    .venv/bin/python bench/portable_softmax.py                 # the sample's images
    .venv/bin/python bench/portable_softmax.py --rounds 20 --threads 1
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from synthsieve.inference.kernels import U8S8, U8U8, has_exact_u8s8, kernel_report, signed_weights
from synthsieve.inference.onnx_handler import session_options
from synthsieve.inference.preprocess import prepare_folder
from synthsieve.inference.spec import ModelSpec
from synthsieve.models import DEFAULT_MODEL_DIR
from synthsieve.models.assemble import ENCODER_FILE, build_onnx, cache_dir

SAMPLE = Path(__file__).resolve().parents[1] / "sample"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default=str(SAMPLE), help="a folder of images (default: the "
                                                          "bundled sample)")
    ap.add_argument("--rounds", type=int, default=10, help="passes over the images")
    ap.add_argument("--threads", type=int, default=1,
                    help="intra-op threads per call (the handler gives each concurrent "
                         "one-image call 1)")
    args = ap.parse_args()
    spec = ModelSpec.load(DEFAULT_MODEL_DIR)
    encoder = cache_dir() / ENCODER_FILE
    if not Path(spec.model_path).is_file() or not encoder.is_file():
        print("run `synthsieve fetch-model` first (it assembles the model and caches the "
              "encoder)", file=sys.stderr)
        return 2
    xs = [spec.normalize_batch(x[None])
          for x in prepare_folder(Path(args.images), spec).values()]
    if not xs:
        print(f"no decodable images in {args.images}", file=sys.stderr)
        return 2
    head = json.loads((DEFAULT_MODEL_DIR / "head.json").read_text())
    kernels = [U8U8, U8S8] if has_exact_u8s8() else [U8U8]
    sessions: dict[tuple[str, str], ort.InferenceSession] = {}
    with tempfile.TemporaryDirectory() as tmp:
        fused = Path(tmp) / "fused.onnx"
        build_onnx(encoder, head, fused, portable=False)
        for graph_name, path in (("portable", Path(spec.model_path)), ("fused", fused)):
            graph = onnx.load(str(path))
            for kernel in kernels:
                model = signed_weights(graph) if kernel == U8S8 else graph
                sessions[(graph_name, kernel)] = ort.InferenceSession(
                    model.SerializeToString(), session_options(args.threads),
                    providers=["CPUExecutionProvider"])
    names = [o.name for o in next(iter(sessions.values())).get_outputs()]
    ai = names.index(spec.ai_output)
    times: dict[tuple[str, str], list[float]] = {k: [] for k in sessions}
    scores: dict[tuple[str, str], list[float]] = {k: [] for k in sessions}
    for r in range(args.rounds + 1):  # round 0 warms up
        for x in xs:
            for key, session in sessions.items():
                t = time.perf_counter()
                out = session.run(names, {spec.input_name: x})
                if r:
                    times[key].append(time.perf_counter() - t)
                else:
                    scores[key].append(float(out[ai][0, 0]))
    ms = {k: 1000 * float(np.median(v)) for k, v in times.items()}
    result = {
        "where": kernel_report(),
        "images": len(xs), "rounds": args.rounds, "threads": args.threads,
        "median_ms": {f"{g}/{k}": round(v, 1) for (g, k), v in ms.items()},
        "portable_over_fused": {k: round(ms[("portable", k)] / ms[("fused", k)], 3)
                                for k in kernels},
        # how far apart the two graphs score the same image: the size of a last-bit change
        # once the quantisation has amplified it
        "largest_score_difference_fused_vs_portable": round(max(
            abs(a - b) for a, b in zip(scores[("portable", U8U8)], scores[("fused", U8U8)],
                                       strict=True)), 4),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
