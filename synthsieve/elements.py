"""Typed elements that flow between the pipeline's transforms."""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = ["ERRORS", "FetchedImage", "ImageInfo", "ImageRef"]

# The tagged output every transform sends its error rows to.
ERRORS = "errors"


class ImageRef(NamedTuple):
    """A reference to one input image, before anything is read."""

    uri: str
    image_id: str
    extra: dict[str, str] | None = None


class FetchedImage(NamedTuple):
    """The raw bytes of an image, read once; everything downstream works from these."""

    ref: ImageRef
    data: bytes
    sha256: str
    http_status: int | None = None
    robots_opt_out: bool | None = None


class ImageInfo(NamedTuple):
    """What is known about a decoded image; carried as the key through RunInference."""

    ref: ImageRef
    sha256: str
    num_bytes: int
    width: int
    height: int
    format: str | None
    warnings: tuple[str, ...] = ()
    http_status: int | None = None
    robots_opt_out: bool | None = None
    # The provenance columns (c2pa, xmp, exif, generation_params, watermark,
    # provenance_source) read from the file, or None when provenance was not read.
    provenance: dict[str, Any] | None = None
