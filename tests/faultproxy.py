"""A reverse proxy on 127.0.0.1 that forwards to one upstream and misbehaves on purpose.

Put in front of moto_server, the image URL server or a vendor API emulator, it turns a
seeded share of requests into the faults a long run meets on a real network: a 5xx answer,
a connection reset before any answer, a slow answer, or a body cut off after its headers
promised more. Everything else is forwarded unchanged (method, path, query, headers, body),
so signed S3 requests still verify upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from servers import serve_app
from yarl import URL

FAULTS = ("5xx", "reset", "slow", "truncated")
# Not forwarded: they describe one hop, and aiohttp sets its own for the next.
SESSION = web.AppKey("session", aiohttp.ClientSession)
HOP_HEADERS = frozenset(h.lower() for h in (
    "Connection", "Keep-Alive", "Transfer-Encoding", "TE", "Trailer", "Upgrade",
    "Proxy-Authorization", "Proxy-Authenticate", "Content-Length", "Host"))


@dataclass
class FaultPlan:
    rate: float = 0.2  # share of requests that get a fault, split evenly over FAULTS
    slow_s: tuple[float, float] = (0.3, 1.0)
    seed: int = 0


class FaultProxy:
    def __init__(self, upstream: str, plan: FaultPlan):
        self.upstream = upstream.rstrip("/")
        self.plan = plan
        self.rng = random.Random(plan.seed)
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def _draw(self) -> str | None:
        with self.lock:
            self.counts["requests"] += 1
            if self.rng.random() >= self.plan.rate:
                return None
            fault = self.rng.choice(FAULTS)
            self.counts[fault] += 1
            return fault

    async def _forward(self, request: web.Request) -> tuple[int, dict[str, str], bytes]:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        # S3 signs the Host header: keep the one the client signed.
        headers["Host"] = request.headers.get("Host", "")
        body = await request.read()
        # The request target exactly as the client encoded (and, for S3, signed) it.
        url = URL(self.upstream + request.raw_path, encoded=True)
        async with request.app[SESSION].request(
                request.method, url, headers=headers, data=body or None,
                allow_redirects=False, auto_decompress=False) as resp:
            data = await resp.read()
            out = {k: v for k, v in resp.headers.items() if k.lower() not in HOP_HEADERS}
            if request.method == "HEAD" and "Content-Length" in resp.headers:
                out["Content-Length"] = resp.headers["Content-Length"]  # the object's size
            return resp.status, out, data

    async def handle(self, request: web.Request) -> web.StreamResponse:
        fault = self._draw()
        if fault == "5xx":
            await request.read()
            return web.Response(status=self.rng.choice((500, 502, 503)),
                                text="injected fault")
        if fault == "reset":
            await request.read()
            request.transport.abort()  # no answer at all: the client sees a reset
            return web.Response(status=500)
        if fault == "slow":
            await asyncio.sleep(self.rng.uniform(*self.plan.slow_s))
        status, headers, data = await self._forward(request)
        if fault != "truncated" or len(data) < 2:
            return web.Response(status=status, headers=headers, body=data)
        # Promise the whole body, send half of it, hang up.
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = len(data)
        await resp.prepare(request)
        await resp.write(data[: len(data) // 2])
        request.transport.abort()
        return resp

    def app(self) -> web.Application:
        async def open_session(app: web.Application):
            app[SESSION] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64), trust_env=False)
            yield
            await app[SESSION].close()

        app = web.Application(client_max_size=256 << 20)
        app.cleanup_ctx.append(open_session)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app


@contextlib.contextmanager
def fault_proxy(upstream: str, plan: FaultPlan | None = None) -> Iterator[tuple[str, FaultProxy]]:
    """Serves a FaultProxy for `upstream` on 127.0.0.1; yields (its base URL, the proxy)."""
    proxy = FaultProxy(upstream, plan or FaultPlan())
    with serve_app(proxy.app()) as url:
        yield url, proxy
