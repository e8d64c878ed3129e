"""Gets each image's bytes once: Beam FileSystems for files, gs:// and s3://; aiohttp for
http(s). The same URI listed by several inputs is read once and shared by all of them.

How "once" is kept depends on where the job runs (`FetchImages(same_uri=...)`):
- `ONCE_PER_RUN`: a GroupByKey by URI, exact over the whole run. Runners with a shuffle
  service spill it to disk; the DirectRunner holds it in memory, so memory grows with the
  number of references.
- `ONCE_NEARBY`: one worker in this process. A URI being read, or among the last
  `RECENT_URIS` read, is read once for every reference that names it; a repeat further
  apart is read again. That costs a read, never a row (identical bytes are still scored
  once), and memory stays flat however long the manifest.
- `EACH_TIME`: a stream reads each reference as it comes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import apache_beam as beam

from synthsieve.counters import BYTES_READ, counter
from synthsieve.elements import ERRORS, FetchedImage, ImageRef
from synthsieve.exception_chain import causes
from synthsieve.io.filesystems import open_for_read, use_gcs_emulator_credentials
from synthsieve.io.http import HttpClient, HttpConfig, HttpResult
from synthsieve.io.retry import Outcome
from synthsieve.schema import STAGE_FETCH, STAGE_READ, error_row

__all__ = ["DEFAULT_MAX_BYTES", "EACH_TIME", "ONCE_NEARBY", "ONCE_PER_RUN", "FetchImages",
           "is_http", "read_file"]

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
ONCE_PER_RUN, ONCE_NEARBY, EACH_TIME = "once_per_run", "once_nearby", "each_time"
RECENT_URIS = 4096  # finished reads kept per process for later references to the same URI
RECENT_BYTES = 64 * 1024 * 1024  # ... and the most image bytes they may hold


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


Result = _ReadResult | HttpResult


class _RecentReads:
    """The reads of one run in this process: URIs being read (a Future each) and the last
    ones read, so that a reference to either shares the read instead of starting another."""

    lock = threading.Lock()
    by_run: dict[str, _RecentReads] = {}

    def __init__(self) -> None:
        self.in_flight: dict[str, Future[Result]] = {}
        self.done: OrderedDict[str, Result] = OrderedDict()
        self.done_bytes = 0

    @classmethod
    def of(cls, run_id: str) -> _RecentReads:
        """Call with `lock` held."""
        if run_id not in cls.by_run:
            for old in list(cls.by_run)[:-1]:  # this run and at most one other still running
                del cls.by_run[old]
            cls.by_run[run_id] = _RecentReads()
        return cls.by_run[run_id]

    def claim(self, uri: str) -> Result | Future[Result] | None:
        """A finished read of `uri`, a read in flight, or None: then the caller reads it
        and must call finish(). Call with `lock` held."""
        if uri in self.done:
            self.done.move_to_end(uri)
            return self.done[uri]
        if uri in self.in_flight:
            return self.in_flight[uri]
        self.in_flight[uri] = Future()
        return None

    def finish(self, uri: str, result: Result | BaseException) -> None:
        """Call with `lock` held."""
        future = self.in_flight.pop(uri)
        if isinstance(result, BaseException):
            future.set_exception(result)
            return
        future.set_result(result)
        self.done[uri] = result
        self.done_bytes += len(result.data or b"")
        while len(self.done) > RECENT_URIS or self.done_bytes > RECENT_BYTES:
            _, old = self.done.popitem(last=False)
            self.done_bytes -= len(old.data or b"")


class _FetchBatch(beam.DoFn):
    """A batch of (uri, refs) -> FetchedImage per ref, or an error row per ref.

    http(s) URLs go to the worker's aiohttp loop; other URIs are read through FileSystems on
    a thread pool driven by the same loop, so object-store latency overlaps too. One DoFn for
    both keeps the images in one fused stage with decode and scoring: a Flatten of two
    branches here would make the runner hold every image's bytes between stages.
    """

    def __init__(self, run_id: str, max_bytes: int, http: HttpConfig,
                 share_recent: bool = False):
        self._run_id = run_id
        self._max_bytes = max_bytes
        self._http = http
        self._share_recent = share_recent
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

    def _read(self, uris: list[str]) -> list[_ReadResult | HttpResult]:
        if not uris:
            return []
        return asyncio.run_coroutine_threadsafe(self._all(uris), self._fetch.loop).result()

    def process(self, batch: list[tuple[str, Iterable[ImageRef]]]) -> Iterable[Any]:
        if self._share_recent:
            yield from self._process_sharing(batch)
            return
        results = self._read([uri for uri, _ in batch])
        for (_uri, refs), result in zip(batch, results, strict=True):
            yield from self._rows(list(refs), result)

    def _process_sharing(self, batch: list[tuple[str, Iterable[ImageRef]]]) -> Iterable[Any]:
        with _RecentReads.lock:
            state = _RecentReads.of(self._run_id)
            claims = [state.claim(uri) for uri, _ in batch]
        mine = [uri for (uri, _), claim in zip(batch, claims, strict=True) if claim is None]
        try:
            results = self._read(mine)
        except BaseException as e:
            with _RecentReads.lock:  # nobody may wait forever on a read that never ends
                for uri in mine:
                    state.finish(uri, e)
            raise
        with _RecentReads.lock:
            for uri, result in zip(mine, results, strict=True):
                state.finish(uri, result)
        read = dict(zip(mine, results, strict=True))
        for (uri, refs), claim in zip(batch, claims, strict=True):
            if claim is None:
                result = read[uri]
            elif isinstance(claim, Future):
                # read by another thread of this process (or earlier in this batch), which
                # finishes it without waiting on anything downstream
                result = claim.result()
            else:
                result = claim
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
                 http: HttpConfig | None = None, same_uri: str = ONCE_PER_RUN):
        """
        Args:
          run_id: the run the error rows belong to.
          max_bytes: a larger file or response body is an error row.
          http: limits, retries and the SSRF guard for http(s) URLs.
          same_uri: how references to the same URI share a read (see the module's
            docstring): ONCE_PER_RUN, ONCE_NEARBY or EACH_TIME.
        """
        super().__init__()
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        if same_uri not in (ONCE_PER_RUN, ONCE_NEARBY, EACH_TIME):
            raise ValueError(f"unknown same_uri {same_uri!r}")
        self._run_id = run_id
        self._same_uri = same_uri
        self._max_bytes = max_bytes
        self._http = (dataclasses.replace(http, max_bytes=max_bytes) if http
                      else HttpConfig(max_bytes=max_bytes))

    def expand(self, refs: beam.PCollection) -> dict[str, beam.PCollection]:
        if self._same_uri == ONCE_PER_RUN:
            grouped = (refs
                       | "KeyByUri" >> beam.Map(lambda r: (r.uri, r))
                       | "SameUriOnce" >> beam.GroupByKey())
        else:
            grouped = refs | "OneRefPerUri" >> beam.Map(lambda r: (r.uri, [r]))
        out = (grouped
               | "Batch" >> beam.BatchElements(
                   min_batch_size=1, max_batch_size=max(1, self._http.concurrency * 2))
               | "ReadOrFetch" >> beam.ParDo(_FetchBatch(
                   self._run_id, self._max_bytes, self._http,
                   share_recent=self._same_uri == ONCE_NEARBY)).with_outputs(
                       ERRORS, main="images"))
        return {"images": out.images, "errors": out[ERRORS]}
