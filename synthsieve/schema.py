"""The output tables and the source taxonomy, defined once.

Every writer, reader and test takes column names and types from here; docs/output.md and
docs/taxonomy.md document the same contract for people.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

import pyarrow as pa

__all__ = [
    "BYTES_COLUMNS", "C2PA_TYPE", "ERRORS_SCHEMA", "EXIF_TYPE", "GENERATION_PARAMS_TYPE",
    "INPUT_COLUMNS", "SCORES_SCHEMA", "SOURCE_CLASSES", "SOURCE_INCONCLUSIVE", "SOURCE_NONE",
    "SOURCE_OTHER", "SOURCE_SET", "STAGES", "STAGE_API", "STAGE_DECODE", "STAGE_FETCH",
    "STAGE_INFERENCE", "STAGE_READ", "VERDICTS", "VERDICT_AI", "VERDICT_INCONCLUSIVE",
    "VERDICT_NOT_AI", "WATERMARK_TYPE", "XMP_TYPE", "canonical_source", "empty_score_row",
    "error_row", "now_utc",
]

# Hive's documented source head class names, the canonical taxonomy. Video-only classes are
# kept so that a vendor response naming one maps onto itself instead of being lost.
SOURCE_CLASSES: tuple[str, ...] = (
    "sora", "pika", "haiper", "kling", "luma", "hedra", "runway", "hailuo", "mochi", "flux",
    "hallo", "hunyuan", "recraft", "leonardo", "luminagpt", "var", "liveportrait", "mcnet",
    "pyramidflows", "sadtalker", "aniportrait", "cogvideos", "makeittalk", "sdxlinpaint",
    "stablediffusioninpaint", "bingimagecreator", "adobefirefly", "lcm", "dalle", "pixart",
    "glide", "stablediffusion", "imagen", "amused", "stablecascade", "midjourney", "deepfloyd",
    "gan", "stablediffusionxl", "vqdiffusion", "kandinsky", "wuerstchen", "titan", "ideogram",
    "sana", "emu3", "omnigen", "flashvideo", "transpixar", "cosmos", "janus", "dmd2", "switti",
    "4o", "grok", "wan", "infinity", "veo3", "imagen4",
    "other_image_generators", "inconclusive", "inconclusive_video", "none",
)
SOURCE_SET = frozenset(SOURCE_CLASSES)
SOURCE_OTHER = "other_image_generators"
SOURCE_NONE = "none"
SOURCE_INCONCLUSIVE = "inconclusive"


def canonical_source(label: str | None) -> str:
    """Maps a label onto the taxonomy; anything unknown becomes `other_image_generators`."""
    if label is None:
        return SOURCE_INCONCLUSIVE
    key = label.strip().lower()
    return key if key in SOURCE_SET else SOURCE_OTHER


VERDICT_AI = "ai_generated"
VERDICT_NOT_AI = "not_ai_generated"
VERDICT_INCONCLUSIVE = "inconclusive"
VERDICTS = (VERDICT_AI, VERDICT_NOT_AI, VERDICT_INCONCLUSIVE)

STAGE_READ = "read"
STAGE_FETCH = "fetch"
STAGE_DECODE = "decode"
STAGE_INFERENCE = "inference"
STAGE_API = "api"
STAGES = (STAGE_READ, STAGE_FETCH, STAGE_DECODE, STAGE_INFERENCE, STAGE_API)

_TS = pa.timestamp("us", tz="UTC")

C2PA_TYPE = pa.struct([
    ("present", pa.bool_()),
    # valid | invalid | trusted (from the SDK), remote (a manifest by URL, not fetched),
    # unreadable (a manifest the SDK could not parse)
    ("validation_state", pa.string()),
    ("validation_codes", pa.list_(pa.string())),  # the SDK's validation status codes
    ("claim_generator", pa.string()),
    ("software_agent", pa.string()),
    ("action", pa.string()),
    ("digital_source_type", pa.string()),
])
XMP_TYPE = pa.struct([
    ("digital_source_type", pa.string()),
    ("credit", pa.string()),
    ("creator_tool", pa.string()),
])
EXIF_TYPE = pa.struct([
    ("make", pa.string()),
    ("model", pa.string()),
    ("software", pa.string()),
])
GENERATION_PARAMS_TYPE = pa.struct([
    ("tool", pa.string()),
    ("model_name", pa.string()),
    ("has_prompt", pa.bool_()),
    ("prompt", pa.string()),  # only with --keep-prompts
])
WATERMARK_TYPE = pa.struct([
    ("scheme", pa.string()),  # sd1, sd2, sdxl, or none when checked and not found
    ("bits_matched", pa.float32()),
])

SCORES_SCHEMA = pa.schema([
    ("image_id", pa.string()),
    ("uri", pa.string()),
    ("sha256", pa.string()),
    ("bytes", pa.int64()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("format", pa.string()),
    ("ai_generated", pa.float32()),
    ("verdict", pa.string()),
    ("source", pa.string()),
    ("source_score", pa.float32()),
    ("source_scores", pa.map_(pa.string(), pa.float32())),
    ("deepfake", pa.float32()),
    ("model", pa.string()),
    ("backend", pa.string()),
    ("c2pa", C2PA_TYPE),
    ("xmp", XMP_TYPE),
    ("exif", EXIF_TYPE),
    ("generation_params", GENERATION_PARAMS_TYPE),
    ("watermark", WATERMARK_TYPE),
    ("provenance_source", pa.string()),
    ("evidence_verdict", pa.string()),
    ("verdict_reason", pa.string()),
    ("warnings", pa.list_(pa.string())),
    ("extra", pa.map_(pa.string(), pa.string())),
    # For http(s) inputs: the final response status, and whether X-Robots-Tag said
    # noai/noimageai (the publisher's opt-out from AI use).
    ("http_status", pa.int32()),
    ("robots_opt_out", pa.bool_()),
    ("run_id", pa.string()),
    ("processed_at", _TS),
])

# The scores columns about one input: its reference and this fetch of it. Every other column
# follows from the bytes alone, so inputs with identical bytes share them (transforms/dedupe).
INPUT_COLUMNS = ("image_id", "uri", "extra", "http_status", "robots_opt_out", "run_id",
                 "processed_at")
BYTES_COLUMNS = tuple(name for name in SCORES_SCHEMA.names if name not in INPUT_COLUMNS)

ERRORS_SCHEMA = pa.schema([
    ("image_id", pa.string()),
    ("uri", pa.string()),
    ("stage", pa.string()),
    ("error_type", pa.string()),
    ("message", pa.string()),
    ("attempts", pa.int32()),
    ("http_status", pa.int32()),
    ("run_id", pa.string()),
    ("processed_at", _TS),
])


def now_utc() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def empty_score_row() -> dict[str, Any]:
    """A scores row with every column present and null, so unfilled columns stay null."""
    return dict.fromkeys(SCORES_SCHEMA.names)


def error_row(
    *,
    image_id: str,
    uri: str,
    stage: str,
    error_type: str,
    message: str,
    run_id: str,
    attempts: int = 1,
    http_status: int | None = None,
) -> dict[str, Any]:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}")
    return {
        "image_id": image_id,
        "uri": uri,
        "stage": stage,
        "error_type": error_type,
        "message": message,
        "attempts": attempts,
        "http_status": http_status,
        "run_id": run_id,
        "processed_at": now_utc(),
    }
