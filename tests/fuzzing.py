"""Mutation fuzzing of what synthsieve reads from strangers: image files of every format it
decodes, with C2PA manifests, XMP packets, EXIF and generator text in them.

The mutator is seeded and hand-written rather than atheris/hypothesis-driven: a case is
(seed file, case number), so any failure replays from two integers and the corpus of found
cases is a list of those, not a directory of binaries. The operations are the classic ones
of binary fuzzers (bit flips, interesting values, truncation, block duplication/removal,
splicing two seeds), applied 1-8 times per case.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

INTERESTING = (0x00, 0x01, 0x7F, 0x80, 0xFF, 0xFE)
XMP = (b'<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?>'
       b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
       b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
       b'xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
       b'Iptc4xmpExt:DigitalSourceType="http://cv.iptc.org/newscodes/digitalsourcetype/'
       b'trainedAlgorithmicMedia"/></rdf:RDF></x:xmpmeta><?xpacket end="w"?>')
PARAMS = "a cat\nSteps: 20, Sampler: Euler, Model: sd_xl_base_1.0, Version: v1.9.4"


def _pixels(seed: int, side: int = 48, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).convert(mode)


def _save(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def seed_files(c2pa_chain=None) -> dict[str, bytes]:
    """One small, valid file per format and metadata carrier."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    exif = Image.Exif()
    exif[0x010F] = "Canon"  # Make
    exif[0x0131] = "Stable Diffusion"  # Software
    exif[0x0112] = 6  # Orientation: rotated
    text = PngInfo()
    text.add_text("parameters", PARAMS)
    text.add_itxt("XML:com.adobe.xmp", XMP.decode("utf-8"))
    frames = [_pixels(i, 32, "P") for i in range(3)]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    seeds = {
        "jpeg": _save(_pixels(1), "JPEG", quality=85, exif=exif.tobytes(), xmp=XMP),
        "png": _save(_pixels(2), "PNG", pnginfo=text),
        "png_rgba": _save(_pixels(3, mode="RGBA"), "PNG"),
        "webp": _save(_pixels(4), "WEBP", quality=80, exif=exif.tobytes()),
        "gif": gif.getvalue(),
        "tiff": _save(_pixels(5), "TIFF", compression="tiff_deflate"),
        "heif": _save(_pixels(6), "HEIF", quality=80),
        "bmp": _save(_pixels(7, mode="L"), "BMP"),
    }
    if c2pa_chain is not None:
        from c2pa_certs import sign

        generated = [{"action": "c2pa.created", "softwareAgent": "Adobe Firefly",
                      "digitalSourceType": "http://cv.iptc.org/newscodes/digitalsourcetype/"
                                           "trainedAlgorithmicMedia"}]
        seeds["c2pa_jpeg"] = sign(seeds["jpeg"], "image/jpeg", c2pa_chain, generated)
        seeds["c2pa_png"] = sign(_save(_pixels(8), "PNG"), "image/png", c2pa_chain,
                                 generated)
    return seeds


def _flip(r: random.Random, b: bytearray) -> None:
    i = r.randrange(len(b))
    b[i] ^= 1 << r.randrange(8)


def _interesting(r: random.Random, b: bytearray) -> None:
    b[r.randrange(len(b))] = r.choice(INTERESTING)


def _big_number(r: random.Random, b: bytearray) -> None:
    # lengths and dimensions live in 16/32-bit fields: make one huge or zero
    i = r.randrange(max(1, len(b) - 4))
    b[i:i + 4] = r.choice((b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x00\x00\x00\x00",
                           b"\x00\x01\x00\x00"))


def _truncate(r: random.Random, b: bytearray) -> None:
    del b[r.randrange(len(b)):]


def _remove_block(r: random.Random, b: bytearray) -> None:
    i = r.randrange(len(b))
    del b[i:i + r.randint(1, 256)]


def _duplicate_block(r: random.Random, b: bytearray) -> None:
    i = r.randrange(len(b))
    block = b[i:i + r.randint(1, 512)]
    j = r.randrange(len(b))
    b[j:j] = block * r.randint(1, 4)


def _insert_junk(r: random.Random, b: bytearray) -> None:
    j = r.randrange(len(b))
    b[j:j] = bytes(r.randrange(256) for _ in range(r.randint(1, 64)))


MUTATIONS: tuple[Callable[[random.Random, bytearray], None], ...] = (
    _flip, _flip, _flip, _interesting, _interesting, _big_number, _truncate, _remove_block,
    _duplicate_block, _insert_junk)


def mutate(seeds: dict[str, bytes], name: str, case: int) -> bytes:
    """Case `case` of seed `name`: deterministic."""
    r = random.Random(f"{name}:{case}")
    b = bytearray(seeds[name])
    if r.random() < 0.1:  # splice: the head of this file on the tail of another
        other = seeds[r.choice(sorted(seeds))]
        b = b[:r.randrange(1, len(b))] + bytearray(other[r.randrange(len(other)):])
    for _ in range(r.randint(1, 8)):
        if not b:
            break
        r.choice(MUTATIONS)(r, b)
    return bytes(b)


def manifest_seeds() -> dict[str, bytes]:
    """A LAION-style manifest in each format synthsieve reads."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"url": f"https://example.org/{i}.jpg", "id": str(i),
             "caption": "a cat on a mat " * (i % 4)} for i in range(40)]
    parquet = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), parquet)
    csv_text = "url,id,caption\n" + "".join(
        f'{r["url"]},{r["id"]},"{r["caption"]}"\n' for r in rows)
    return {"parquet": parquet.getvalue(), "csv": csv_text.encode(),
            "jsonl": "".join(json.dumps(r) + "\n" for r in rows).encode()}
