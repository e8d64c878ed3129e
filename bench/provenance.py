"""Cost of reading provenance, as a ratio of decode cost, and what it costs a whole audit.

In one process on the same images (../shared/data when present, else a synthetic corpus):
1. decode + preprocess to the bundled model's input (the baseline), per image;
2. each provenance reader on the same bytes (C2PA, XMP, EXIF, generator text, watermark),
   and, where invisible-watermark is importable, the package's own decoder for the three
   Stable Diffusion marks for comparison;
3. audits of the same images with and without provenance: --backend none (decode-bound,
   the worst case) and, with --model-runs, the bundled model (what a default audit pays).

    .venv/bin/python bench/provenance.py
    .venv/bin/python bench/provenance.py --model-runs
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from audit_cpu import SHARED, images_of, synthetic_corpus  # noqa: E402

from synthsieve.images import decode_image  # noqa: E402
from synthsieve.inference.preprocess import prepare  # noqa: E402
from synthsieve.inference.spec import ModelSpec  # noqa: E402
from synthsieve.models import DEFAULT_MODEL_DIR  # noqa: E402
from synthsieve.pipelines.audit import AuditConfig, run_audit  # noqa: E402
from synthsieve.provenance import ProvenanceOptions, ProvenanceReader, texts_of  # noqa: E402
from synthsieve.provenance.c2pa_manifest import C2paReader  # noqa: E402
from synthsieve.provenance.exif import read_exif, user_comment  # noqa: E402
from synthsieve.provenance.generation import read_generation  # noqa: E402
from synthsieve.provenance.watermark import SCHEMES, read_watermark  # noqa: E402
from synthsieve.provenance.xmp import packet_of, read_xmp  # noqa: E402


def per_image_ms(fn, items, repeat: int = 2) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, time.perf_counter() - start)
    return best / len(items) * 1000


def package_decoder():
    try:
        from imwatermark.maxDct import EmbedMaxDct
    except ImportError:
        return None

    def decode_all(rgb: np.ndarray) -> None:
        for scheme in SCHEMES:
            for order in scheme.orders:
                img = rgb[:, :, ::-1] if order == "bgr" else rgb
                EmbedMaxDct(watermarks=[], wmLen=scheme.bits.size).decode(
                    np.ascontiguousarray(img))
    return decode_all


def audit_rate(src: Path, backend: str, provenance: bool, tmp: Path) -> float:
    cfg = AuditConfig(sources=[str(src)], out_dir=str(tmp / f"{backend}-{provenance}-"
                                                    f"{time.monotonic_ns()}"),
                      backend=backend, provenance=ProvenanceOptions() if provenance else None)
    summary = run_audit(cfg, [])
    return summary["scores"] / summary["wall_s"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=SHARED if SHARED.is_dir() else None)
    ap.add_argument("--limit", type=int, default=300)
    ap.add_argument("--model-runs", action="store_true",
                    help="also time audits with the bundled model (slow: about a minute)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="synthsieve-prov-bench-"))
    source = args.source or synthetic_corpus(tmp / "corpus", 60)
    paths = images_of(source, args.limit)
    blobs = [p.read_bytes() for p in paths]
    spec = ModelSpec.load(DEFAULT_MODEL_DIR)

    decodable = []
    for data in blobs:
        try:
            decoded = decode_image(data, (spec.width, spec.height), 10**8)
            decodable.append((data, decoded))
        except Exception:
            continue
    rgbs = [np.asarray(dec.stored_pixels) for _, dec in decodable
            if dec.stored_pixels is not None]

    c2pa = C2paReader()
    reader = ProvenanceReader(ProvenanceOptions())
    result: dict = {"images": len(decodable), "source": str(source)}
    base = per_image_ms(lambda d: prepare(d, spec, 10**8), [d for d, _ in decodable])
    stages = {
        "c2pa": per_image_ms(lambda x: c2pa.read(x[0], x[1].format), decodable),
        "xmp": per_image_ms(lambda x: read_xmp(packet_of(x[1].original)), decodable),
        "exif": per_image_ms(lambda x: read_exif(x[1].original), decodable),
        "generation_params": per_image_ms(lambda x: read_generation(
            texts_of(x[1].original), user_comment(x[1].original)), decodable),
        "watermark (images it runs on)": per_image_ms(read_watermark, rgbs)
        if rgbs else None,
        "all, as the audit runs it": per_image_ms(lambda x: reader.read(
            x[0], x[1].original, x[1].stored_pixels, x[1].format), decodable),
    }
    result["decode_preprocess_ms_per_image"] = round(base, 2)
    result["provenance_ms_per_image"] = {k: round(v, 3) if v is not None else None
                                         for k, v in stages.items()}
    result["watermark_checked_images"] = len(rgbs)
    result["provenance_cost_ratio_to_decode"] = round(stages["all, as the audit runs it"] / base,
                                                      3)
    pkg = package_decoder()
    if pkg and rgbs:
        ours = per_image_ms(read_watermark, rgbs[:40], repeat=1)
        theirs = per_image_ms(pkg, rgbs[:40], repeat=1)
        result["watermark_package_decoder_ms"] = round(theirs, 2)
        result["watermark_vectorised_ms"] = round(ours, 2)
    runs = [("none", False), ("none", True)]
    if args.model_runs:
        runs += [("onnx", False), ("onnx", True)]
    rates = {f"{b}{'+provenance' if p else ''}": round(audit_rate(source, b, p, tmp), 1)
             for b, p in runs}
    result["audit_images_per_s"] = rates
    result["metadata_scan_keeps"] = round(rates["none+provenance"] / rates["none"], 3)
    if args.model_runs:
        result["default_audit_keeps"] = round(rates["onnx+provenance"] / rates["onnx"], 3)
    print(json.dumps(result, indent=2))
    print(f"provenance costs {result['provenance_cost_ratio_to_decode']:.2f}x decode; "
          f"a metadata scan keeps {result['metadata_scan_keeps']:.0%} of its speed"
          + (f", a default audit {result['default_audit_keeps']:.0%}" if args.model_runs
             else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
