"""The decode stage: FetchedImage -> (ImageInfo, model input) or an error row, one decode
per image, bounded in time, with the file's provenance read in the same pass.

The decoding itself is synthsieve/images.py; this module runs it inside Beam.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
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
from synthsieve.transforms.windowing import in_window

__all__ = ["DEFAULT_DECODE_TIMEOUT_S", "DecodeImages"]

# A minute is far past any real image (the slowest of a fuzzed corpus takes a fraction of a
# second) and leaves room for a slow, shared machine.
DEFAULT_DECODE_TIMEOUT_S = 60.0
log = logging.getLogger("synthsieve.decode")


class _Job:
    """One image's decode, run by a _DecodeThreads thread, bounded in time by its caller."""

    def __init__(self, item: FetchedImage, timestamp: Any = None, window: Any = None):
        self.item, self.timestamp, self.window = item, timestamp, window
        self.started_at: float | None = None
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None
        self.abandoned = False

    def run(self, work: Callable[[FetchedImage], Any]) -> None:
        self.started_at = time.monotonic()
        try:
            self.value = work(self.item)
        except BaseException as e:  # noqa: BLE001 - re-raised in the DoFn's thread
            self.error = e
        finally:
            self.done.set()

    def overran(self, timeout_s: float, now: float) -> bool:
        started = self.started_at
        return not self.done.is_set() and started is not None and now - started > timeout_s

    def wait(self, timeout_s: float) -> None:
        """Until done, overrun, or a short while if it has not started yet."""
        started = self.started_at
        limit = 0.05 if started is None else max(0.0, started + timeout_s - time.monotonic())
        self.done.wait(limit)


class _DecodeThreads:
    """`workers` threads that run one bundle's decode jobs, in the order given.

    Python cannot stop a thread, so a job that overruns its time is abandoned: its thread is
    left to finish it on its own (bounded by --max-pixels and --max-bytes) and then ends,
    and a new thread takes its place, so a stuck file costs a thread, never a worker. The
    threads live as long as the bundle, not one per image: the thread-local state a C2PA
    read leaves is not freed when its thread ends, so a thread per image would make memory
    grow with the corpus (bench/memory.py --source manifest).
    """

    def __init__(self, work: Callable[[FetchedImage], Any], workers: int):
        self._work = work
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads = 0
        for _ in range(workers):
            self._start()

    def _start(self) -> None:
        self._threads += 1
        threading.Thread(target=self._loop, name="synthsieve-decode", daemon=True).start()

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            job.run(self._work)
            if job.abandoned:  # replaced while it ran: leave the work to the others
                return

    def submit(self, job: _Job) -> None:
        self._jobs.put(job)

    def abandon(self, job: _Job) -> None:
        """Called from the DoFn's thread for a job that overran (it has started)."""
        job.abandoned = True
        self._threads -= 1
        self._start()

    def close(self) -> None:
        """Ends the threads once the jobs queued before are done (a stuck one on its own)."""
        for _ in range(self._threads):
            self._jobs.put(None)
        self._threads = 0


