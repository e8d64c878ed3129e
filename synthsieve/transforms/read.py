"""Gets each image's bytes once: Beam FileSystems for files, gs:// and s3://; aiohttp for
http(s). The same URI listed by several inputs is read once and shared by all of them."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from synthsieve.elements import FetchedImage, ImageRef
from synthsieve.filesystems import use_gcs_emulator_credentials
from synthsieve.schema import STAGE_FETCH, STAGE_READ, error_row
from synthsieve.transforms.fetch_http import FetchHttpBatch, HttpConfig, HttpResult

ERRORS = "errors"
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


def is_http(uri: str) -> bool:
    return uri[:8].lower().startswith(("http://", "https://"))


def _classify(exc: BaseException) -> str:
    text = str(exc).lower()
    if isinstance(exc, FileNotFoundError) or "no such file" in text or "not found" in text \
            or "404" in text:
        return "not_found"
    if isinstance(exc, PermissionError) or "permission denied" in text or "forbidden" in text \
            or "403" in text:
        return "permission_denied"
    if isinstance(exc, IsADirectoryError) or "is a directory" in text:
        return "is_a_directory"
    return "io_error"


def _fan_out(refs: Iterable[ImageRef], data: bytes, sha: str, **http: Any
             ) -> Iterable[FetchedImage]:
    for ref in refs:
        yield FetchedImage(ref=ref, data=data, sha256=sha, **http)


class _ReadBytes(beam.DoFn):
    def __init__(self, max_bytes: int, run_id: str):
        self._max_bytes = max_bytes
        self._run_id = run_id
        self._read_bytes = Metrics.counter("synthsieve", "bytes_read")

    def setup(self) -> None:
        use_gcs_emulator_credentials()

    def process(self, group: tuple[str, Iterable[ImageRef]]) -> Iterable[Any]:
        uri, refs = group
        try:
            # UNCOMPRESSED: FileSystems would otherwise gunzip a file named *.gz.
            with FileSystems.open(uri, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                data = f.read(self._max_bytes + 1)
        except Exception as e:  # every read failure of any filesystem becomes a row
            yield from self._errors(refs, _classify(e), f"cannot read {uri}: {e}")
            return
        if not data:
            yield from self._errors(refs, "empty_file", "the file is empty (0 bytes)")
            return
        if len(data) > self._max_bytes:
            yield from self._errors(refs, "too_large", "the file is larger than the --max-bytes "
                                    f"limit of {self._max_bytes} bytes")
            return
        self._read_bytes.inc(len(data))
        yield from _fan_out(refs, data, hashlib.sha256(data).hexdigest())

    def _errors(self, refs: Iterable[ImageRef], error_type: str, message: str):
        for ref in refs:
            yield beam.pvalue.TaggedOutput(ERRORS, error_row(
                image_id=ref.image_id, uri=ref.uri, stage=STAGE_READ, error_type=error_type,
                message=message, run_id=self._run_id))


class _HttpToImages(beam.DoFn):
    def __init__(self, run_id: str):
        self._run_id = run_id
        self._fetched = Metrics.counter("synthsieve", "http_fetched")

    def process(self, item: tuple[Iterable[ImageRef], HttpResult]) -> Iterable[Any]:
        refs, result = item
        if result.error_type:
            for ref in refs:
                yield beam.pvalue.TaggedOutput(ERRORS, error_row(
                    image_id=ref.image_id, uri=ref.uri, stage=STAGE_FETCH,
                    error_type=result.error_type, message=result.message or result.error_type,
                    attempts=result.attempts, http_status=result.status, run_id=self._run_id))
            return
        self._fetched.inc()
        yield from _fan_out(refs, result.data, hashlib.sha256(result.data).hexdigest(),
                            http_status=result.status, robots_opt_out=result.opt_out)


class FetchImages(beam.PTransform):
    """ImageRef -> {'images': FetchedImage, 'errors': error rows}; one read per distinct URI."""

    def __init__(self, run_id: str, max_bytes: int = DEFAULT_MAX_BYTES,
                 http: HttpConfig | None = None):
        super().__init__()
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self._run_id = run_id
        self._max_bytes = max_bytes
        self._http = (dataclasses.replace(http, max_bytes=max_bytes) if http
                      else HttpConfig(max_bytes=max_bytes))

    def expand(self, refs: beam.PCollection) -> dict[str, beam.PCollection]:
        grouped = (refs
                   | "KeyByUri" >> beam.Map(lambda r: (r.uri, r))
                   | "SameUriOnce" >> beam.GroupByKey())
        http, files = grouped | "HttpOrFile" >> beam.Partition(
            lambda kv, _n: 0 if is_http(kv[0]) else 1, 2)
        read = files | "ReadBytes" >> beam.ParDo(
            _ReadBytes(self._max_bytes, self._run_id)).with_outputs(ERRORS, main="images")
        fetched = (
            http
            | "BatchUrls" >> beam.BatchElements(
                min_batch_size=1, max_batch_size=max(1, self._http.concurrency * 2))
            | "FetchHttp" >> beam.ParDo(FetchHttpBatch(self._http))
            | "HttpResults" >> beam.ParDo(_HttpToImages(self._run_id)).with_outputs(
                ERRORS, main="images")
        )
        images = (read.images, fetched.images) | "AllImages" >> beam.Flatten()
        errors = (read[ERRORS], fetched[ERRORS]) | "ReadErrors" >> beam.Flatten()
        return {"images": images, "errors": errors}
