"""The combined verdict: pixels and provenance evidence together, each column left as it is.

Rules, first match wins (`verdict_reason` says which fired and what the pixels said):
1. C2PA manifest whose signature validates (valid or trusted) and whose digitalSourceType
   is trainedAlgorithmicMedia, or a composite with such media -> ai_generated.
2. A Stable Diffusion invisible watermark decoded (sd1, sd2, sdxl) -> ai_generated.
3. Generation parameters from a generator tool (A1111, ComfyUI, ...) -> ai_generated.
4. XMP DigitalSourceType naming AI media -> ai_generated.
5. Metadata naming a generator (C2PA claim generator or software agent, XMP CreatorTool,
   EXIF Software) -> ai_generated.
6. C2PA manifest chained to a configured trust anchor saying digitalCapture (or another
   capture type) -> not_ai_generated.
7. Otherwise the pixel verdict; with no pixel score (--backend none), inconclusive.

Why the asymmetry: an admission that an image is AI-made is believed from any intact source,
signed or not, because nobody gains by forging one, while a claim that an image is a real
capture is exactly what a forger would add, so it counts only from a trusted signature.
A C2PA manifest whose validation fails is ignored as evidence (the reason says so).
"""

from __future__ import annotations

from typing import Any

from synthsieve.provenance.taxonomy import source_from_name
from synthsieve.provenance.vocabulary import category
from synthsieve.schema import SOURCE_OTHER, VERDICT_AI, VERDICT_INCONCLUSIVE, VERDICT_NOT_AI

__all__ = [
    "AI_CATEGORIES", "AI_EVIDENCE", "GOOD_SIGNATURE", "TOOL_SOURCE", "WATERMARK_SOURCE",
    "evidence_verdict", "generator_tool", "provenance_source", "signed_ai_source_type",
    "watermark_scheme", "xmp_ai_source_type",
]

GOOD_SIGNATURE = ("valid", "trusted")
# Where a tool's checkpoint name says nothing the taxonomy knows.
TOOL_SOURCE = {"a1111": "stablediffusion", "forge": "stablediffusion",
               "sdnext": "stablediffusion", "invokeai": "stablediffusion",
               "fooocus": "stablediffusionxl", "comfyui": SOURCE_OTHER,
               "novelai": SOURCE_OTHER}
WATERMARK_SOURCE = {"sd1": "stablediffusion", "sd2": "stablediffusion",
                    "sdxl": "stablediffusionxl"}


def provenance_source(row: dict[str, Any]) -> str | None:
    """The generator the metadata names, most authoritative witness first."""
    c2pa = row.get("c2pa") or {}
    gen = row.get("generation_params") or {}
    xmp = row.get("xmp") or {}
    exif = row.get("exif") or {}
    mark = row.get("watermark") or {}
    signed = c2pa.get("validation_state") in GOOD_SIGNATURE
    for name in ((c2pa.get("software_agent") if signed else None),
                 (c2pa.get("claim_generator") if signed else None),
                 gen.get("model_name"), xmp.get("creator_tool"), exif.get("software")):
        source = source_from_name(name)
        if source:
            return source
    if gen.get("tool"):
        return TOOL_SOURCE.get(gen["tool"], SOURCE_OTHER)
    if mark.get("scheme") in WATERMARK_SOURCE:
        return WATERMARK_SOURCE[mark["scheme"]]
    ai_type = category((c2pa.get("digital_source_type") if signed else None)
                       or xmp.get("digital_source_type"))
    return SOURCE_OTHER if ai_type in AI_CATEGORIES else None


AI_CATEGORIES = ("ai", "ai_composite")


def signed_ai_source_type(row: dict[str, Any]) -> str | None:
    """The digitalSourceType of a C2PA manifest that validates, when it says AI media."""
    c2pa = row.get("c2pa") or {}
    kind = c2pa.get("digital_source_type")
    signed = c2pa.get("validation_state") in GOOD_SIGNATURE
    return kind if signed and category(kind) in AI_CATEGORIES else None


def watermark_scheme(row: dict[str, Any]) -> str | None:
    scheme = (row.get("watermark") or {}).get("scheme")
    return scheme if scheme in WATERMARK_SOURCE else None


def generator_tool(row: dict[str, Any]) -> str | None:
    return (row.get("generation_params") or {}).get("tool") or None


def xmp_ai_source_type(row: dict[str, Any]) -> str | None:
    kind = (row.get("xmp") or {}).get("digital_source_type")
    return kind if category(kind) in AI_CATEGORIES else None


# Evidence that an image is AI-made, strongest first: (name, what the row shows or None).
# The combined verdict uses all of it; scrub policies name the rules they act on.
AI_EVIDENCE = (
    ("c2pa_ai", signed_ai_source_type),
    ("watermark", watermark_scheme),
    ("generation_params", generator_tool),
    ("xmp_ai", xmp_ai_source_type),
)


def _describe(rule: str, found: str, row: dict[str, Any]) -> str:
    if rule == "c2pa_ai":
        return f"c2pa {row['c2pa']['validation_state']}: digitalSourceType {found}"
    if rule == "watermark":
        return f"{found} invisible watermark ({row['watermark'].get('bits_matched'):.2f} of bits)"
    if rule == "generation_params":
        model = row["generation_params"].get("model_name")
        return f"generation parameters from {found}{f', model {model}' if model else ''}"
    return f"xmp digitalSourceType {found}"


def _pixels(row: dict[str, Any]) -> str:
    score = row.get("ai_generated")
    if score is None:
        return "no pixel score"
    return f"pixels {row.get('verdict')} ({score:.2f})"


def evidence_verdict(row: dict[str, Any]) -> tuple[str, str]:
    """(evidence_verdict, verdict_reason) for a scores row with its provenance columns."""
    c2pa = row.get("c2pa") or {}
    state = c2pa.get("validation_state")
    c2pa_type = c2pa.get("digital_source_type")
    pixels = _pixels(row)
    for rule, found_in in AI_EVIDENCE:
        found = found_in(row)
        if found:
            return VERDICT_AI, f"{_describe(rule, found, row)}; {pixels}"
    named = row.get("provenance_source")
    if named:
        return VERDICT_AI, f"metadata names the generator {named}; {pixels}"
    if state == "trusted" and category(c2pa_type) == "capture":
        return VERDICT_NOT_AI, f"c2pa trusted: digitalSourceType {c2pa_type}; {pixels}"
    note = ""
    if c2pa.get("present") and state not in GOOD_SIGNATURE:
        codes = ", ".join((c2pa.get("validation_codes") or [])[:3])
        note = f"c2pa {state}{f' ({codes})' if codes else ''} ignored; "
    if row.get("ai_generated") is None:
        return VERDICT_INCONCLUSIVE, f"{note}no provenance evidence and no pixel score"
    return row["verdict"], f"{note}no decisive provenance evidence: {pixels}"
