"""IPTC's Digital Source Type vocabulary, which both XMP and C2PA use to say how an image was made.

Values are URIs under http://cv.iptc.org/newscodes/digitalsourcetype/ (C2PA also accepts the
bare code); the code after the last slash is what the tables store.
"""

from __future__ import annotations

__all__ = ["CATEGORIES", "IPTC_PREFIX", "category", "source_type_code"]

IPTC_PREFIX = "http://cv.iptc.org/newscodes/digitalsourcetype/"

# What a code says about AI involvement: "ai" (made by a generative model), "ai_composite"
# (AI or synthetic parts in a composite), "capture" (a camera or scanner made it),
# "human" (made or edited by people with ordinary tools), "algorithmic" (made by a
# non-learned algorithm), "unknown".
CATEGORIES: dict[str, str] = {
    "trainedAlgorithmicMedia": "ai",
    "compositeWithTrainedAlgorithmicMedia": "ai_composite",
    "compositeSynthetic": "ai_composite",
    "algorithmicMedia": "algorithmic",
    "algorithmicallyEnhanced": "human",
    "dataDrivenMedia": "algorithmic",  # retired code, kept for old files
    "digitalCapture": "capture",
    "computationalCapture": "capture",
    "negativeFilm": "capture",
    "positiveFilm": "capture",
    "print": "capture",
    "compositeCapture": "capture",
    "screenCapture": "human",
    "humanEdits": "human",
    "minorHumanEdits": "human",
    "digitalArt": "human",
    "digitalCreation": "human",  # retired
    "virtualRecording": "human",
    "softwareImage": "human",  # retired
    "compositeImage": "human",  # retired
}
_BY_LOWER = {k.lower(): k for k in CATEGORIES}


def source_type_code(value: str | None) -> str | None:
    """A DigitalSourceType URI or code -> its code (`trainedAlgorithmicMedia`), else None.

    Known codes come back in IPTC's spelling whatever the case; an unknown value is kept as
    written (trimmed) so that nothing the file says is lost.
    """
    if not value:
        return None
    text = str(value).strip()
    code = text.rstrip("/").rsplit("/", 1)[-1] if "/" in text else text
    return _BY_LOWER.get(code.lower(), code) or None


def category(code: str | None) -> str:
    return CATEGORIES.get(code or "", "unknown")
