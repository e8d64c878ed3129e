"""Gets each image's bytes once: Beam FileSystems for files, gs:// and s3://; aiohttp for
http(s). The same URI listed by several inputs is read once and shared by all of them."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import apache_beam as beam

from synthsieve.counters import BYTES_READ, counter
from synthsieve.elements import ERRORS, FetchedImage, ImageRef
from synthsieve.exception_chain import causes
from synthsieve.io.filesystems import open_for_read, use_gcs_emulator_credentials
from synthsieve.io.http import HttpClient, HttpConfig, HttpResult
from synthsieve.io.retry import Outcome
from synthsieve.schema import STAGE_FETCH, STAGE_READ, error_row

__all__ = ["DEFAULT_MAX_BYTES", "FetchImages", "is_http", "read_file"]

DEFAULT_MAX_BYTES = 64 * 1024 * 1024


def is_http(uri: str) -> bool:
    return uri[:8].lower().startswith(("http://", "https://"))


def _http_status(exc: BaseException) -> int | None:
    """The HTTP status an object store's client put on its exception: google-api-core's
    `code`, Beam's S3ClientError `code`, botocore's response metadata."""
    for attr in ("code", "status", "status_code"):
        value = getattr(exc, attr, None)
        if isinstance(value, int) and 100 <= value <= 599:
            return int(value)
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        value = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(value, int):
            return value
    return None


def _classify(exc: BaseException) -> str:
    """An error type from the exception's class or HTTP status, never from its text: a
    path may contain "404" or "not found" whatever went wrong reading it."""
    for e in causes(exc):
        status = _http_status(e)
        if isinstance(e, FileNotFoundError) or status in (404, 410):
            return "not_found"
        if isinstance(e, PermissionError) or status in (401, 403):
            return "permission_denied"
        if isinstance(e, IsADirectoryError):
            return "is_a_directory"
    return "io_error"


@dataclasses.dataclass(kw_only=True)
class _ReadResult(Outcome):
    """One object read through FileSystems: one attempt, no HTTP status."""

    attempts: int = 1
    data: bytes | None = None


def read_file(uri: str, max_bytes: int) -> _ReadResult:
    """One object through Beam's FileSystems, capped at max_bytes (+1 to detect overflow)."""
    try:
        # As stored: FileSystems would otherwise gunzip a file named *.gz.
        with open_for_read(uri) as f:
            data = f.read(max_bytes + 1)
    except Exception as e:  # every read failure of any filesystem becomes a row
        return _ReadResult(error_type=_classify(e), message=f"cannot read {uri}: {e}")
    if not data:
        return _ReadResult(error_type="empty_file", message="the file is empty (0 bytes)")
    if len(data) > max_bytes:
        return _ReadResult(error_type="too_large", message="the file is larger than the "
                           f"--max-bytes limit of {max_bytes} bytes")
    return _ReadResult(data=data)


class _FetchBatch(beam.DoFn):
    """A batch of (uri, refs) -> FetchedImage per ref, or an error row per ref.

    http(s) URLs go to the worker's aiohttp loop; other URIs are read through FileSystems on
    a thread pool driven by the same loop, so object-store latency overlaps too. One DoFn for
    both keeps the images in one fused stage with decode and scoring: a Flatten of two
    branches here would make the runner hold every image's bytes between stages.
    """

    def __init__(self, run_id: str, max_bytes: int, http: HttpConfig):
        self._run_id = run_id
        self._max_bytes = max_bytes
        self._http = http
        self._bytes_read = counter(BYTES_READ)

    def setup(self) -> None:
        use_gcs_emulator_credentials()
        self._fetch = HttpClient(self._http)
        self._fetch.setup()
        self._pool = ThreadPoolExecutor(max_workers=min(32, self._http.concurrency),
                                        thread_name_prefix="synthsieve-read")

    def teardown(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False)

    async def _one(self, uri: str) -> _ReadResult | HttpResult:
        if is_http(uri):
            return await self._fetch.fetcher.fetch(uri)
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, read_file, uri, self._max_bytes)

    async def _all(self, uris: list[str]) -> list[_ReadResult | HttpResult]:
        return await asyncio.gather(*(self._one(uri) for uri in uris))

    def process(self, batch: list[tuple[str, Iterable[ImageRef]]]) -> Iterable[Any]:
        results = asyncio.run_coroutine_threadsafe(
            self._all([uri for uri, _ in batch]), self._fetch.loop).result()
        for (_uri, refs), result in zip(batch, results, strict=True):
            yield from self._rows(list(refs), result)

    def _rows(self, refs: list[ImageRef], result: _ReadResult | HttpResult) -> Iterable[Any]:
        http = isinstance(result, HttpResult)
        if result.error_type:
            for ref in refs:
                yield beam.pvalue.TaggedOutput(ERRORS, error_row(
                    image_id=ref.image_id, uri=ref.uri,
                    stage=STAGE_FETCH if http else STAGE_READ, error_type=result.error_type,
                    message=result.message or result.error_type, attempts=result.attempts,
                    http_status=result.status, run_id=self._run_id))
            return
        self._bytes_read.inc(len(result.data))
        sha = hashlib.sha256(result.data).hexdigest()
        extra = {"http_status": result.status, "robots_opt_out": result.opt_out} if http else {}
        for ref in refs:
            yield FetchedImage(ref=ref, data=result.data, sha256=sha, **extra)


class FetchImages(beam.PTransform):
    """ImageRef -> {'images': FetchedImage, 'errors': error rows}; one read per distinct URI."""

    def __init__(self, run_id: str, max_bytes: int = DEFAULT_MAX_BYTES,
                 http: HttpConfig | None = None, same_uri_once: bool = True):
        """
        Args:
          run_id: the run the error rows belong to.
          max_bytes: a larger file or response body is an error row.
          http: limits, retries and the SSRF guard for http(s) URLs.
          same_uri_once: read each distinct URI once for all references naming it (a batch
            job; a stream reads each reference as it comes).
        """
        super().__init__()
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self._run_id = run_id
        # Grouping by URI waits for the window to close; a stream reads each ref at once.
        self._same_uri_once = same_uri_once
        self._max_bytes = max_bytes
        self._http = (dataclasses.replace(http, max_bytes=max_bytes) if http
                      else HttpConfig(max_bytes=max_bytes))

    def expand(self, refs: beam.PCollection) -> dict[str, beam.PCollection]:
        if self._same_uri_once:
            grouped = (refs
                       | "KeyByUri" >> beam.Map(lambda r: (r.uri, r))
                       | "SameUriOnce" >> beam.GroupByKey())
        else:
            grouped = refs | "OneRefPerUri" >> beam.Map(lambda r: (r.uri, [r]))
        out = (grouped
               | "Batch" >> beam.BatchElements(
                   min_batch_size=1, max_batch_size=max(1, self._http.concurrency * 2))
               | "ReadOrFetch" >> beam.ParDo(_FetchBatch(
                   self._run_id, self._max_bytes, self._http)).with_outputs(
                       ERRORS, main="images"))
        return {"images": out.images, "errors": out[ERRORS]}
