"""A local stand-in for Sightengine's `genai` model.

POST /1.0/check.json as multipart (media, models=genai, api_user, api_secret), or GET with
url=... (the emulator fetches only URLs on 127.0.0.1). Answer: {"status": "success",
"request": {...}, "type": {"ai_generated": p}, "media": {...}}; failures are
{"status": "failure", "error": {"type", "code", "message"}}.
"""

from __future__ import annotations

import hashlib
import time

import aiohttp
from aiohttp import web

from synthsieve.emulators.common import STATS, FaultGate, Faults, expected_scores, image_facts

__all__ = ["PATH", "failure", "make_app"]

PATH = "/1.0/check.json"


def failure(status: int, kind: str, message: str) -> web.Response:
    return web.json_response({"status": "failure", "error": {
        "type": kind, "code": status, "message": message}}, status=status)


def make_app(user: str, secret: str, faults: Faults) -> web.Application:
    gate = FaultGate(faults)

    async def check(request: web.Request) -> web.StreamResponse:
        params = dict(request.query)
        media = None
        if request.method == "POST":
            form = await request.post()
            params.update({k: v for k, v in form.items() if isinstance(v, str)})
            media = form.get("media")
        if params.get("api_user") != user or params.get("api_secret") != secret:
            gate.stats["requests"] += 1
            return failure(401, "credentials_error", "Incorrect API user or API secret")
        early, malformed = await gate.before()
        if early is not None:
            return early
        if "genai" not in params.get("models", "").split(","):
            return failure(400, "argument_error", "models must include genai")
        if media is not None and hasattr(media, "file"):
            data = media.file.read(faults.max_bytes + 1)
            uri = None
        elif params.get("url"):
            uri = params["url"]
            if not uri.startswith("http://127.0.0.1"):
                return failure(400, "media_error", "the emulator only fetches 127.0.0.1 URLs")
            async with aiohttp.ClientSession() as s, s.get(uri) as resp:
                data = await resp.read()
        else:
            return failure(400, "argument_error", "media or url is required")
        if len(data) > faults.max_bytes:
            return failure(400, "media_error", f"media larger than {faults.max_bytes} bytes")
        if image_facts(data) is None:
            return failure(400, "media_error", "unsupported or corrupt image")
        ai, _, _ = expected_scores(data)
        body = {"status": "success",
                "request": {"id": "req_" + hashlib.sha256(data).hexdigest()[:20],
                            "timestamp": time.time(), "operations": 1},
                "type": {"ai_generated": round(ai, 6)},
                "media": {"id": "med_" + hashlib.md5(data).hexdigest()[:20],  # noqa: S324
                          "uri": uri}}
        return gate.ok(body, malformed)

    app = web.Application(client_max_size=faults.max_bytes + 1024 * 1024)
    app.add_routes([web.post(PATH, check), web.get(PATH, check)])
    app[STATS] = gate.stats
    app.router.add_get("/_stats", gate.stats_handler)
    return app
