"""The robustness conditions: what real corpora do to images before anyone audits them.

Each condition turns the original bytes into new bytes. Except where re-encoding is the
point, a perturbed image keeps its format (JPEG stays JPEG at quality 95, anything else
becomes PNG), so that a condition tests one thing at a time.
"""

from __future__ import annotations

import io
from collections.abc import Callable

from PIL import Image, ImageOps

from synthsieve.images import to_rgb

__all__ = [
    "AS_IS", "CONDITIONS", "center_crop", "half", "jpeg75", "jpeg75_half", "png_to_jpeg",
]

AS_IS = "as_is"


def _open(data: bytes) -> tuple[Image.Image, str | None]:
    img = Image.open(io.BytesIO(data))
    fmt = img.format
    return to_rgb(ImageOps.exif_transpose(img)), fmt


def _save(img: Image.Image, fmt: str, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.convert("RGB").save(buf, "JPEG", quality=quality)
    else:
        img.save(buf, "PNG")
    return buf.getvalue()


def _same_format(fmt: str | None) -> str:
    return "JPEG" if fmt == "JPEG" else "PNG"


def jpeg75(data: bytes) -> bytes:
    img, _ = _open(data)
    return _save(img, "JPEG", 75)


def half(data: bytes) -> bytes:
    img, fmt = _open(data)
    small = img.resize((max(1, img.width // 2), max(1, img.height // 2)),
                       Image.Resampling.BICUBIC)
    return _save(small, _same_format(fmt))


def center_crop(data: bytes) -> bytes:
    """The central 70% of each side (about half the area)."""
    img, fmt = _open(data)
    w, h = img.size
    cw, ch = max(1, round(w * 0.7)), max(1, round(h * 0.7))
    left, top = (w - cw) // 2, (h - ch) // 2
    return _save(img.crop((left, top, left + cw, top + ch)), _same_format(fmt))


def png_to_jpeg(data: bytes) -> bytes:
    """Non-JPEG images re-encoded as JPEG quality 90; JPEGs pass unchanged."""
    img, fmt = _open(data)
    if fmt == "JPEG":
        return data
    return _save(img, "JPEG", 90)


def jpeg75_half(data: bytes) -> bytes:
    """Half size, then JPEG quality 75: the condition the model card's goal is stated on."""
    img, _ = _open(data)
    small = img.resize((max(1, img.width // 2), max(1, img.height // 2)),
                       Image.Resampling.BICUBIC)
    return _save(small, "JPEG", 75)


CONDITIONS: dict[str, Callable[[bytes], bytes] | None] = {
    AS_IS: None,
    "jpeg75": jpeg75,
    "half": half,
    "center_crop": center_crop,
    "png_to_jpeg": png_to_jpeg,
    "jpeg75_half": jpeg75_half,
}
