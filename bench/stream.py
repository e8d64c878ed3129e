"""Streaming latency and sustained rate on the Pub/Sub emulator, against a batch audit of the
same images in the same run.

Publishes references at a fixed rate for a fixed time (every image carries generator
parameters, so every one is flagged), runs `synthsieve stream` with the bundled model, and
measures from each publish to its flag message: p50/p95 latency and the sustained rate
(flags per second while publishing). The baseline is `synthsieve audit` on the same
images, in this process: its images/s is what the machine can score at all.

    .venv/bin/python bench/stream.py                      # 20 images/s for 60 s, window 10 s
    .venv/bin/python bench/stream.py --rate 10 --seconds 60
    .venv/bin/python bench/stream.py --rate 6 --seconds 40 --no-ack-after-commit
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from synthsieve.pipelines.audit import AuditConfig, run_audit
from synthsieve.pipelines.stream import StreamConfig, run_stream

PROJECT = "bench-project"
PARAMS = "a harbour at dawn\nSteps: 20, Sampler: Euler, Model: sd_xl_base_1.0, Version: v1.9.4"


def serve(port_queue) -> None:
    from synthsieve.emulators.pubsub import PubSubEmulator

    emu = PubSubEmulator().start()
    port_queue.put(emu.port)
    emu.wait()


def make_images(root: Path, n: int) -> list[Path]:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    info = PngInfo()
    info.add_text("parameters", PARAMS)
    paths = []
    for i in range(n):
        buf = io.BytesIO()
        arr = np.clip(rng.normal(128, 40, (512, 512, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(buf, "PNG", pnginfo=info)
        path = root / f"{i:05d}.png"
        path.write_bytes(buf.getvalue())
        paths.append(path)
    return paths


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=20.0, help="references published per second")
    ap.add_argument("--seconds", type=float, default=60.0, help="how long to publish")
    ap.add_argument("--window", type=float, default=10.0)
    ap.add_argument("--distinct", type=int, default=200,
                    help="distinct image files (references cycle over them)")
    ap.add_argument("--no-ack-after-commit", dest="ack_after_commit", action="store_false",
                    help="let the DirectRunner acknowledge on pull (the relay's cost)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="synthsieve-stream-bench-"))
    paths = make_images(tmp / "imgs", args.distinct)

    baseline = run_audit(AuditConfig(sources=[str(tmp / "imgs")], out_dir=str(tmp / "audit")),
                         [])
    batch_rate = baseline["scores"] / baseline["wall_s"]

    ports: multiprocessing.Queue = multiprocessing.Queue()
    server = multiprocessing.Process(target=serve, args=(ports,), daemon=True)
    server.start()
    os.environ["PUBSUB_EMULATOR_HOST"] = f"127.0.0.1:{ports.get(timeout=30)}"
    from google.cloud import pubsub_v1

    pub, sub = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topics = {t: pub.topic_path(PROJECT, t) for t in ("uploads", "flags")}
    subs = {t: sub.subscription_path(PROJECT, t) for t in topics}
    for t in topics:
        pub.create_topic(name=topics[t])
        sub.create_subscription(name=subs[t], topic=topics[t], ack_deadline_seconds=600)

    total = int(args.rate * args.seconds)
    published: dict[str, float] = {}
    flagged: dict[str, float] = {}
    stop = threading.Event()

    def collect() -> None:
        while not stop.is_set():
            got = sub.pull(subscription=subs["flags"], max_messages=500, timeout=3)
            now = time.time()
            for m in got.received_messages:
                flagged.setdefault(m.message.attributes["image_id"], now)
            if got.received_messages:
                sub.acknowledge(subscription=subs["flags"],
                                ack_ids=[m.ack_id for m in got.received_messages])

    cfg = StreamConfig(subscription=subs["uploads"], out_dir=str(tmp / "stream"),
                       flag_topic=topics["flags"], window_s=args.window,
                       ack_after_commit=args.ack_after_commit)
    runner = threading.Thread(target=run_stream, args=(cfg, []), kwargs={
        "stop": lambda: len(flagged) >= total or stop.is_set(),
        "run_for_s": args.seconds * 4 + 120}, daemon=True)
    runner.start()
    collector = threading.Thread(target=collect, daemon=True)
    collector.start()
    time.sleep(5)  # the runner's start-up is not part of a message's latency
    start = time.time()
    for i in range(total):
        due = start + i / args.rate
        time.sleep(max(0.0, due - time.time()))
        image_id = f"ref-{i:06d}"
        published[image_id] = time.time()
        pub.publish(topics["uploads"], f"file://{paths[i % len(paths)]}".encode(),
                    image_id=image_id)
    publish_end = time.time()
    runner.join(args.seconds * 4 + 130)
    stop.set()
    collector.join(10)
    server.terminate()

    lat = np.array([flagged[k] - published[k] for k in published if k in flagged])
    done_in_window = sum(1 for k in published if k in flagged and flagged[k] <= publish_end)
    result = {
        "published": total, "rate_per_s": args.rate, "window_s": args.window,
        "flagged": len(lat),
        "latency_p50_s": round(float(np.percentile(lat, 50)), 2) if lat.size else None,
        "latency_p95_s": round(float(np.percentile(lat, 95)), 2) if lat.size else None,
        "latency_max_s": round(float(lat.max()), 2) if lat.size else None,
        "sustained_flags_per_s": round(done_in_window / (publish_end - start), 2),
        "flags_per_s_overall": round(len(lat) / (max(flagged.values()) - start), 2)
        if flagged else None,
        "batch_audit_images_per_s": round(batch_rate, 2),
        "acknowledged_after_commit": args.ack_after_commit,
    }
    result["stream_over_batch"] = round(result["flags_per_s_overall"] / batch_rate, 3) \
        if flagged else None
    result["target_p95_s"] = args.window + 5
    print(json.dumps(result, indent=2))
    print(f"p50 {result['latency_p50_s']} s, p95 {result['latency_p95_s']} s "
          f"(target {args.window + 5:g} s); {result['flags_per_s_overall']} flags/s vs "
          f"{result['batch_audit_images_per_s']} images/s batch "
          f"(ratio {result['stream_over_batch']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