class _Decode(beam.DoFn):
    """FetchedImage -> (ImageInfo, payload), or a `decode` error row.

    With `ahead` > 1, up to that many images are decoded ahead, `workers` at a time, while
    the stage goes on (the model scores the previous batch meanwhile); each row keeps its
    own element's window, since it may leave while a later element is processed.
    """

    def __init__(self, spec: ModelSpec | None, max_pixels: int, run_id: str,
                 provenance: ProvenanceOptions | None,
                 timeout_s: float = DEFAULT_DECODE_TIMEOUT_S, ahead: int = 1,
                 workers: int = 1):
        self._spec = spec
        self._max_pixels = max_pixels
        self._run_id = run_id
        self._provenance_options = provenance
        self._timeout_s = timeout_s
        self._ahead = max(1, ahead)
        self._workers = max(1, workers)
        self._timeouts = counter(DECODE_TIMEOUTS)

    def setup(self) -> None:
        # Another library in the worker may have restored Pillow's global limit.
        Image.MAX_IMAGE_PIXELS = None
        # Provenance readers are used by one decode at a time; an abandoned decode keeps
        # its reader, and the next one gets a new reader.
        self._readers: queue.SimpleQueue[ProvenanceReader] = queue.SimpleQueue()
        self._pending: deque[_Job] = deque()
        self._threads: _DecodeThreads | None = None

    def start_bundle(self) -> None:
        self._pending = deque()

    def process(self, item: FetchedImage, timestamp: Any = beam.DoFn.TimestampParam,
                window: Any = beam.DoFn.WindowParam) -> Iterable[Any]:
        if self._threads is None:  # the bundle's first image
            self._threads = _DecodeThreads(self._work, self._workers)
        job = _Job(item, timestamp, window)
        self._pending.append(job)
        self._threads.submit(job)
        yield from self._finished(wait=len(self._pending) >= self._ahead)

    def finish_bundle(self) -> Iterable[Any]:
        while self._pending:
            yield from self._finished(wait=True)
        self.teardown()

    def teardown(self) -> None:
        # also after a bundle that failed, whose finish_bundle never ran
        if self._threads is not None:
            self._threads.close()
            self._threads = None

    def _finished(self, wait: bool) -> Iterable[Any]:
        """The outputs of the jobs that are done or overran; with `wait`, at least one."""
        while True:
            now = time.monotonic()
            ready = [j for j in self._pending
                     if j.done.is_set() or j.overran(self._timeout_s, now)]
            if ready or not wait:
                break
            self._pending[0].wait(self._timeout_s)
        for job in ready:
            self._pending.remove(job)
            yield self._output(job, job.done.is_set())

    def _output(self, job: _Job, done: bool) -> Any:
        if done and job.error is not None:
            raise job.error
        value = job.value if done else self._timed_out(job)
        if self._ahead == 1:  # each element's output leaves while it is processed
            return value
        return in_window(value, job.timestamp, job.window)

    def _timed_out(self, job: _Job) -> beam.pvalue.TaggedOutput:
        self._threads.abandon(job)
        self._timeouts.inc()
        message = f"decoding took longer than {self._timeout_s:g} s; abandoned"
        log.warning("%s: %s", job.item.ref.uri, message)
        return beam.pvalue.TaggedOutput(ERRORS, error_row(
            image_id=job.item.ref.image_id, uri=job.item.ref.uri, stage=STAGE_DECODE,
            error_type="timeout", message=message, run_id=self._run_id,
            http_status=job.item.http_status))

    def _work(self, item: FetchedImage) -> Any:
        reader = None
        if self._provenance_options is not None:
            try:
                reader = self._readers.get_nowait()
            except queue.Empty:
                reader = ProvenanceReader(self._provenance_options)
        out = self._decode(item, reader)
        if reader is not None:
            self._readers.put(reader)  # only a decode that finished gives its reader back
        return out

    def _decode(self, item: FetchedImage, reader: ProvenanceReader | None) -> Any:
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
                 timeout_s: float = DEFAULT_DECODE_TIMEOUT_S, ahead: int = 1,
                 workers: int = 1):
        """
        Args:
          spec: the model whose input to prepare, or None to decode only to validate.
          run_id: the run the error rows belong to.
          max_pixels: images with more pixels (by their header) are error rows.
          provenance: what provenance to read in the same pass; None reads none.
          timeout_s: an image whose decode and provenance read take longer is a `timeout` row.
          ahead: how many images may be decoding or decoded ahead of the stage (1: each
            element is decoded while it is processed).
          workers: how many of them decode at once.
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
        self._ahead = ahead
        self._workers = workers

    def expand(self, images: beam.PCollection) -> dict[str, beam.PCollection]:
        out = images | "Decode" >> beam.ParDo(
            _Decode(self._spec, self._max_pixels, self._run_id, self._provenance,
                    self._timeout_s, self._ahead, self._workers)
        ).with_outputs(ERRORS, main="images")
        return {"images": out.images, "errors": out[ERRORS]}
