"""C2PA Content Credentials, read and validated with c2pa-python (the CAI's Rust SDK).

The reader never touches the network: remote manifests and OCSP are not fetched, and no
host is allowed, so an image pointing at a remote manifest is recorded as such instead of
making the worker call a URL chosen by whoever made the file. Trust is checked only
against the anchors the user configures (`--c2pa-trust-anchors`); without them a good
signature is `valid`, with them a chain to an anchor is `trusted`.
"""

from __future__ import annotations

import io
import json
import logging
import threading
from typing import Any

import c2pa

from synthsieve.provenance.vocabulary import category, source_type_code

__all__ = ["MIME_BY_FORMAT", "C2paReader", "summarize"]

log = logging.getLogger("synthsieve.c2pa")

MIME_BY_FORMAT = {
    "JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp",
    "GIF": "image/gif", "TIFF": "image/tiff", "HEIF": "image/heif", "AVIF": "image/avif",
    "DNG": "image/dng", "JXL": "image/jxl", "SVG": "image/svg+xml",
}
# The strength of what a digitalSourceType says, to pick one action when several carry one.
_RANK = {"ai": 0, "ai_composite": 1, "algorithmic": 2, "capture": 3, "human": 4, "unknown": 5}
_MAX_CODES = 20


class C2paReader:
    """One per process; a c2pa Context per thread (the SDK's handles are not shared)."""

    def __init__(self, trust_anchors_pem: str | None = None):
        self._settings: dict[str, Any] = {
            "verify": {"remote_manifest_fetch": False, "ocsp_fetch": False},
            "core": {"allowed_network_hosts": []},
        }
        if trust_anchors_pem:
            self._settings["trust"] = {"trust_anchors": trust_anchors_pem}
        self._local = threading.local()

    def _context(self) -> c2pa.Context:
        ctx = getattr(self._local, "ctx", None)
        if ctx is None:
            ctx = self._local.ctx = c2pa.Context.from_dict(self._settings)
        return ctx

    def read(self, data: bytes, image_format: str | None) -> tuple[dict[str, Any] | None,
                                                                    list[str]]:
        """(the `c2pa` column or None when the file carries no manifest, warnings)."""
        mime = MIME_BY_FORMAT.get(image_format or "")
        if mime is None:
            return None, []
        try:
            reader = c2pa.Reader(mime, io.BytesIO(data), context=self._context())
        except c2pa.C2paError.ManifestNotFound:
            return None, []
        except c2pa.C2paError.NotSupported:
            return None, []
        except c2pa.C2paError as e:
            text = str(e)
            if text.startswith("Remote") or isinstance(e, c2pa.C2paError.RemoteManifest):
                return _empty("remote"), [
                    f"c2pa: the manifest is remote and was not fetched ({text[:300]})"]
            return _empty("unreadable"), [f"c2pa: unreadable manifest: {text[:300]}"]
        except Exception as e:  # the bindings must never lose an image
            return _empty("unreadable"), [f"c2pa: {type(e).__name__}: {str(e)[:300]}"]
        try:
            with reader:
                state = (reader.get_validation_state() or "").lower() or None
                store = json.loads(reader.json())
        except Exception as e:
            return _empty("unreadable"), [f"c2pa: cannot read the manifest store: {e}"]
        return summarize(store, state)


def _empty(state: str) -> dict[str, Any]:
    return {"present": True, "validation_state": state, "validation_codes": [],
            "claim_generator": None, "software_agent": None, "action": None,
            "digital_source_type": None}


def _text(value: Any, limit: int = 300) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict):  # v2 softwareAgent / claim_generator_info: {name, version}
        value = " ".join(str(value[k]) for k in ("name", "version") if value.get(k))
    text = str(value).strip()
    return text[:limit] or None


def _actions(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for assertion in manifest.get("assertions") or []:
        if str(assertion.get("label", "")).startswith("c2pa.actions"):
            data = assertion.get("data") or {}
            out.extend(a for a in data.get("actions") or [] if isinstance(a, dict))
    return out


def _primary_action(actions: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The action that says most about origin: the strongest digitalSourceType, else
    c2pa.created, else the first."""
    typed = [a for a in actions if a.get("digitalSourceType")]
    if typed:
        return min(typed, key=lambda a: _RANK[category(
            source_type_code(a.get("digitalSourceType")))])
    created = [a for a in actions if a.get("action") == "c2pa.created"]
    return (created or actions or [None])[0]


def summarize(store: dict[str, Any], state: str | None) -> tuple[dict[str, Any], list[str]]:
    """A c2pa manifest store (Reader.json()) -> the `c2pa` column and warnings."""
    warnings: list[str] = []
    manifests = store.get("manifests") or {}
    active = manifests.get(store.get("active_manifest") or "") or {}
    codes: list[str] = []
    for status in store.get("validation_status") or []:
        code = status.get("code")
        if code and code not in codes:
            codes.append(str(code))
    action = _primary_action(_actions(active))
    if action is None or not action.get("digitalSourceType"):
        # An edit of generated content often says so only in its ingredient's manifest.
        for label, manifest in manifests.items():
            if label == store.get("active_manifest"):
                continue
            candidate = _primary_action(_actions(manifest))
            if candidate and candidate.get("digitalSourceType"):
                action = candidate
                warnings.append("c2pa: digitalSourceType taken from an ingredient's manifest")
                break
    generator = _text(active.get("claim_generator"))
    if generator is None and active.get("claim_generator_info"):
        generator = _text(" ".join(filter(None, (
            _text(info) for info in active["claim_generator_info"]))))
    column = {
        "present": True,
        "validation_state": state,
        "validation_codes": codes[:_MAX_CODES],
        "claim_generator": generator,
        "software_agent": _text(action.get("softwareAgent")) if action else None,
        "action": _text(action.get("action")) if action else None,
        "digital_source_type": source_type_code(action.get("digitalSourceType"))
        if action else None,
    }
    return column, warnings
