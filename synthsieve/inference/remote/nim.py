"""NVIDIA NIM's hosted Hive detector.

Images whose base64 is under 180,000 characters go inline as a data URI; larger ones take
the asset flow (create an asset, PUT the bytes to its pre-signed URL, reference it). NIM
takes PNG and JPEG: other formats are re-encoded losslessly to PNG first. The answer is
`data[0]`: is_ai_generated and possible_sources (mapped into the taxonomy).
"""

from __future__ import annotations

import base64
import io
import json
from typing import Any
from urllib.parse import urlsplit

from PIL import Image, ImageOps

from synthsieve.images import to_rgb
from synthsieve.inference.outputs import check_probability, verdict_columns
from synthsieve.inference.remote.base import ApiBackend, ApiClient
from synthsieve.schema import canonical_source

__all__ = [
    "ACCEPTED", "DEFAULT_ASSETS_URL", "INLINE_LIMIT", "NimBackend", "assets_url_for",
    "map_nim_item", "nim_payload_bytes",
]

INLINE_LIMIT = 180_000
ACCEPTED = {"PNG": "image/png", "JPEG": "image/jpeg"}
DEFAULT_ASSETS_URL = "https://api.nvcf.nvidia.com/v2/nvcf/assets"


def nim_payload_bytes(data: bytes) -> tuple[bytes, str]:
    """(bytes to send, mime): the original when NIM accepts its format, else a PNG."""
    with Image.open(io.BytesIO(data)) as img:
        mime = ACCEPTED.get(img.format or "")
        if mime:
            return data, mime
        buf = io.BytesIO()
        to_rgb(ImageOps.exif_transpose(img)).save(buf, "PNG")
        return buf.getvalue(), "image/png"


def assets_url_for(cfg_url: str, assets_url: str | None, default_invoke: str) -> str:
    """Where assets go: as configured, NVIDIA's own for NVIDIA's endpoint, else same origin."""
    if assets_url:
        return assets_url
    if cfg_url == default_invoke:
        return DEFAULT_ASSETS_URL
    parts = urlsplit(cfg_url)
    return f"{parts.scheme}://{parts.netloc}/v2/nvcf/assets"


def map_nim_item(item: dict[str, Any], threshold_ai: float,
                 threshold_not_ai: float) -> dict[str, Any]:
    if item.get("status", "SUCCESS") != "SUCCESS":
        raise ValueError(f"NIM status {item.get('status')!r}")
    ai = check_probability(float(item["is_ai_generated"]), "is_ai_generated")
    sources: dict[str, float] = {}
    for label, score in (item.get("possible_sources") or {}).items():
        key = canonical_source(str(label))
        sources[key] = sources.get(key, 0.0) + float(score)
    total = sum(sources.values())
    if total > 0:
        sources = {k: v / total for k, v in sources.items()}
    return {**verdict_columns(ai, threshold_ai, threshold_not_ai, sources),
            "vendor_warnings": []}


class NimBackend(ApiBackend):
    name = "nim"
    model = "nvidia-nim-hive-ai-generated-image-detection@v1"
    key_env = ("NVIDIA_API_KEY",)
    default_url = "https://ai.api.nvidia.com/v1/cv/hive/ai-generated-image-detection"

    async def send(self, client: ApiClient, data: bytes, uri: str) -> tuple[int, str]:
        payload, mime = nim_payload_bytes(data)
        auth = {"Authorization": f"Bearer {client.secrets[0]}", "Accept": "application/json"}
        b64 = base64.b64encode(payload).decode("ascii")
        headers = dict(auth)
        if len(b64) < INLINE_LIMIT:
            body = {"input": [f"data:{mime};base64,{b64}"]}
        else:
            assets = assets_url_for(self.cfg.url, self.cfg.assets_url, self.default_url)
            async with client.session.post(assets, json={
                    "contentType": mime, "description": "synthsieve input image"},
                    headers=auth) as resp:
                if resp.status >= 300:
                    self.retry_after = self._retry_after(resp)
                    return resp.status, await resp.text(errors="replace")
                created = await resp.json(content_type=None)
            async with client.session.put(created["uploadUrl"], data=payload, headers={
                    "Content-Type": mime,
                    "x-amz-meta-nvcf-asset-description": "synthsieve input image"}) as resp:
                if resp.status >= 300:
                    # a failed upload is transient from our side: retry the whole flow
                    return (503 if resp.status < 500 else resp.status,
                            f"asset upload failed: HTTP {resp.status}")
            asset_id = str(created["assetId"])
            body = {"input": [f"data:{mime};asset_id,{asset_id}"]}
            headers["NVCF-INPUT-ASSET-REFERENCES"] = asset_id
        await client.metered()
        async with client.session.post(self.cfg.url, json=body, headers=headers) as resp:
            self.retry_after = self._retry_after(resp)
            return resp.status, await resp.text(errors="replace")

    def parse(self, body: str) -> dict[str, Any]:
        doc = json.loads(body)
        return map_nim_item(doc["data"][0], self.cfg.threshold_ai, self.cfg.threshold_not_ai)
