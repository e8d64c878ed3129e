"""Decodes image bytes with Pillow into the model's input, one decode per image.

JPEGs are decoded in draft mode at the smallest DCT scale that still covers the model input,
which is most of the decode cost saved on camera-sized photos. Every Pillow mode ends as RGB;
animated files give their first frame. Limits on pixels produce error rows, never a warning.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np
import pillow_heif
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from synthsieve.elements import ERRORS, FetchedImage, ImageInfo
from synthsieve.inference.spec import ModelSpec
from synthsieve.provenance import ProvenanceOptions, ProvenanceReader
from synthsieve.schema import STAGE_DECODE, error_row

DEFAULT_MAX_PIXELS = 100_000_000
# The slowest of 10,000 fuzzed files took 0.23 s here: a minute is far past any real image
# and leaves room for a slow, shared machine.
DEFAULT_DECODE_TIMEOUT_S = 60.0
log = logging.getLogger("synthsieve.decode")
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


def prepare(data: bytes, spec: ModelSpec, max_pixels: int) -> tuple[Decoded, np.ndarray]:
    """Decode and preprocess to the model's HWC uint8 input."""
    decoded = decode_image(data, spec.decode_min_size, max_pixels)
    try:
        pixels = spec.to_uint8(decoded.image)
    except Exception as e:
        raise DecodeError("preprocess_failed", f"{type(e).__name__}: {e}") from e
    return decoded, pixels


class DecodeTimeout(Exception):
    pass


def within(timeout_s: float, work: Callable[[], Any]) -> Any:
    """work() run in a thread of its own; raises DecodeTimeout if it is not done in time.

    Python cannot stop a thread, so one that overruns is left to finish on its own (it is
    bounded by --max-pixels and --max-bytes) and its result thrown away; the element gets
    its error row now. A thread per image costs about 0.16 ms (measured here, CI machine
    busy) against milliseconds of decode.
    """
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = work()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = e

    worker = threading.Thread(target=run, name="synthsieve-decode", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise DecodeTimeout(f"decoding took longer than {timeout_s:g} s; abandoned")
    if "error" in box:
        raise box["error"]
    return box["value"]


class _Decode(beam.DoFn):
    def __init__(self, spec: ModelSpec | None, max_pixels: int, run_id: str,
                 provenance: ProvenanceOptions | None,
                 timeout_s: float = DEFAULT_DECODE_TIMEOUT_S):
        self._spec = spec
        self._max_pixels = max_pixels
        self._run_id = run_id
        self._provenance_options = provenance
        self._provenance: ProvenanceReader | None = None
        self._timeout_s = timeout_s
        self._timeouts = beam.metrics.Metrics.counter("synthsieve", "decode_timeouts")

    def setup(self) -> None:
        # Another library in the worker may have restored Pillow's global limit.
        Image.MAX_IMAGE_PIXELS = None
        self._new_reader()

    def _new_reader(self) -> None:
        if self._provenance_options is not None:
            self._provenance = ProvenanceReader(self._provenance_options)

    def process(self, item: FetchedImage) -> Iterable[Any]:
        try:
            yield within(self._timeout_s, lambda: self._decode(item))
        except DecodeTimeout as e:
            self._timeouts.inc()
            log.warning("%s: %s", item.ref.uri, e)
            # The abandoned thread may still be using the reader: the next image gets its own.
            self._new_reader()
            yield beam.pvalue.TaggedOutput(ERRORS, error_row(
                image_id=item.ref.image_id, uri=item.ref.uri, stage=STAGE_DECODE,
                error_type="timeout", message=str(e), run_id=self._run_id,
                http_status=item.http_status))

    def _decode(self, item: FetchedImage) -> Any:
        """(ImageInfo, payload), or the tagged error row of a file that is not an image."""
        try:
            if self._spec is None:
                # For a remote API or no model: decoding proves the file is a whole image (no
                # request is paid for garbage); the original bytes are what gets sent.
                decoded = decode_image(item.data, (64, 64), self._max_pixels)
                payload: Any = (item.data, item.ref.uri)
            else:
                decoded, payload = prepare(item.data, self._spec, self._max_pixels)
        except DecodeError as e:
            return beam.pvalue.TaggedOutput(ERRORS, error_row(
                image_id=item.ref.image_id, uri=item.ref.uri, stage=STAGE_DECODE,
                error_type=e.error_type, message=str(e), run_id=self._run_id,
                http_status=item.http_status))
        warnings = list(decoded.warnings)
        provenance = None
        reader = self._provenance
        if reader is not None and decoded.original is not None:
            provenance, found = reader.read(
                item.data, decoded.original, decoded.stored_pixels, decoded.format)
            warnings.extend(found)
        info = ImageInfo(
            ref=item.ref, sha256=item.sha256, num_bytes=len(item.data), width=decoded.width,
            height=decoded.height, format=decoded.format, warnings=tuple(warnings),
            http_status=item.http_status, robots_opt_out=item.robots_opt_out,
            provenance=provenance)
        return info, payload


class DecodeImages(beam.PTransform):
    """FetchedImage -> {'images': (ImageInfo, HWC uint8 array), 'errors': error rows}.

    With spec=None (remote APIs, --backend none) the image is decoded to validate it and the
    element is (ImageInfo, (original bytes, uri)) instead of pixels. With provenance options
    the same pass reads the file's provenance evidence into ImageInfo.provenance.
    """

    def __init__(self, spec: ModelSpec | None, run_id: str,
                 max_pixels: int = DEFAULT_MAX_PIXELS,
                 provenance: ProvenanceOptions | None = None,
                 timeout_s: float = DEFAULT_DECODE_TIMEOUT_S):
        super().__init__()
        if max_pixels <= 0:
            raise ValueError("max_pixels must be positive")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self._timeout_s = timeout_s
        self._spec = spec
        self._run_id = run_id
        self._max_pixels = max_pixels
        self._provenance = provenance

    def expand(self, images: beam.PCollection) -> dict[str, beam.PCollection]:
        out = images | "Decode" >> beam.ParDo(
            _Decode(self._spec, self._max_pixels, self._run_id, self._provenance,
                    self._timeout_s)
        ).with_outputs(ERRORS, main="images")
        return {"images": out.images, "errors": out[ERRORS]}
