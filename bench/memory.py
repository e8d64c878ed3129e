"""Peak memory of an audit against corpus size: it must stay flat (nothing materialised).

`--source dirs` (default) writes N small PNGs in subdirectories of 1,000 (every tenth with
generator parameters, so provenance has work), then audits the first N/10, N/2 and all N,
each in a fresh process, and prints each run's peak RSS and the ratios between them. With
the bundled model by default; `--backend none` measures the read/decode/provenance path
alone. The other sources measure one kind of listing each:
- `flat-dir`: N empty files in one directory (each an `empty_file` error row);
- `manifest`: a manifest naming the `dirs` corpus's files;
- `missing-manifest`: a manifest of N files that do not exist (each a `not_found` row);
- `prefix`: N empty objects under one S3 prefix on a moto_server on 127.0.0.1 (each an
  `empty_file` row), uploaded in steps so the three runs list a growing prefix.

    .venv/bin/python bench/memory.py                      # 20,000 images
    .venv/bin/python bench/memory.py --images 5000 --backend none
    .venv/bin/python bench/memory.py --source flat-dir --images 1000000 --backend none
    .venv/bin/python bench/memory.py --source manifest --images 1000000 --side 16 --backend none
    .venv/bin/python bench/memory.py --source prefix --images 300000 --backend none
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

PARAMS = "a boat\nSteps: 20, Sampler: Euler, Model: sd_xl_base_1.0, Version: v1.9.4"


def make_corpus(root: Path, n: int, side: int = 64) -> None:
    rng = np.random.default_rng(0)
    info = PngInfo()
    info.add_text("parameters", PARAMS)
    for i in range(n):
        sub = root / f"{i // 1000:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(
            buf, "PNG", pnginfo=info if i % 10 == 0 else None)
        (sub / f"{i:06d}.png").write_bytes(buf.getvalue())


CHILD = """
import json, resource, sys
from synthsieve.cli import main
rc = main(sys.argv[1:])
print("PEAK_RSS_KIB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(rc)
"""


def audit_peak_rss(sources: list[str], out: Path, backend: str,
                   extra: tuple[list[str], dict[str, str]] = ([], {})) -> dict:
    """Runs one audit in a fresh process; returns its summary figures and peak RSS.
    `extra`: more audit arguments and environment variables (an object store's)."""
    start = time.monotonic()
    args, env = extra
    proc = subprocess.run([sys.executable, "-c", CHILD, "-q", "audit", *sources, "--out",
                           str(out), "--backend", backend, *args], capture_output=True,
                          text=True, env={**os.environ, **env})
    if proc.returncode not in (0, 4):  # 4: every input failed, as the error-row corpora do
        raise RuntimeError(proc.stderr[-3000:])
    text, _, peak = proc.stdout.rpartition("PEAK_RSS_KIB")
    summary = json.loads(text)
    return {"images": summary["inputs"], "accounted_for": summary["accounted_for"],
            "peak_rss_mib": round(int(peak) / 1024, 1),
            "wall_s": round(time.monotonic() - start, 1)}


def make_sources(tmp: Path, kind: str, n: int, side: int = 64) -> dict[str, list[str]]:
    """SOURCE arguments for a tenth, a half and all of a corpus of kind `kind`."""
    counts = {"tenth": n // 10, "half": n // 2, "all": n}
    if kind == "missing-manifest":
        out = {}
        for name, count in counts.items():
            m = tmp / f"{name}.csv"
            m.write_text("uri\n" + "".join(f"{tmp}/gone/{i:08d}.png\n" for i in range(count)))
            out[name] = [str(m)]
        return out
    if kind == "flat-dir":
        out = {}
        for name, count in counts.items():
            d = tmp / f"flat-{name}"
            d.mkdir()
            for i in range(count):
                (d / f"{i:08d}.png").touch()
            out[name] = [str(d)]
        return out
    make_corpus(tmp / "corpus", n, side)
    files = sorted((tmp / "corpus").rglob("*.png"))
    out = {}
    for name, count in counts.items():
        if kind == "manifest":
            m = tmp / f"{name}.csv"
            m.write_text("uri\n" + "".join(f"{f}\n" for f in files[:count]))
            out[name] = [str(m)]
        elif name == "all":
            out[name] = [str(tmp / "corpus")]
        else:
            # each run audits one directory, so that the three build the same pipeline
            part = tmp / name
            for f in files[:count]:
                (part / f.parent.name).mkdir(parents=True, exist_ok=True)
                os.link(f, part / f.parent.name / f.name)
            out[name] = [str(part)]
    return out


@contextlib.contextmanager
def growing_prefix(n: int) -> Iterator[tuple[dict, tuple[list[str], dict[str, str]]]]:
    """A moto_server on 127.0.0.1 and {name: a function that uploads that run's objects
    and returns its SOURCE arguments}, with the audit's extra arguments and environment."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import boto3
    from servers import CLOUD_ENV, s3_server

    os.environ.update(CLOUD_ENV)
    with s3_server() as s3:
        client = boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1")
        client.create_bucket(Bucket="corpus")
        uploaded = 0

        def upload_to(count: int) -> list[str]:
            nonlocal uploaded
            with ThreadPoolExecutor(16) as pool:
                list(pool.map(lambda i: client.put_object(
                    Bucket="corpus", Key=f"images/{i:08d}.png", Body=b""),
                    range(uploaded, count)))
            uploaded = count
            return ["s3://corpus/images/"]

        steps = {name: functools.partial(upload_to, count) for name, count in
                 (("tenth", n // 10), ("half", n // 2), ("all", n))}
        yield steps, (s3.beam_args, CLOUD_ENV)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--backend", default="onnx", choices=("onnx", "none"))
    ap.add_argument("--source", default="dirs",
                    choices=("dirs", "flat-dir", "manifest", "missing-manifest",
                             "prefix"))
    ap.add_argument("--side", type=int, default=64,
                    help="pixels per side of the generated PNGs (dirs and manifest); a "
                    "million 64x64 PNGs take 12 GB of disk")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="synthsieve-memory-bench-"))
    # The bounded caches (the duplicate rendezvous keeps up to 20,000 outcomes, writers
    # buffer up to 5,000 rows each) fill on the way to a half of 20,000: the half -> all
    # ratio shows what still grows.
    if args.source == "prefix":
        with growing_prefix(args.images) as (steps, extra):
            runs = {name: audit_peak_rss(upload(), tmp / f"out-{name}", args.backend, extra)
                    for name, upload in steps.items()}
    else:
        sources = make_sources(tmp, args.source, args.images, args.side)
        runs = {name: audit_peak_rss(srcs, tmp / f"out-{name}", args.backend)
                for name, srcs in sources.items()}
    result = {"source": args.source, "backend": args.backend, **runs}
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
