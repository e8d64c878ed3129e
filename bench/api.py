"""Vendor-API throughput: synthsieve's NIM backend vs NVIDIA's one-at-a-time example client.

The NIM emulator runs in its own process on 127.0.0.1 with 200 ms latency on every
endpoint and a 50 requests/s limit (429 + Retry-After beyond it). In one run:
1. NVIDIA's example client, re-implemented faithfully (requests, one image at a time, inline
   base64 under 180,000 characters, the asset flow above), on the first --sequential images;
2. synthsieve (`audit --backend nim --api-rate 49`, its default batch of 128) on all images;
3. synthsieve again against an emulator that answers 10% of requests 429 and 5% 503.
Prints images/s, the share of the rate limit used, the ratio to the sequential client, and
whether every image ended as a scores or an errors row.

    .venv/bin/python bench/api.py
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import logging
import multiprocessing
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests
from PIL import Image

from synthsieve.emulators import common, nim
from synthsieve.inference.remote import ApiConfig
from synthsieve.pipelines.audit import AuditConfig, run_audit

KEY = "bench-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def emulator(port: int, faults: dict, ready) -> None:
    app = nim.make_app(KEY, common.Faults(**faults))

    async def started(_app) -> None:
        ready.set()

    app.on_startup.append(started)
    common.run(app, port)


def start(faults: dict) -> tuple[multiprocessing.Process, str]:
    port = free_port()
    ready = multiprocessing.Event()
    proc = multiprocessing.Process(target=emulator, args=(port, faults, ready), daemon=True)
    proc.start()
    ready.wait(30)
    return proc, f"http://127.0.0.1:{port}"


def make_images(root: Path, n: int) -> list[Path]:
    """Photos of mixed sizes: about a third are over NIM's inline limit (the asset flow)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    paths = []
    for i in range(n):
        side = 320 if i % 3 else 420
        arr = rng.integers(0, 255, (side, side, 3), dtype=np.uint8) if i % 3 == 0 else \
            np.clip(rng.normal(128, 40, (side, side, 3)), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "PNG" if i % 3 == 0 else "JPEG", quality=90)
        path = root / f"{i:04d}.{'png' if i % 3 == 0 else 'jpg'}"
        path.write_bytes(buf.getvalue())
        paths.append(path)
    return paths


def seed003_client(paths: list[Path], base: str) -> float:
    """The blog post's client: one image at a time, asset upload above the inline limit."""
    header_auth = f"Bearer {KEY}"
    invoke_url = base + nim.INVOKE_PATH
    assets_url = base + nim.ASSETS_PATH
    start_t = time.monotonic()
    for path in paths:
        binary = path.read_bytes()
        b64 = base64.b64encode(binary).decode("utf-8")
        mime = "image/png" if path.suffix == ".png" else "image/jpeg"
        if len(b64) < 180_000:
            payload = {"input": [f"data:{mime};base64,{b64}"]}
            headers = {"Content-Type": "application/json", "Authorization": header_auth,
                       "Accept": "application/json"}
        else:
            response = requests.post(assets_url, headers={
                "Content-Type": "application/json", "Authorization": header_auth,
                "accept": "application/json"},
                json={"contentType": mime, "description": "Input Image"}, timeout=30)
            requests.put(response.json()["uploadUrl"], data=binary, headers={
                "Content-Type": mime, "x-amz-meta-nvcf-asset-description": "Input Image"},
                timeout=300)
            asset_id = response.json()["assetId"]
            payload = {"input": [f"data:{mime};asset_id,{asset_id}"]}
            headers = {"Content-Type": "application/json",
                       "NVCF-INPUT-ASSET-REFERENCES": asset_id, "Authorization": header_auth}
        result = requests.post(invoke_url, headers=headers, json=payload).json()["data"][0]
        assert result.get("status") == "SUCCESS", result
    return len(paths) / (time.monotonic() - start_t)


