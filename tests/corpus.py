"""Generates the good and bad input files the tests audit (no data from ../shared), and
reads the bundled sample as model inputs."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def photo_like(w: int, h: int, seed: int = 0) -> Image.Image:
    """A smooth gradient with noise: cheap, deterministic, and compresses like a photo."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / max(w - 1, 1), yy * 255 / max(h - 1, 1),
                     (xx + yy) * 127 / max(w + h - 2, 1)], axis=-1)
    arr = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def noise_png(seed: int, params: str | None = None, side: int = 40) -> bytes:
    """A small random PNG; with `params`, an A1111 `parameters` text chunk saying a
    generator made it."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    if params:
        info.add_text("parameters", params)
    pixels = np.random.default_rng(seed).integers(0, 255, (side, side, 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels), "PNG", pnginfo=info)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height but carries one tiny IDAT: a pixel-bomb header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def exif_rotated_jpeg(w: int = 320, h: int = 240) -> bytes:
    img = photo_like(w, h, seed=7)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW when displayed
    return encode(img, "JPEG", quality=90, exif=exif)


def animated_gif() -> bytes:
    frames = []
    for i in range(3):
        frame = Image.new("RGB", (64, 48), (20, 20, 20))
        frame.paste((200, 40 * i, 90), (i * 16, 0, i * 16 + 16, 48))
        frames.append(frame)
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


def palette_png_with_transparency() -> bytes:
    img = Image.new("P", (64, 64), 0)
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))
    for x in range(32):
        for y in range(64):
            img.putpixel((x, y), 1)
    buf = io.BytesIO()
    img.save(buf, "PNG", transparency=0)
    return buf.getvalue()


def png16() -> bytes:
    arr = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    return encode(Image.frombytes("I;16", (64, 64), arr.astype("<u2").tobytes()), "PNG")


def cmyk_jpeg() -> bytes:
    return encode(photo_like(96, 64, seed=3).convert("CMYK"), "JPEG", quality=90)


NOT_AN_IMAGE = ("decode", "not_an_image")


# name -> (bytes, expected outcome): ("score", None) or ("error", (stage, error_type))
def good_and_bad_files() -> dict[str, tuple[bytes, tuple[str, tuple[str, str] | None]]]:
    jpeg = encode(photo_like(400, 300, seed=1), "JPEG", quality=90)
    png = encode(photo_like(300, 200, seed=2), "PNG")
    return {
        "good.jpg": (jpeg, ("score", None)),
        "good.png": (png, ("score", None)),
        "good.webp": (encode(photo_like(120, 90, seed=4), "WEBP", quality=80), ("score", None)),
        "cmyk.jpg": (cmyk_jpeg(), ("score", None)),
        "sixteen_bit.png": (png16(), ("score", None)),
        "animated.gif": (animated_gif(), ("score", None)),
        "palette_transparent.png": (palette_png_with_transparency(), ("score", None)),
        "exif_rotated.jpg": (exif_rotated_jpeg(), ("score", None)),
        "rgba.png": (encode(photo_like(80, 80, seed=5).convert("RGBA"), "PNG"), ("score", None)),
        "la.png": (encode(photo_like(80, 80, seed=6).convert("LA"), "PNG"), ("score", None)),
        "bilevel.png": (encode(photo_like(80, 80, seed=8).convert("1"), "PNG"), ("score", None)),
        "zero.jpg": (b"", ("error", ("read", "empty_file"))),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], ("error", ("decode", "truncated"))),
        "truncated.png": (png[: len(png) // 2], ("error", ("decode", "truncated"))),
        "random.jpg": (np.random.default_rng(9).bytes(5000), ("error", NOT_AN_IMAGE)),
        "notes.txt": (b"this is a text file, not an image\n", ("error", NOT_AN_IMAGE)),
        "bomb.png": (png_header_only(30000, 30000), ("error", ("decode", "too_many_pixels"))),
    }


def write_corpus(root: Path) -> dict[str, tuple[str, tuple[str, str] | None]]:
    """Writes the files under root; returns absolute path -> expected outcome."""
    root.mkdir(parents=True, exist_ok=True)
    expected = {}
    for name, (data, outcome) in good_and_bad_files().items():
        path = root / name
        path.write_bytes(data)
        expected[str(path)] = outcome
    return expected


SAMPLE = Path(__file__).resolve().parents[1] / "sample"


def sample_model_inputs_by_name(spec) -> dict[str, np.ndarray]:
    """The bundled sample's images as `spec`'s model inputs, by file name, in name order
    (its broken files left out)."""
    from synthsieve.inference.preprocess import prepare_folder

    images = prepare_folder(SAMPLE, spec)
    assert len(images) >= 5
    return images


def sample_model_inputs(spec) -> list[np.ndarray]:
    """The bundled sample's images as `spec`'s model inputs (its broken files left out)."""
    return list(sample_model_inputs_by_name(spec).values())
