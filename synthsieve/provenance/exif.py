"""EXIF Make, Model and Software, through Pillow's own EXIF reader."""

from __future__ import annotations

from typing import Any

from PIL import Image

__all__ = ["clean", "read_exif", "user_comment"]

MAKE, MODEL, SOFTWARE = 0x010F, 0x0110, 0x0131
USER_COMMENT, EXIF_IFD = 0x9286, 0x8769


def clean(value: Any, limit: int = 300) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = str(value).replace("\x00", "").strip()
    return text[:limit] or None


def read_exif(img: Image.Image) -> tuple[dict[str, Any] | None, list[str]]:
    try:
        exif = img.getexif()
        column = {"make": clean(exif.get(MAKE)), "model": clean(exif.get(MODEL)),
                  "software": clean(exif.get(SOFTWARE))}
    except Exception as e:  # Pillow's EXIF parser raises several types on hostile blocks
        return None, [f"exif: unreadable: {type(e).__name__}: {str(e)[:200]}"]
    return (column if any(column.values()) else None), []


def user_comment(img: Image.Image) -> str | None:
    """EXIF UserComment, where A1111 and Forge put their parameters in JPEG and WebP."""
    try:
        raw = img.getexif().get_ifd(EXIF_IFD).get(USER_COMMENT)
    except Exception:
        return None
    if raw is None:
        return None
    if isinstance(raw, bytes):
        prefix, body = raw[:8], raw[8:]
        if prefix.startswith(b"UNICODE"):
            # piexif writes UTF-16 big-endian; some tools write little-endian
            text = body.decode("utf-16-be", "replace")
            if text and ord(text[0]) > 0x2FFF:
                text = body.decode("utf-16-le", "replace")
            return text.replace("\x00", "")
        if prefix.startswith((b"ASCII", b"\x00" * 8)):
            return body.decode("utf-8", "replace").replace("\x00", "")
        return raw.decode("utf-8", "replace").replace("\x00", "")
    return str(raw)
