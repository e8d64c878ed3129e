"""Hive's AI-generated image detection (v2 sync task API): request and response.

Request: multipart POST with the original bytes as `media`, header `Authorization: Token
KEY`. Response: `status[0].response.output[0].classes`, a list of {class, score} holding
two heads whose scores each sum to 1 (ai_generated / not_ai_generated, and the source head
over the taxonomy, including none and inconclusive), plus `deepfake`; and
`algorithmic_tags` with the C2PA, XMP and EXIF fields Hive read from the file.
"""

from __future__ import annotations

import json
from typing import Any

from synthsieve.inference.outputs import check_probability, verdict_columns
from synthsieve.inference.remote.base import ApiBackend, ApiClient, media_form
from synthsieve.schema import canonical_source

__all__ = ["BINARY", "NOT_SOURCE", "VENDOR_REPORTED", "HiveBackend", "map_hive_output"]

BINARY = ("ai_generated", "not_ai_generated")
NOT_SOURCE = {*BINARY, "deepfake"}
VENDOR_REPORTED = "vendor_reported"


def _blank_to_none(value: Any) -> Any:
    return value if value not in ("", None) else None


def map_hive_output(output: dict[str, Any], threshold_ai: float,
                    threshold_not_ai: float) -> dict[str, Any]:
    """One `output[0]` object -> the scores table's columns."""
    scores: dict[str, float] = {}
    for c in output["classes"]:
        scores[str(c["class"])] = float(c["score"])
    ai = check_probability(scores["ai_generated"], "ai_generated")
    source_scores: dict[str, float] = {}
    for label, score in scores.items():
        if label in NOT_SOURCE:
            continue
        key = canonical_source(label)  # unknown labels become other_image_generators
        source_scores[key] = source_scores.get(key, 0.0) + score
    tags = output.get("algorithmic_tags") or {}
    c2pa = tags.get("c2pa") or {}
    xmp = tags.get("xmp") or {}
    exif = tags.get("exif") or {}
    c2pa_fields = {
        "claim_generator": _blank_to_none(c2pa.get("claim_generator")),
        "software_agent": _blank_to_none(c2pa.get("actions_software_agent")),
        "action": _blank_to_none(c2pa.get("actions_action")),
        "digital_source_type": _blank_to_none(c2pa.get("actions_digital_source_type")),
    }
    xmp_fields = {"digital_source_type": _blank_to_none(xmp.get("digital_source_type")),
                  "credit": _blank_to_none(xmp.get("credit")), "creator_tool": None}
    exif_fields = {"make": _blank_to_none(exif.get("make")),
                   "model": _blank_to_none(exif.get("model")),
                   "software": _blank_to_none(exif.get("software"))}
    any_c2pa = any(c2pa_fields.values())
    warnings = []
    if any_c2pa or any(xmp_fields.values()) or any(exif_fields.values()):
        warnings.append("c2pa/xmp/exif columns as reported by hive (algorithmic_tags), "
                        "not read or validated by synthsieve")
    return {
        **verdict_columns(ai, threshold_ai, threshold_not_ai, source_scores),
        "deepfake": scores.get("deepfake"),
        "c2pa": {"present": True, "validation_state": VENDOR_REPORTED, **c2pa_fields}
        if any_c2pa else None,
        "xmp": xmp_fields if any(xmp_fields.values()) else None,
        "exif": exif_fields if any(exif_fields.values()) else None,
        "vendor_warnings": warnings,
    }


class HiveBackend(ApiBackend):
    name = "hive"
    model = "hive-ai-generated-image-detection@v2"
    key_env = ("HIVE_API_KEY",)
    default_url = "https://api.thehive.ai/api/v2/task/sync"

    async def send(self, client: ApiClient, data: bytes, uri: str) -> tuple[int, str]:
        form = media_form(data, uri)
        headers = {"Authorization": f"Token {client.secrets[0]}", "Accept": "application/json"}
        await client.metered()
        async with client.session.post(self.cfg.url, data=form, headers=headers) as resp:
            self.retry_after = self._retry_after(resp)
            return resp.status, await resp.text(errors="replace")

    def parse(self, body: str) -> dict[str, Any]:
        doc = json.loads(body)
        status = doc["status"][0]
        code = str(status.get("status", {}).get("code", "0"))
        if code != "0":
            raise ValueError(f"task status {code}: {status.get('status', {}).get('message')}")
        return map_hive_output(status["response"]["output"][0], self.cfg.threshold_ai,
                               self.cfg.threshold_not_ai)
