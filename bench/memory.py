"""Peak memory of an audit against corpus size: it must stay flat (nothing materialised).

Writes N small PNGs (every tenth with generator parameters, so provenance has work), then
audits the first N/10, N/2 and all N, each in a fresh process, and prints each run's peak
RSS and the ratios between them. With the bundled model by default; `--backend none` measures the
read/decode/provenance path alone.

    .venv/bin/python bench/memory.py                      # 20,000 images
    .venv/bin/python bench/memory.py --images 5000 --backend none
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

PARAMS = "a boat\nSteps: 20, Sampler: Euler, Model: sd_xl_base_1.0, Version: v1.9.4"


def make_corpus(root: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    info = PngInfo()
    info.add_text("parameters", PARAMS)
    for i in range(n):
        sub = root / f"{i // 1000:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
            buf, "PNG", pnginfo=info if i % 10 == 0 else None)
        (sub / f"{i:06d}.png").write_bytes(buf.getvalue())


CHILD = """
import json, resource, sys
from synthsieve.cli import main
rc = main(sys.argv[1:])
print("PEAK_RSS_KIB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(rc)
"""


def audit_peak_rss(sources: list[str], out: Path, backend: str) -> dict:
    """Runs one audit in a fresh process; returns its summary figures and peak RSS."""
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", CHILD, "-q", "audit", *sources, "--out",
                           str(out), "--backend", backend], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    text, _, peak = proc.stdout.rpartition("PEAK_RSS_KIB")
    summary = json.loads(text)
    return {"images": summary["inputs"], "accounted_for": summary["accounted_for"],
            "peak_rss_mib": round(int(peak) / 1024, 1),
            "wall_s": round(time.monotonic() - start, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--backend", default="onnx", choices=("onnx", "none"))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="synthsieve-memory-bench-"))
    make_corpus(tmp / "corpus", args.images)
    # A tenth, a half and all of the corpus, each audited as one directory so that the three
    # runs build the same pipeline (several SOURCEs add a group-by-URI). The bounded caches
    # (the duplicate rendezvous keeps up to 20,000 outcomes, writers buffer up to 5,000 rows
    # each) fill on the way to a half of 20,000: the half -> all ratio shows what still grows.
    files = sorted((tmp / "corpus").rglob("*.png"))
    runs = {}
    for name, count in (("tenth", len(files) // 10), ("half", len(files) // 2)):
        part = tmp / name
        for f in files[:count]:
            (part / f.parent.name).mkdir(parents=True, exist_ok=True)
            os.link(f, part / f.parent.name / f.name)
        runs[name] = audit_peak_rss([str(part)], tmp / f"out-{name}", args.backend)
    runs["all"] = audit_peak_rss([str(tmp / "corpus")], tmp / "out-all", args.backend)
    result = {"backend": args.backend, **runs}
    for small in ("tenth", "half"):
        result[f"peak_rss_ratio_all_over_{small}"] = round(
            runs["all"]["peak_rss_mib"] / runs[small]["peak_rss_mib"], 3)
    print(json.dumps(result, indent=2))
    print("peak RSS " + ", ".join(f"{r['peak_rss_mib']} MiB for {r['images']} images"
                                  for r in runs.values())
          + f": all/half {result['peak_rss_ratio_all_over_half']}, "
          f"all/tenth {result['peak_rss_ratio_all_over_tenth']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
