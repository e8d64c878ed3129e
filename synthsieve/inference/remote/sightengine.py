"""Sightengine's `genai` model: one score, no source head.

Bytes go up as multipart (`media`); an http(s) input on a public host can instead be sent
by URL (the GET form), which saves the upload. Credentials are the api_user/api_secret pair,
sent as form or query fields, so they are redacted from every message we write.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any
from urllib.parse import urlsplit

from synthsieve.inference.outputs import check_probability, verdict_columns
from synthsieve.inference.remote.base import ApiBackend, ApiClient, media_form
from synthsieve.io.netguard import refusal_reason

__all__ = ["SightengineBackend", "is_public_url", "map_sightengine"]


def is_public_url(uri: str) -> bool:
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    host = parts.hostname
    if host == "localhost" or host.endswith(".localhost") or "." not in host:
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return True  # a public-looking name; Sightengine resolves it, not us
    return refusal_reason(host, allow_private=False) is None


def map_sightengine(doc: dict[str, Any], threshold_ai: float,
                    threshold_not_ai: float) -> dict[str, Any]:
    if doc.get("status") != "success":
        err = doc.get("error") or {}
        raise ValueError(f"status {doc.get('status')!r}: {err.get('message')}")
    ai = check_probability(float(doc["type"]["ai_generated"]), "ai_generated")
    return {**verdict_columns(ai, threshold_ai, threshold_not_ai, None), "vendor_warnings": []}


class SightengineBackend(ApiBackend):
    name = "sightengine"
    model = "sightengine-genai"
    key_env = ("SIGHTENGINE_API_USER", "SIGHTENGINE_API_SECRET")
    default_url = "https://api.sightengine.com/1.0/check.json"

    def _by_url(self, uri: str) -> bool:
        mode = self.cfg.send_urls
        if mode == "never" or not uri.startswith(("http://", "https://")):
            return False
        return mode == "always" or is_public_url(uri)

    async def send(self, client: ApiClient, data: bytes, uri: str) -> tuple[int, str]:
        user, secret = client.secrets
        if self._by_url(uri):
            params = {"url": uri, "models": "genai", "api_user": user, "api_secret": secret}
            request = client.session.get(self.cfg.url, params=params)
        else:
            form = media_form(data, uri)
            for k, v in (("models", "genai"), ("api_user", user), ("api_secret", secret)):
                form.add_field(k, v)
            request = client.session.post(self.cfg.url, data=form)
        await client.metered()
        async with request as resp:
            self.retry_after = self._retry_after(resp)
            return resp.status, await resp.text(errors="replace")

    def parse(self, body: str) -> dict[str, Any]:
        return map_sightengine(json.loads(body), self.cfg.threshold_ai,
                               self.cfg.threshold_not_ai)
