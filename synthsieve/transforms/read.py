"""Reads each image's bytes once, through Beam's FileSystems (local, gs://, s3://)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from synthsieve.elements import FetchedImage, ImageRef
from synthsieve.filesystems import use_gcs_emulator_credentials
from synthsieve.schema import STAGE_READ, error_row

ERRORS = "errors"
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


def _classify(exc: BaseException) -> str:
    text = str(exc).lower()
    if isinstance(exc, FileNotFoundError) or "no such file" in text or "not found" in text:
        return "not_found"
    if isinstance(exc, PermissionError) or "permission denied" in text or "forbidden" in text:
        return "permission_denied"
    if isinstance(exc, IsADirectoryError) or "is a directory" in text:
        return "is_a_directory"
    return "io_error"


class _ReadBytes(beam.DoFn):
    def __init__(self, max_bytes: int, run_id: str):
        self._max_bytes = max_bytes
        self._run_id = run_id
        self._read_bytes = Metrics.counter("synthsieve", "bytes_read")

    def setup(self) -> None:
        use_gcs_emulator_credentials()

    def process(self, ref: ImageRef) -> Iterable[Any]:
        try:
            # UNCOMPRESSED: FileSystems would otherwise gunzip a file named *.gz.
            with FileSystems.open(ref.uri, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                data = f.read(self._max_bytes + 1)
        except Exception as e:  # every read failure of any filesystem becomes a row
            yield self._error(ref, _classify(e), f"cannot read {ref.uri}: {e}")
            return
        if not data:
            yield self._error(ref, "empty_file", "the file is empty (0 bytes)")
            return
        if len(data) > self._max_bytes:
            yield self._error(
                ref, "too_large", f"the file is larger than the --max-bytes limit of "
                f"{self._max_bytes} bytes")
            return
        self._read_bytes.inc(len(data))
        yield FetchedImage(ref=ref, data=data, sha256=hashlib.sha256(data).hexdigest())

    def _error(self, ref: ImageRef, error_type: str, message: str) -> beam.pvalue.TaggedOutput:
        return beam.pvalue.TaggedOutput(ERRORS, error_row(
            image_id=ref.image_id, uri=ref.uri, stage=STAGE_READ, error_type=error_type,
            message=message, run_id=self._run_id))


class ReadImages(beam.PTransform):
    """ImageRef -> {'images': FetchedImage, 'errors': error rows}."""

    def __init__(self, run_id: str, max_bytes: int = DEFAULT_MAX_BYTES):
        super().__init__()
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self._run_id = run_id
        self._max_bytes = max_bytes

    def expand(self, refs: beam.PCollection) -> dict[str, beam.PCollection]:
        out = refs | "ReadBytes" >> beam.ParDo(
            _ReadBytes(self._max_bytes, self._run_id)).with_outputs(ERRORS, main="images")
        return {"images": out.images, "errors": out[ERRORS]}