def synthsieve_run(src: Path, out: Path, base: str, rate: float, retries: int,
                   beam_args: list[str], batch: int) -> dict:
    os.environ["NVIDIA_API_KEY"] = KEY
    cfg = AuditConfig(sources=[str(src)], out_dir=str(out), backend="nim", batch_size=batch,
                      api=ApiConfig(backend="nim", url=base + nim.INVOKE_PATH,
                                    key_env=("NVIDIA_API_KEY",), rate_per_s=rate,
                                    max_in_flight=64, retries=retries))
    s = run_audit(cfg, beam_args)
    emulator_stats = requests.get(base + "/_stats", timeout=10).json()
    sending_s = emulator_stats["last_request_at"] - emulator_stats["first_request_at"]
    # The middle 80% of requests: the steady state, without Beam's start and the last
    # workers' tail (a fixed few seconds per run, whatever its size).
    per_s = emulator_stats.pop("requests_per_second")
    cum = np.cumsum(per_s)
    lo, hi = (int(np.searchsorted(cum, q * cum[-1])) for q in (0.1, 0.9))
    steady = (cum[hi] - cum[lo]) / max(1, hi - lo)
    return {"emulator": emulator_stats, "requests_per_second": per_s,
            "steady_img_s": round(float(steady), 1),
            "sending_img_s": round(emulator_stats["ok"] / sending_s, 1),
            "inputs": s["inputs"], "scores": s["scores"], "errors": s["errors"],
            "errors_by_type": s["errors_by_type"], "accounted_for": s["accounted_for"],
            "wall_s": s["wall_s"], "images_per_s": round(s["scores"] / s["wall_s"], 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--sequential", type=int, default=60)
    ap.add_argument("--latency-ms", type=float, default=200)
    ap.add_argument("--limit", type=float, default=50, help="the emulator's requests/s limit")
    ap.add_argument("--rate", type=float, default=49, help="synthsieve's --api-rate")
    ap.add_argument("--batch", type=int, default=128, help="synthsieve's default for vendor APIs")
    ap.add_argument("--fault-images", type=int, default=2000,
                    help="images for the run with faults injected")
    ap.add_argument("beam_args", nargs="*", help="pipeline options, after --")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="synthsieve-api-bench-"))
    procs = []
    try:
        paths = make_images(tmp / "imgs", args.images)
        proc, base = start({"latency_ms": args.latency_ms, "rate_limit_per_s": args.limit})
        procs.append(proc)
        seq = seed003_client(paths[:args.sequential], base)
        proc1, base1 = start({"latency_ms": args.latency_ms, "rate_limit_per_s": args.limit})
        procs.append(proc1)
        fast = synthsieve_run(tmp / "imgs", tmp / "out", base1, args.rate, retries=5,
                              beam_args=args.beam_args, batch=args.batch)
        proc2, base2 = start({"latency_ms": args.latency_ms, "rate_limit_per_s": args.limit,
                              "throttle_rate": 0.10, "error_rate": 0.05, "seed": 1})
        procs.append(proc2)
        faults_src = tmp / "imgs"
        if args.fault_images < args.images:
            faults_src = tmp / "imgs_faults"
            faults_src.mkdir()
            for path in paths[:args.fault_images]:
                os.link(path, faults_src / path.name)
        faulty = synthsieve_run(faults_src, tmp / "out_faults", base2, args.rate,
                                retries=10, beam_args=args.beam_args, batch=args.batch)
        result = {
            "images": args.images, "latency_ms": args.latency_ms, "limit_per_s": args.limit,
            "seed003_sequential_img_s": round(seq, 2),
            "synthsieve": fast,
            "share_of_rate_limit": round(fast["images_per_s"] / args.limit, 3),
            "share_of_rate_limit_while_sending": round(fast["sending_img_s"] / args.limit, 3),
            "share_of_rate_limit_steady": round(fast["steady_img_s"] / args.limit, 3),
            "ratio_to_sequential": round(fast["images_per_s"] / seq, 1),
            "with_10pct_429_5pct_5xx": faulty,
        }
        print(json.dumps(result, indent=2))
        print(f"share of rate limit {result['share_of_rate_limit']:.3f} over the whole run, "
              f"{result['share_of_rate_limit_while_sending']:.3f} while sending, "
              f"{result['share_of_rate_limit_steady']:.3f} in the steady state; "
              f"ratio to sequential {result['ratio_to_sequential']:.1f}x; "
              f"faults run accounted for: {faulty['accounted_for']}")
    finally:
        for p in procs:
            p.terminate()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
