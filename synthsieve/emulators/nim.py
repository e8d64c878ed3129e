"""A local stand-in for NVIDIA NIM's hosted Hive detector.

Invoke: POST /v1/cv/hive/ai-generated-image-detection, `Authorization: Bearer KEY`, JSON
{"input": ["data:image/png;base64,..."]} with the base64 under 180,000 characters, or
{"input": ["data:image/png;asset_id,ID"]} with header NVCF-INPUT-ASSET-REFERENCES: ID after
the asset flow: POST /v2/nvcf/assets {contentType, description} -> {uploadUrl, assetId},
then PUT the bytes to uploadUrl. PNG and JPEG only. Answer: {"data": [{"index": 0,
"is_ai_generated": p, "possible_sources": {...}, "status": "SUCCESS"}]}.
"""

from __future__ import annotations

import base64
import binascii
import uuid

from aiohttp import web

from synthsieve.emulators.common import STATS, FaultGate, Faults, expected_scores, image_facts

__all__ = [
    "ASSETS", "ASSETS_PATH", "FORMATS", "INLINE_LIMIT", "INVOKE_PATH", "make_app",
    "nim_response",
]

INVOKE_PATH = "/v1/cv/hive/ai-generated-image-detection"
ASSETS_PATH = "/v2/nvcf/assets"
INLINE_LIMIT = 180_000
FORMATS = ("image/png", "image/jpeg")
ASSETS = web.AppKey("assets", dict)


def nim_response(data: bytes) -> dict:
    ai, source, _ = expected_scores(data)
    sources = {source: ai, "none": 1 - ai}
    return {"data": [{"index": 0, "is_ai_generated": ai, "possible_sources": sources,
                      "status": "SUCCESS"}]}


def make_app(key: str, faults: Faults) -> web.Application:
    gate = FaultGate(faults)
    assets: dict[str, dict] = {}

    def authorised(request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {key}"

    async def invoke(request: web.Request) -> web.StreamResponse:
        if not authorised(request):
            gate.stats["requests"] += 1
            return web.json_response({"detail": "Authentication failed"}, status=401)
        early, malformed = await gate.before()
        if early is not None:
            return early
        try:
            doc = await request.json()
            [item] = doc["input"]
            header, payload = item.split(",", 1)
            mime, kind = header[len("data:"):].split(";", 1)
        except Exception:
            return web.json_response({"detail": "body must be {\"input\": [data URI]}"},
                                     status=422)
        if mime not in FORMATS:
            return web.json_response({"detail": f"unsupported format {mime}"}, status=422)
        if kind == "base64":
            if len(payload) >= INLINE_LIMIT:
                return web.json_response(
                    {"detail": f"inline image over {INLINE_LIMIT} characters: use the assets "
                               "API"}, status=413)
            try:
                data = base64.b64decode(payload, validate=True)
            except binascii.Error:
                return web.json_response({"detail": "invalid base64"}, status=422)
        elif kind == "asset_id":
            if request.headers.get("NVCF-INPUT-ASSET-REFERENCES") != payload:
                return web.json_response({"detail": "asset not referenced in the headers"},
                                         status=422)
            asset = assets.pop(payload, None)
            if asset is None or asset.get("data") is None:
                return web.json_response({"detail": f"unknown asset {payload}"}, status=404)
            data = asset["data"]
        else:
            return web.json_response({"detail": f"unknown input kind {kind}"}, status=422)
        if image_facts(data) is None:
            return web.json_response({"detail": "could not decode the image"}, status=422)
        return gate.ok(nim_response(data), malformed)

    async def create_asset(request: web.Request) -> web.StreamResponse:
        if not authorised(request):
            return web.json_response({"detail": "Authentication failed"}, status=401)
        await gate.latency()
        doc = await request.json()
        asset_id = str(uuid.uuid4())
        assets[asset_id] = {"content_type": doc.get("contentType"), "data": None}
        base = f"{request.scheme}://{request.host}"
        return web.json_response({"uploadUrl": f"{base}/_upload/{asset_id}",
                                  "assetId": asset_id})

    async def upload(request: web.Request) -> web.StreamResponse:
        await gate.latency()
        asset = assets.get(request.match_info["asset_id"])
        if asset is None:
            return web.Response(status=404)
        if request.headers.get("Content-Type") != asset["content_type"]:
            return web.Response(status=403, text="content type differs from the declared one")
        asset["data"] = await request.read()
        return web.Response(status=200)

    app = web.Application(client_max_size=faults.max_bytes + 1024 * 1024)
    app.add_routes([web.post(INVOKE_PATH, invoke), web.post(ASSETS_PATH, create_asset),
                    web.put("/_upload/{asset_id}", upload)])
    app[STATS] = gate.stats
    app.router.add_get("/_stats", gate.stats_handler)
    app[ASSETS] = assets
    return app
