"""Fault switches and helpers shared by the vendor API emulators."""

from __future__ import annotations

import asyncio
import hashlib
import io
import random
import time
from collections import deque
from dataclasses import dataclass, field

from aiohttp import web
from PIL import Image

from synthsieve.schema import SOURCE_CLASSES

__all__ = [
    "GENERATORS", "HOST", "STATS", "FaultGate", "Faults", "expected_scores", "image_facts",
    "run",
]

HOST = "127.0.0.1"
STATS = web.AppKey("stats", dict)
# The generators an emulator attributes images to (video-only and non-answers left out).
GENERATORS = [c for c in SOURCE_CLASSES if c not in ("none", "inconclusive",
                                                     "inconclusive_video")]


@dataclass
class Faults:
    latency_ms: float = 0.0
    rate_limit_per_s: float = 0.0  # 0: unlimited
    error_rate: float = 0.0  # share of requests answered 503
    throttle_rate: float = 0.0  # share of requests answered 429 + Retry-After: 1, at random
    timeout_rate: float = 0.0  # share of requests that hang until the client gives up
    malformed_rate: float = 0.0  # share of 200 answers whose body is not JSON
    max_bytes: int = 20 * 1024 * 1024
    seed: int = 0


@dataclass
class FaultGate:
    """Applies a Faults setting to each request, and keeps the counts tests read."""

    faults: Faults
    stats: dict = field(default_factory=lambda: {"requests": 0, "ok": 0, "rate_limited": 0,
                                                 "errors": 0, "malformed": 0})

    def __post_init__(self) -> None:
        self._rng = random.Random(self.faults.seed)
        self._recent: deque[float] = deque()

    async def before(self) -> tuple[web.Response | None, bool]:
        """(an early answer or None, whether the eventual 200 must be malformed)."""
        f = self.faults
        self.stats["requests"] += 1
        now = time.time()
        first = self.stats.setdefault("first_request_at", now)
        self.stats["last_request_at"] = now
        # Requests per whole second since the first one: benches read where throughput is lost.
        per_s = self.stats.setdefault("requests_per_second", [])
        second = int(now - first)
        per_s.extend([0] * (second + 1 - len(per_s)))
        per_s[second] += 1
        if f.rate_limit_per_s:
            now = time.monotonic()
            while self._recent and now - self._recent[0] > 1.0:
                self._recent.popleft()
            if len(self._recent) >= f.rate_limit_per_s:
                self.stats["rate_limited"] += 1
                return web.json_response({"message": "rate limit exceeded"}, status=429,
                                         headers={"Retry-After": "1"}), False
            self._recent.append(now)
        if f.latency_ms:
            await asyncio.sleep(f.latency_ms / 1000)
        if f.throttle_rate and self._rng.random() < f.throttle_rate:
            self.stats["rate_limited"] += 1
            return web.json_response({"message": "too many requests"}, status=429,
                                     headers={"Retry-After": "1"}), False
        roll = self._rng.random()
        if roll < f.timeout_rate:
            await asyncio.sleep(3600)
        if roll < f.timeout_rate + f.error_rate:
            self.stats["errors"] += 1
            return web.json_response({"message": "internal error"}, status=503), False
        return None, roll < f.timeout_rate + f.error_rate + f.malformed_rate

    async def stats_handler(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats)

    async def latency(self) -> None:
        """The configured latency alone, for a vendor's secondary endpoints."""
        if self.faults.latency_ms:
            await asyncio.sleep(self.faults.latency_ms / 1000)

    def ok(self, body: dict, malformed: bool) -> web.Response:
        if malformed:
            self.stats["malformed"] += 1
            return web.Response(text='{"data": [', content_type="application/json")
        self.stats["ok"] += 1
        return web.json_response(body)


def image_facts(data: bytes) -> tuple[int, int, str] | None:
    """(width, height, mime) when the bytes are an image, else None."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.width, img.height, Image.MIME.get(img.format or "",
                                                         "application/octet-stream")
    except Exception:
        return None


def expected_scores(data: bytes) -> tuple[float, str, float]:
    """(ai_generated, generator, deepfake) every emulator answers for these bytes."""
    h = hashlib.sha256(data).digest()
    ai = int.from_bytes(h[:4], "big") / 0xFFFFFFFF
    return ai, GENERATORS[h[4] % len(GENERATORS)], h[5] / 255 * 0.1


def run(app: web.Application, port: int) -> None:
    """Serves until interrupted; binds 127.0.0.1 only."""
    web.run_app(app, host=HOST, port=port, print=None, access_log=None)
