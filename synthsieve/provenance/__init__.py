"""What an image file says about its own origin, read from the bytes already fetched.

ProvenanceReader.read() fills the scores table's evidence columns (c2pa, xmp, exif,
generation_params, watermark) and returns warnings for anything it could not read; it never
raises, so metadata can never cost an image its pixel score. The columns derived from them,
provenance_source (evidence.provenance_source) and evidence_verdict with verdict_reason
(evidence.evidence_verdict, which adds the pixel verdict), are computed once, where the
scores row is assembled (transforms/score.py), from the file's evidence and a vendor's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from synthsieve.provenance.c2pa_manifest import C2paReader
from synthsieve.provenance.evidence import evidence_verdict, provenance_source
from synthsieve.provenance.exif import read_exif, user_comment
from synthsieve.provenance.generation import read_generation
from synthsieve.provenance.watermark import read_watermark
from synthsieve.provenance.xmp import packet_of, read_xmp

__all__ = ["ProvenanceOptions", "ProvenanceReader", "evidence_verdict", "provenance_source"]

COLUMNS = ("c2pa", "xmp", "exif", "generation_params", "watermark")


@dataclass(frozen=True)
class ProvenanceOptions:
    c2pa_trust_anchors: str | None = None  # PEM text of the anchors that make `trusted`
    keep_prompts: bool = False
    watermark: bool = True


class ProvenanceReader:
    """Reads every kind of evidence; one per worker process (holds the C2PA contexts)."""

    def __init__(self, options: ProvenanceOptions):
        self.options = options
        self._c2pa = C2paReader(options.c2pa_trust_anchors)

    def read(self, data: bytes, img: Image.Image, rgb: Image.Image | None,
             image_format: str | None) -> tuple[dict[str, Any], list[str]]:
        """(provenance columns, warnings). `img` is the file as Pillow opened it (its info,
        text chunks and EXIF); `rgb` the decoded pixels at stored size, or None when they
        were decoded reduced (no watermark check then)."""
        columns: dict[str, Any] = dict.fromkeys(COLUMNS)
        warnings: list[str] = []
        steps = (
            ("c2pa", lambda: self._c2pa.read(data, image_format)),
            ("xmp", lambda: read_xmp(packet_of(img))),
            ("exif", lambda: read_exif(img)),
            ("generation_params", lambda: read_generation(
                texts_of(img), user_comment(img), self.options.keep_prompts)),
        )
        for name, step in steps:
            try:
                columns[name], found = step()
                warnings.extend(found)
            except Exception as e:  # one reader's bug must not lose the others or the image
                warnings.append(f"{name}: {type(e).__name__}: {str(e)[:200]}")
        if self.options.watermark and rgb is not None:
            try:
                columns["watermark"] = read_watermark(np.asarray(rgb))
            except Exception as e:
                warnings.append(f"watermark: {type(e).__name__}: {str(e)[:200]}")
        return columns, warnings


def texts_of(img: Image.Image) -> dict[str, str]:
    """Text chunks (PNG tEXt/zTXt/iTXt) and other string metadata Pillow keeps in info."""
    texts: dict[str, str] = {}
    for key, value in getattr(img, "text", {}).items():
        texts[str(key)] = str(value)
    for key, value in img.info.items():
        if isinstance(value, str) and key not in texts:
            texts[str(key)] = value
    return texts
