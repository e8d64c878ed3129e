"""A local stand-in for Hive's v2 sync task API, for tests and benchmarks (127.0.0.1 only).

It checks requests as the real API does (token, multipart `media`, size, that the bytes are
an image) and answers in the seed-001 response format with scores derived from the image's
sha256, so the same bytes always get the same answer. Fault switches: latency, a requests/s
limit answered with 429 + Retry-After, a share of 5xx, of hung requests and of malformed
bodies.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import random
import time
from collections import deque
from dataclasses import dataclass

from aiohttp import web
from PIL import Image

from synthsieve.schema import SOURCE_CLASSES

HOST = "127.0.0.1"
PATH = "/api/v2/task/sync"
SOURCE_HEAD = [c for c in SOURCE_CLASSES if c != "none"]
STATS = web.AppKey("stats", dict)


@dataclass
class Faults:
    latency_ms: float = 0.0
    rate_limit_per_s: float = 0.0  # 0: unlimited
    error_rate: float = 0.0  # share of requests answered 503
    timeout_rate: float = 0.0  # share of requests that hang until the client gives up
    malformed_rate: float = 0.0  # share of 200 answers whose body is not JSON
    max_bytes: int = 20 * 1024 * 1024
    seed: int = 0


def expected_scores(data: bytes) -> tuple[float, str, float]:
    """(ai_generated, source, deepfake) the emulator answers for these bytes."""
    h = hashlib.sha256(data).digest()
    ai = int.from_bytes(h[:4], "big") / 0xFFFFFFFF
    source = SOURCE_HEAD[h[4] % len(SOURCE_HEAD)]
    deepfake = h[5] / 255 * 0.1
    return ai, source, deepfake


def hive_response(data: bytes, filename: str, width: int, height: int, mime: str) -> dict:
    ai, source, deepfake = expected_scores(data)
    classes = [{"class": "not_ai_generated", "score": 1 - ai},
               {"class": "ai_generated", "score": ai}]
    for c in SOURCE_HEAD:
        classes.append({"class": c, "score": ai if c == source else 0.0})
    classes.append({"class": "none", "score": 1 - ai})
    classes.append({"class": "deepfake", "score": deepfake})
    return {"status": [{"status": {"code": "0", "message": "SUCCESS"}, "response": {
        "input": {"charge": 0.00001, "model": "AI art and deepfake detection",
                  "id": hashlib.md5(data).hexdigest(),  # noqa: S324 (an id, not security)
                  "media": {"url": None, "filename": filename, "type": "PHOTO",
                            "mime_type": mime.split("/")[-1], "mimetype": mime,
                            "width": width, "height": height, "num_frames": 1, "duration": 0},
                  "model_version": 1, "model_type": "CATEGORIZATION"},
        "output": [{"classes": classes, "time": 0, "algorithmic_tags": {
            "c2pa": {"claim_generator": "", "actions_software_agent": "",
                     "actions_action": "", "actions_digital_source_type": ""},
            "xmp": {"digital_source_file_type": "", "credit": "", "digital_source_type": ""},
            "exif": {"make": ""}}}]}}]}


def make_app(key: str, faults: Faults) -> web.Application:
    rng = random.Random(faults.seed)
    recent: deque[float] = deque()
    stats = {"requests": 0, "ok": 0, "rate_limited": 0, "errors": 0}

    async def task_sync(request: web.Request) -> web.StreamResponse:
        stats["requests"] += 1
        if request.headers.get("Authorization") != f"Token {key}":
            return web.json_response({"message": "invalid or missing API token"}, status=401)
        if faults.rate_limit_per_s:
            now = time.monotonic()
            while recent and now - recent[0] > 1.0:
                recent.popleft()
            if len(recent) >= faults.rate_limit_per_s:
                stats["rate_limited"] += 1
                return web.json_response({"message": "rate limit exceeded"}, status=429,
                                         headers={"Retry-After": "1"})
            recent.append(now)
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        roll = rng.random()
        if roll < faults.timeout_rate:
            await asyncio.sleep(3600)
        if roll < faults.timeout_rate + faults.error_rate:
            stats["errors"] += 1
            return web.json_response({"message": "internal error"}, status=503)
        if not request.content_type.startswith("multipart/"):
            return web.json_response({"message": "send the image as multipart field media"},
                                     status=400)
        form = await request.post()
        media = form.get("media")
        if media is None or not hasattr(media, "file"):
            return web.json_response({"message": "no media field in the request"}, status=400)
        data = media.file.read(faults.max_bytes + 1)
        if len(data) > faults.max_bytes:
            return web.json_response(
                {"message": f"media larger than {faults.max_bytes} bytes"}, status=400)
        try:
            with Image.open(io.BytesIO(data)) as img:
                width, height, mime = img.width, img.height, Image.MIME.get(
                    img.format or "", "application/octet-stream")
        except Exception:
            return web.json_response({"message": "unsupported or corrupt media"}, status=400)
        if roll < faults.timeout_rate + faults.error_rate + faults.malformed_rate:
            return web.Response(text='{"status": [', content_type="application/json")
        stats["ok"] += 1
        return web.json_response(hive_response(data, media.filename or "", width, height, mime))

    async def get_stats(request: web.Request) -> web.Response:
        return web.json_response(stats)

    app = web.Application(client_max_size=faults.max_bytes + 1024 * 1024)
    app.add_routes([web.post(PATH, task_sync), web.get("/_stats", get_stats)])
    app[STATS] = stats
    return app


def serve(port: int, key: str, faults: Faults) -> None:
    """Runs until interrupted; binds 127.0.0.1 only."""
    web.run_app(make_app(key, faults), host=HOST, port=port, print=None, access_log=None)


if __name__ == "__main__":  # python -m synthsieve.emulators.hive PORT KEY
    import sys

    serve(int(sys.argv[1]), sys.argv[2], Faults(**json.loads(sys.argv[3]) if len(sys.argv) > 3
                                                else {}))
