"""A local stand-in for Hive's v2 sync task API, for tests and benchmarks.

It checks requests as the real API does (token, multipart `media`, size, that the bytes are
an image) and answers in Hive's documented response format with scores derived from the image's
sha256, so the same bytes always get the same answer. Faults: see emulators/common.py.
"""

from __future__ import annotations

import hashlib

from aiohttp import web

from synthsieve.emulators.common import (
    GENERATORS,
    STATS,
    FaultGate,
    Faults,
    expected_scores,
    image_facts,
)

PATH = "/api/v2/task/sync"
SOURCE_HEAD = [*GENERATORS, "inconclusive", "inconclusive_video"]

__all__ = ["PATH", "STATS", "Faults", "expected_scores", "make_app"]


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
                  "id": hashlib.sha256(data).hexdigest()[:24],
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
    gate = FaultGate(faults)

    async def task_sync(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Token {key}":
            gate.stats["requests"] += 1
            return web.json_response({"message": "invalid or missing API token"}, status=401)
        early, malformed = await gate.before()
        if early is not None:
            return early
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
        facts = image_facts(data)
        if facts is None:
            return web.json_response({"message": "unsupported or corrupt media"}, status=400)
        return gate.ok(hive_response(data, media.filename or "", *facts), malformed)

    app = web.Application(client_max_size=faults.max_bytes + 1024 * 1024)
    app.add_routes([web.post(PATH, task_sync)])
    app[STATS] = gate.stats
    app.router.add_get("/_stats", gate.stats_handler)
    return app
