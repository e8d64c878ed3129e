"""URL-manifest throughput: synthsieve (fetch + decode + resize, --backend none) vs img2dataset.

A local aiohttp server (its own process, 127.0.0.1 only) serves N distinct JPEGs with a fixed
latency per request and 1% HTTP 500s. Both tools fetch the same manifest at the same total
concurrency in the same run, and the script prints images/s of each and their ratio.
img2dataset is run from its own virtualenv (it is a benchmark baseline, not a dependency):

    python3 -m venv .bench-venv && .bench-venv/bin/pip install img2dataset
    .venv/bin/python bench/fetch.py --img2dataset .bench-venv/bin/img2dataset

Without --img2dataset only synthsieve is measured. Target: ratio >= 1.5.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from synthsieve.io.http import HttpConfig
from synthsieve.pipelines.audit import AuditConfig, run_audit


def _jpeg_pool(n: int = 32) -> list[bytes]:
    rng = np.random.default_rng(0)
    pool = []
    for i in range(n):
        yy, xx = np.mgrid[0:480, 0:640]
        arr = np.stack([(xx + i * 7) % 256, (yy + i * 3) % 256, (xx ^ yy) % 256], -1)
        arr = np.clip(arr + rng.normal(0, 10, arr.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "JPEG", quality=85)
        pool.append(buf.getvalue())
    return pool


def _unique(jpeg: bytes, i: int) -> bytes:
    """The same picture with a JPEG comment naming i: distinct bytes, same decode cost."""
    comment = f"synthsieve bench image {i}".encode()
    return jpeg[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + jpeg[2:]


def serve(port: int, latency_s: float, error_every: int, ready) -> None:
    import asyncio

    from aiohttp import web

    pool = _jpeg_pool()

    async def image(request):
        i = int(request.match_info["i"])
        await asyncio.sleep(latency_s)
        if error_every and i % error_every == 0:
            return web.Response(status=500)
        return web.Response(body=_unique(pool[i % len(pool)], i), content_type="image/jpeg")

    app = web.Application()
    app.add_routes([web.get("/img/{i}.jpg", image)])

    async def main() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
        ready.set()
        while True:
            await asyncio.sleep(3600)

    asyncio.run(main())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_synthsieve(manifest: Path, out: Path, concurrency: int) -> dict:
    # The connection limit is per worker process (its threads share one session), and the
    # DirectRunner runs one process here: the whole budget goes to it.
    cfg = AuditConfig(sources=[str(manifest)], out_dir=str(out), backend="none",
                      http=HttpConfig(max_bytes=64 << 20, concurrency=concurrency,
                                      per_host=concurrency, retries=0,
                                      allow_private_networks=True))
    summary = run_audit(cfg, [])
    return {"inputs": summary["inputs"], "ok": summary["scores"], "errors": summary["errors"],
            "wall_s": summary["wall_s"]}


def run_img2dataset(exe: str, manifest: Path, out: Path, concurrency: int) -> dict:
    processes = 2
    cmd = [exe, "--url_list", str(manifest), "--input_format", "parquet", "--url_col", "url",
           "--output_folder", str(out), "--output_format", "files",
           "--processes_count", str(processes), "--thread_count",
           str(max(1, concurrency // processes)), "--image_size", "224",
           "--resize_mode", "center_crop", "--retries", "0", "--timeout", "10",
           "--enable_wandb", "False", "--number_sample_per_shard", "1000",
           "--disallowed_header_directives", "[]"]
    t = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.monotonic() - t
    if proc.returncode != 0:
        raise RuntimeError(f"img2dataset failed: {proc.stderr[-2000:]}")
    ok = errors = 0
    for stats in out.glob("*_stats.json"):
        s = json.loads(stats.read_text())
        ok += s.get("successes", 0)
        errors += s.get("failed_to_download", 0) + s.get("failed_to_resize", 0)
    return {"inputs": ok + errors, "ok": ok, "errors": errors, "wall_s": round(wall, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=3000)
    ap.add_argument("--latency-ms", type=float, default=50)
    ap.add_argument("--error-every", type=int, default=100, help="1 in N requests is a 500")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--img2dataset", default=None, help="path of the img2dataset executable")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    port = free_port()
    ready = multiprocessing.Event()
    server = multiprocessing.Process(target=serve, daemon=True, args=(
        port, args.latency_ms / 1000, args.error_every, ready))
    server.start()
    ready.wait(60)
    tmp = Path(tempfile.mkdtemp(prefix="synthsieve-bench-"))
    try:
        manifest = tmp / "urls.parquet"
        pq.write_table(pa.table({
            "url": [f"http://127.0.0.1:{port}/img/{i}.jpg" for i in range(args.images)],
            "caption": [f"image {i}" for i in range(args.images)]}), manifest)
        print(f"{args.images} URLs, {args.latency_ms:.0f} ms latency, 1/{args.error_every} "
              f"errors, concurrency {args.concurrency}, {os.cpu_count()} cores", flush=True)
        results = {"synthsieve": run_synthsieve(manifest, tmp / "ss", args.concurrency)}
        if args.img2dataset:
            results["img2dataset"] = run_img2dataset(args.img2dataset, manifest, tmp / "i2d",
                                                     args.concurrency)
        for r in results.values():
            r["images_per_s"] = round(r["inputs"] / r["wall_s"], 1)
        print(json.dumps(results, indent=2))
        if "img2dataset" in results:
            ratio = results["synthsieve"]["images_per_s"] / results["img2dataset"]["images_per_s"]
            print(f"ratio synthsieve/img2dataset images/s: {ratio:.2f}")
    finally:
        server.terminate()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
