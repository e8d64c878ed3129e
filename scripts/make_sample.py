"""Writes the small bundled sample under sample/ (deterministic; re-run to regenerate).

Pictures drawn by code, in the formats and modes a real corpus mixes, plus a few broken
files so that a first run also shows error rows. None of them come from ../shared/data.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parents[1] / "sample"


def scene(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    sky = np.stack([60 + 80 * yy / h, 110 + 60 * yy / h, 200 - 40 * yy / h], -1)
    img = Image.fromarray(np.clip(sky + rng.normal(0, 6, sky.shape), 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    for _ in range(12):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(h // 3, h))
        r = int(rng.integers(h // 20, h // 5))
        colour = tuple(int(c) for c in rng.integers(20, 230, 3))
        d.ellipse((x0 - r, y0 - r, x0 + r, y0 + r), fill=colour)
    return img.filter(ImageFilter.GaussianBlur(1.2))


def save(img: Image.Image, name: str, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    (ROOT / name).write_bytes(buf.getvalue())
    return buf.getvalue()


def main() -> int:
    ROOT.mkdir(exist_ok=True)
    jpeg = save(scene(1024, 768, 1), "landscape.jpg", "JPEG", quality=88)
    save(scene(640, 640, 2), "square.png", "PNG")
    save(scene(800, 600, 3), "photo.webp", "WEBP", quality=80)
    save(scene(600, 900, 4).convert("CMYK"), "print_cmyk.jpg", "JPEG", quality=85)
    save(scene(512, 512, 5).convert("RGBA"), "cutout.png", "PNG")
    save(scene(320, 240, 6).convert("P", palette=Image.Palette.ADAPTIVE), "palette.gif", "GIF")
    exif = Image.Exif()
    exif[0x0112] = 6
    save(scene(800, 600, 7), "rotated.jpg", "JPEG", quality=85, exif=exif)
    (ROOT / "broken_truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (ROOT / "not_an_image.txt").write_text("A text file in an image folder becomes an error row.\n")
    (ROOT / "empty.png").write_bytes(b"")
    return 0


if __name__ == "__main__":
    sys.exit(main())
