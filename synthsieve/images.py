"""Image bytes -> RGB pixels with Pillow, and the model's input from them.

JPEGs are decoded in draft mode at the smallest DCT scale that still covers the model input,
which saves most of the decode cost of camera-sized photos. Every Pillow mode ends as RGB;
animated files give their first frame. A limit on pixels raises DecodeError, never a warning.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pillow_heif
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

__all__ = [
    "DEFAULT_MAX_PIXELS", "DecodeError", "Decoded", "decode_image", "to_rgb",
    "without_png_text",
]

DEFAULT_MAX_PIXELS = 100_000_000
_BACKGROUND = (255, 255, 255)

# A truncated file is an error row, not a half-grey image scored as if it were whole.
ImageFile.LOAD_TRUNCATED_IMAGES = False
# Pillow's global bomb check warns, then raises at its own limit inside Image.open, before we
# can see the header. decode_image checks --max-pixels on the header instead, per image.
Image.MAX_IMAGE_PIXELS = None
# HEIF/HEIC (phones) through libheif; AVIF is Pillow's own.
pillow_heif.register_heif_opener()


class DecodeError(Exception):
    def __init__(self, error_type: str, message: str):
        super().__init__(message)
        self.error_type = error_type


@dataclass(frozen=True)
class Decoded:
    image: Image.Image  # RGB, orientation applied, possibly draft-reduced
    format: str | None
    width: int  # of the original image, as stored
    height: int
    warnings: tuple[str, ...]
    original: Image.Image | None = None  # as opened: info, text chunks, EXIF
    full_size: bool = True  # False when JPEG draft mode decoded it reduced

    @property
    def stored_pixels(self) -> Image.Image | None:
        """RGB at the stored size and orientation (what a watermark was embedded in)."""
        return self.image if self.full_size else None


_PNG_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")


def without_png_text(data: bytes) -> bytes | None:
    """The PNG with its text chunks removed, or None if it is not a walkable PNG.

    Written by hand because Pillow raises inside Image.open when one text chunk inflates past
    MAX_TEXT_CHUNK, with no per-image way to skip them, and an oversized caption must not
    cost the pixels.
    """
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    out = [data[:8]]
    pos = 8
    while pos + 12 <= len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        end = pos + 12 + length
        if end > len(data):
            out.append(data[pos:])
            break
        if kind not in _PNG_TEXT_CHUNKS:
            out.append(data[pos:end])
        pos = end
    return b"".join(out)


def to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        peak = float(np.nanmax(arr)) if arr.size else 0.0
        if mode.startswith("I;16"):
            top = 65535.0
        elif mode == "I":
            # 32-bit integer mode holds 16-bit PNG/TIFF samples (0..65535) or plain 8-bit.
            top = 65535.0 if peak > 255 else 255.0
        else:
            top = 1.0 if peak <= 1.0 else 255.0
        arr = np.clip(np.nan_to_num(arr) * (255.0 / top), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode == "PA":
        img = img.convert("RGBA")
    elif mode == "1":
        img = img.convert("L")
    if img.mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def decode_image(data: bytes, min_size: tuple[int, int], max_pixels: int,
                 full_size: bool = False) -> Decoded:
    """Bytes -> RGB image at least min_size (w, h) on its shorter side where the file allows
    (at the stored size when full_size).

    Raises DecodeError with an error_type for anything that cannot become an RGB image.
    """
    warnings: list[str] = []
    try:
        try:
            img = Image.open(io.BytesIO(data))
        except ValueError as e:
            stripped = without_png_text(data) if "TEXT_" in str(e) else None
            if stripped is None:
                raise
            img = Image.open(io.BytesIO(stripped))
            warnings.append(f"png text chunks dropped: {e}")
    except UnidentifiedImageError as e:
        # Pillow's text names the in-memory buffer (<_io.BytesIO object at 0x...>): noise
        # that would make every such row's message different.
        raise DecodeError("not_an_image", "not a recognised image format") from e
    except Image.DecompressionBombError as e:
        raise DecodeError("too_many_pixels", str(e)) from e
    except Exception as e:  # header parsing of hostile files raises OSError, SyntaxError, ...
        kind = "truncated" if "truncated" in str(e).lower() else "corrupt"
        raise DecodeError(kind, f"cannot read the image header: {type(e).__name__}: {e}") from e
    width, height = img.size
    fmt = img.format
    if width <= 0 or height <= 0:
        raise DecodeError("corrupt", f"invalid dimensions {width}x{height}")
    if width * height > max_pixels:
        raise DecodeError(
            "too_many_pixels",
            f"{width}x{height} = {width * height} pixels is over the --max-pixels limit "
            f"of {max_pixels}")
    try:
        if getattr(img, "is_animated", False):
            img.seek(0)
            warnings.append("animated: scored the first frame")
        if fmt == "JPEG" and not full_size:
            # draft picks the largest DCT reduction keeping both sides >= the request,
            # so the shorter side still covers the model input after orientation.
            side = max(min_size)
            img.draft(None, (side, side))
        img.load()
        original = img
        try:
            img = ImageOps.exif_transpose(img)
        except Exception as e:  # a broken EXIF block must not lose the pixels
            warnings.append(f"exif orientation not applied: {e}")
        rgb = to_rgb(img)
    except DecodeError:
        raise
    except Image.DecompressionBombError as e:
        raise DecodeError("too_many_pixels", str(e)) from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        text = str(e)
        kind = "truncated" if "truncated" in text.lower() else "corrupt"
        raise DecodeError(kind, f"cannot decode {fmt or 'image'}: {text}") from e
    except Exception as e:  # Pillow plugins raise a zoo of types on hostile input
        raise DecodeError(
            "corrupt", f"cannot decode {fmt or 'image'}: {type(e).__name__}: {e}") from e
    return Decoded(rgb, fmt, width, height, tuple(warnings), original,
                   full_size=original.size == (width, height))
