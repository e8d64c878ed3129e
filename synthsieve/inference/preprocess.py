"""Image bytes -> the model's input array: decode, then the spec's resize and crop."""

from __future__ import annotations

import numpy as np

from synthsieve.images import Decoded, DecodeError, decode_image
from synthsieve.inference.spec import ModelSpec

__all__ = ["prepare"]


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
