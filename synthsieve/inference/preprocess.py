"""Image bytes -> the model's input array: decode, then the spec's resize and crop."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from synthsieve.images import DEFAULT_MAX_PIXELS, Decoded, DecodeError, decode_image
from synthsieve.inference.spec import ModelSpec

__all__ = ["prepare", "prepare_folder"]


def prepare(data: bytes, spec: ModelSpec, max_pixels: int) -> tuple[Decoded, np.ndarray]:
    """Decodes `data` and preprocesses it to the model's HWC uint8 input.

    Args:
      data: the file's bytes.
      spec: the model, whose `decode_min_size` and `to_uint8` say what it takes.
      max_pixels: images with more pixels (by their header) are refused.

    Returns:
      The decoded image (size, format, warnings, original for provenance) and the input.

    Raises:
      DecodeError: with an `error_type` for anything that cannot become the model's input.
    """
    decoded = decode_image(data, spec.decode_min_size, max_pixels)
    try:
        pixels = spec.to_uint8(decoded.image)
    except Exception as e:
        raise DecodeError("preprocess_failed", f"{type(e).__name__}: {e}") from e
    return decoded, pixels


def prepare_folder(folder: Path, spec: ModelSpec,
                   max_pixels: int = DEFAULT_MAX_PIXELS) -> dict[str, np.ndarray]:
    """The model inputs of a folder's files, by file name in name order; files that cannot
    become one (the bundled sample's broken files, a README) are left out."""
    inputs = {}
    for path in sorted(p for p in Path(folder).iterdir() if p.is_file()):
        try:
            inputs[path.name] = prepare(path.read_bytes(), spec, max_pixels)[1]
        except DecodeError:
            continue
    return inputs
