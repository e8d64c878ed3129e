"""The invisible watermarks Stable Diffusion's reference scripts embed, decoded from pixels.

All three are the invisible-watermark package's `dwtDct` method (EmbedMaxDct): one bit per
4x4 block of the Haar DWT's LL band of the U channel, repeated over the image.
- sd1: CompVis txt2img, bytes "StableDiffusionV1" (136 bits), BGR input.
- sd2: Stability's SD 2 txt2img, bytes "SDV2" (32 bits), BGR input.
- sdxl: generative-models and diffusers, the 48-bit WATERMARK_MESSAGE; diffusers hands the
  encoder RGB as if it were BGR, so both channel orders are tried.

Written here rather than called: the package's decoder loops over every 4x4 block in Python
(and its import pulls in torch for an unrelated method); for the three marks in both channel
orders that is slower than the decode and scoring of the image (bench/provenance.py times
it). block_scores
and decode_bits are the same arithmetic (cv2's colour conversion, pywt's Haar LL band, the
package's per-block rule and vote) vectorised with numpy; tests check them bit for bit
against the package's decoder and pywt on marked and unmarked images.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "BLOCK", "DETECT_AT", "MIN_PIXELS", "SCALE", "SCHEMES", "SDXL_MESSAGE", "Scheme",
    "block_scores", "decode_bits", "haar_ll", "read_watermark",
]

BLOCK = 4
SCALE = 36.0  # the package's default scales=[0, 36, 36]: only the U channel is used
MIN_PIXELS = 256 * 256  # the package refuses smaller images
DETECT_AT = 0.9  # bits matched; random bits reach this with p < 2e-6 even for 32 bits


SDXL_MESSAGE = 0b101100111110110010010000011110111011000110011110


def _bytes_bits(text: str) -> np.ndarray:
    return np.unpackbits(np.frombuffer(text.encode(), dtype=np.uint8)).astype(bool)


@dataclass(frozen=True)
class Scheme:
    name: str
    bits: np.ndarray
    orders: tuple[str, ...]  # "bgr": the encoder got BGR; "rgb": it got RGB as if BGR


SCHEMES = (
    Scheme("sd1", _bytes_bits("StableDiffusionV1"), ("bgr",)),
    Scheme("sd2", _bytes_bits("SDV2"), ("bgr",)),
    Scheme("sdxl", np.array([b == "1" for b in bin(SDXL_MESSAGE)[2:]]), ("rgb", "bgr")),
)


_H = 0.7071067811865476  # pywt.Wavelet("haar").dec_lo


def haar_ll(channel: np.ndarray) -> np.ndarray:
    """The LL band of pywt.dwt2(channel, "haar") for even sides, bit for bit: columns
    first, then rows, in pywt's order of operations (a tie at val % 36 == 18 is decided by
    the last bit). pywt computes all four bands from a float64 copy, ten times slower; here
    the uint8 pixels are multiplied as they are (the same float64 products) and each sum
    is made in place, so no full-size float64 copy of the channel is made."""
    rows = channel[0::2] * _H
    rows += channel[1::2] * _H
    ll = rows[:, 0::2] * _H
    ll += rows[:, 1::2] * _H
    return ll


def block_scores(rgb: np.ndarray, order: str) -> np.ndarray:
    """One 0/1 score per 4x4 block, in the package's block order (row-major).

    order "bgr": the encoder was given BGR (the package's convention); "rgb": it was given
    RGB as if it were BGR (diffusers' SDXL watermarker).
    """
    rows, cols = rgb.shape[:2]
    code = cv2.COLOR_RGB2YUV if order == "bgr" else cv2.COLOR_BGR2YUV
    yuv = cv2.cvtColor(np.ascontiguousarray(rgb[:rows // 4 * 4, :cols // 4 * 4]), code)
    ca1 = haar_ll(yuv[:, :, 1])
    np.abs(ca1, out=ca1)
    r, c = ca1.shape[0] // BLOCK, ca1.shape[1] // BLOCK
    blocks = ca1[:r * BLOCK, :c * BLOCK].reshape(r, BLOCK, c, BLOCK).transpose(0, 2, 1, 3)
    # The package takes the coefficient of largest magnitude after the first (the DC) and
    # its absolute value: that is the largest absolute value, whichever position holds it.
    val = blocks.reshape(r * c, BLOCK * BLOCK)[:, 1:].max(axis=1)
    return (val % SCALE) > 0.5 * SCALE


def decode_bits(scores: np.ndarray, length: int) -> np.ndarray:
    """Block scores -> `length` bits by the package's vote (mean * 255 > 127)."""
    n = scores.shape[0]
    sums = np.bincount(np.arange(n) % length, weights=scores.astype(np.float64),
                       minlength=length)
    counts = np.bincount(np.arange(n) % length, minlength=length)
    return (sums / np.maximum(counts, 1)) * 255 > 127


def read_watermark(rgb: np.ndarray) -> dict[str, object] | None:
    """The `watermark` column for an HxWx3 uint8 RGB image at its stored size, or None
    when the image is too small to carry a mark."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] * rgb.shape[1] < MIN_PIXELS:
        return None
    scores = {order: block_scores(rgb, order) for order in ("bgr", "rgb")}
    best_name, best = "none", 0.0
    for scheme in SCHEMES:
        for order in scheme.orders:
            bits = decode_bits(scores[order], scheme.bits.size)
            matched = float(np.mean(bits == scheme.bits))
            if matched > best:
                best = matched
                best_name = scheme.name if matched >= DETECT_AT else "none"
    return {"scheme": best_name, "bits_matched": round(best, 4)}
