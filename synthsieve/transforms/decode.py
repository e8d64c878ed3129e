"""The decode stage: FetchedImage -> (ImageInfo, model input) or an error row, one decode
per image, bounded in time, with the file's provenance read in the same pass.

The decoding itself is synthsieve/images.py; this module runs it inside Beam.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

import apache_beam as beam
from PIL import Image

from synthsieve.counters import DECODE_TIMEOUTS, counter
from synthsieve.elements import ERRORS, FetchedImage, ImageInfo
from synthsieve.images import DEFAULT_MAX_PIXELS, DecodeError, decode_image
from synthsieve.inference.preprocess import prepare
from synthsieve.inference.spec import ModelSpec
from synthsieve.provenance import ProvenanceOptions, ProvenanceReader
from synthsieve.schema import STAGE_DECODE, error_row

__all__ = ["DEFAULT_DECODE_TIMEOUT_S", "DecodeImages", "DecodeTimeout", "within"]

# A minute is far past any real image (the slowest of a fuzzed corpus takes a fraction of a
# second) and leaves room for a slow, shared machine.
DEFAULT_DECODE_TIMEOUT_S = 60.0
log = logging.getLogger("synthsieve.decode")


class DecodeTimeout(Exception):
    pass


def within(timeout_s: float, work: Callable[[], Any]) -> Any:
    """work() run in a thread of its own; raises DecodeTimeout if it is not done in time.

    Python cannot stop a thread, so one that overruns is left to finish on its own (it is
    bounded by --max-pixels and --max-bytes) and its result thrown away; the element gets
    its error row now. Starting a thread per image costs far less than the decode it guards.
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
        self._timeouts = counter(DECODE_TIMEOUTS)

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
        """
        Args:
          spec: the model whose input to prepare, or None to decode only to validate.
          run_id: the run the error rows belong to.
          max_pixels: images with more pixels (by their header) are error rows.
          provenance: what provenance to read in the same pass; None reads none.
          timeout_s: an image whose decode and provenance read take longer is a `timeout` row.
        """
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
