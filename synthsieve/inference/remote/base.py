"""What every vendor-API backend shares: rate limits, retries, key hygiene, the ModelHandler.

Each backend (hive.py, ...) only says how to build one request and how to read one response.
Requests run on the worker process's event loop (the one http fetching uses), so the rate
limiter and the in-flight cap hold for all threads of a worker; divide the account's rate by
the number of worker processes with --api-workers.
"""

from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import contextvars
import heapq
import itertools
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from apache_beam.ml.inference.base import PredictionResult, RemoteModelHandler

from synthsieve.io.http import WorkerLoop
from synthsieve.io.retry import Outcome, Retry, RetryPolicy, retry_after_s, with_retries

__all__ = [
    "CONFIG_FAILURES_TO_STOP", "CONFIG_STATUSES", "ApiAuthError", "ApiBackend", "ApiClient",
    "ApiConfig", "ApiConfigError", "ApiKeyMissing", "ApiResult", "RateLimiter",
    "RemoteApiModelHandler", "endpoint_url", "media_form", "redact",
]

log = logging.getLogger("synthsieve.api")


class ApiAuthError(Exception):
    """401/403 from the API: the key is wrong or lacks access. Stops the job."""


class ApiConfigError(ApiAuthError):
    """The first answers all say the request itself is wrong (404/405: the URL is not the
    API's endpoint). Stops the job like a refused key."""


# Answers that mean "no such endpoint", never "this image is bad".
CONFIG_STATUSES = (404, 405)
# How many such answers, before any success, make a configuration error.
CONFIG_FAILURES_TO_STOP = 3


def endpoint_url(given: str | None, default_url: str) -> str:
    """--api-url as the endpoint to call: a bare origin (http://host:port or with a
    trailing /) gets the vendor's endpoint path; a URL with a path is used as it is."""
    if not given:
        return default_url
    parts = urlsplit(given)
    if parts.path in ("", "/") and not parts.query:
        return given.rstrip("/") + urlsplit(default_url).path
    return given


class ApiKeyMissing(ValueError):
    """The environment variable holding the API key is not set: a usage error."""


@dataclass(frozen=True)
class ApiConfig:
    backend: str
    url: str
    key_env: tuple[str, ...]  # environment variables holding the credentials
    rate_per_s: float = 10.0  # for the whole job; divided by workers
    workers: int = 1  # worker processes sharing the account's rate
    max_in_flight: int = 16
    retries: int = 5
    timeout_s: float = 60.0
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    # The vendors' scores are probabilities with no published operating point; these
    # defaults leave the middle as inconclusive (--api-ai-threshold, --api-not-ai-threshold).
    threshold_ai: float = 0.8
    threshold_not_ai: float = 0.2
    assets_url: str | None = None  # NIM's asset upload endpoint, for large images
    send_urls: str = "public"  # Sightengine: "public" http(s) inputs by URL, "always", "never"
    max_requests: int | None = None  # stop sending after this many images (per worker)

    @property
    def rate_per_worker(self) -> float:
        return self.rate_per_s / max(1, self.workers)

    def credentials(self) -> tuple[str, ...]:
        missing = [k for k in self.key_env if not os.environ.get(k)]
        if missing:
            raise ApiKeyMissing(f"{', '.join(missing)} not set: the {self.backend} backend "
                                "reads its credentials from the environment")
        return tuple(os.environ[k] for k in self.key_env)


def redact(text: str, secrets: Iterable[str]) -> str:
    """Never let a credential reach a log line, an exception or a row."""
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return text


@dataclass(kw_only=True)
class ApiResult(Outcome):
    columns: dict[str, Any] | None = None  # the scores table's columns, from the answer


class RateLimiter:
    """At most `rate` requests in any one-second window, for coroutines on one event loop.

    A token bucket with a burst of one loses every millisecond a wake-up is late (the loop
    thread waits for the GIL behind decode threads, up to the interpreter's switch
    interval), and at tens of requests per second that is a real share of the contract
    (bench/api.py measures it). Counting the sends of the last window
    instead, as vendors count them, lets a late send be made up by the next one; a minimum
    gap of half the mean interval keeps the catch-up from becoming a burst.
    """

    def __init__(self, rate: float):
        if rate <= 0:
            raise ValueError("rate must be positive")
        # n sends per window of n / rate seconds: 49/s -> 49 per second, 0.5/s -> 1 per 2 s.
        self._n = max(1, math.ceil(rate))
        self._window = self._n / rate
        self._gap = 0.5 / rate
        self._sent: deque[float] = deque()
        # Waiters by (priority, arrival); one dispatcher hands out the slots in that order.
        self._waiters: list[tuple[int, int, asyncio.Future[float]]] = []
        self._arrivals = itertools.count()
        self._dispatcher: asyncio.Task[None] | None = None

    async def acquire(self, retry: bool = False) -> float:
        """Waits for a send slot; returns the time.monotonic() the send was counted at.

        A retry goes ahead of first attempts that are already waiting: it has waited its
        backoff once, and the run's last rows are usually retries, so putting them at the
        back of the queue would only lengthen its tail.
        """
        loop = asyncio.get_running_loop()
        slot: asyncio.Future[float] = loop.create_future()
        heapq.heappush(self._waiters, (0 if retry else 1, next(self._arrivals), slot))
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = loop.create_task(self._dispatch())
        return await slot

    async def _dispatch(self) -> None:
        while self._waiters:
            now = time.monotonic()
            while self._sent and now - self._sent[0] >= self._window:
                self._sent.popleft()
            wait = 0.0
            if len(self._sent) >= self._n:
                wait = self._sent[0] + self._window - now
            if self._sent:
                wait = max(wait, self._sent[-1] + self._gap - now)
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            _, _, slot = heapq.heappop(self._waiters)
            if slot.done():  # its caller was cancelled: the slot goes to the next one
                continue
            self._sent.append(now)
            slot.set_result(now)


# Whether the call running in this task is a retry (read by metered()).
_RETRYING: contextvars.ContextVar[bool] = contextvars.ContextVar("retrying", default=False)


class ApiClient:
    """One per (backend config, worker process): session, rate limiter, in-flight cap."""

    _lock = threading.Lock()
    _clients: dict[ApiConfig, ApiClient] = {}

    def __init__(self, cfg: ApiConfig, secrets: tuple[str, ...], session: aiohttp.ClientSession,
                 limiter: RateLimiter, in_flight: asyncio.Semaphore,
                 loop: asyncio.AbstractEventLoop):
        self.cfg = cfg
        self.secrets = secrets
        self.session = session
        self.limiter = limiter
        self.in_flight = in_flight
        self.loop = loop
        self.requests_sent = 0
        self.images_sent = 0
        self.answers_ok = 0
        self.config_failures: dict[int, int] = {}

    @classmethod
    def for_config(cls, cfg: ApiConfig) -> ApiClient:
        """This process's client for `cfg`, made on the worker loop the first time.

        The client is made without holding the lock: _close runs on the loop and takes the
        lock, so a thread holding it while waiting on the loop could wait forever."""
        secrets = cfg.credentials()
        with cls._lock:
            client = cls._clients.get(cfg)
        if client is not None:
            return client
        loop = WorkerLoop.get()

        async def make() -> ApiClient:
            session = aiohttp.ClientSession(
                trust_env=False, timeout=aiohttp.ClientTimeout(total=cfg.timeout_s),
                connector=aiohttp.TCPConnector(limit=cfg.max_in_flight))
            return cls(cfg, secrets, session, RateLimiter(cfg.rate_per_worker),
                       asyncio.Semaphore(cfg.max_in_flight), loop)

        made = asyncio.run_coroutine_threadsafe(make(), loop).result()
        with cls._lock:
            client = cls._clients.setdefault(cfg, made)
        if client is made:
            WorkerLoop.at_shutdown(made._close)
        else:  # another thread made one first: keep theirs
            asyncio.run_coroutine_threadsafe(made.session.close(), loop).result()
        return client

    async def _close(self) -> None:
        """Called on the loop by its shutdown: the next run makes a new client there."""
        with ApiClient._lock:
            if ApiClient._clients.get(self.cfg) is self:
                del ApiClient._clients[self.cfg]
        await self.session.close()

    async def call(self, backend: ApiBackend, data: bytes, uri: str) -> ApiResult:
        """One image: send, retry what is transient, map the answer. Raises ApiAuthError."""
        result = ApiResult()
        cap = self.cfg.max_requests
        if cap is not None:
            per_worker = max(0, cap // max(1, self.cfg.workers))
            if self.images_sent >= per_worker:
                return result.fail("max_requests_reached",
                                   f"not sent: --max-requests {cap} was reached "
                                   f"({per_worker} per worker process)")
        self.images_sent += 1

        async def attempt() -> ApiResult:
            _RETRYING.set(result.attempts > 1)  # this call's own task context
            async with self.in_flight:
                status, body = await backend.send(self, data, uri)
            result.status = status
            return self._answer(backend, result, status, body)

        result = await with_retries(attempt, result, RetryPolicy(
            self.cfg.retries, self.cfg.backoff_base_s, self.cfg.backoff_max_s))
        if result.message:
            result.message = redact(result.message, self.secrets)
        return result

    def _answer(self, backend: ApiBackend, result: ApiResult, status: int,
                body: str) -> ApiResult:
        """The result of one answer; raises Retry for what is worth another try, and
        ApiAuthError / ApiConfigError for what must stop the job."""
        if status in (401, 403):
            raise ApiAuthError(
                f"{self.cfg.backend} answered HTTP {status} "
                f"({redact(body[:200], self.secrets)}): check the API key and its "
                "access; stopping instead of turning every image into an error row")
        if status == 429 or status >= 500:
            raise Retry(f"http_{status}", f"HTTP {status}", backend.retry_after)
        if status in CONFIG_STATUSES and not self.answers_ok:
            seen = self.config_failures[status] = self.config_failures.get(status, 0) + 1
            if seen >= CONFIG_FAILURES_TO_STOP:
                raise ApiConfigError(
                    f"{self.cfg.backend} answered HTTP {status} to the first {seen} "
                    f"requests to {self.cfg.url}: it is not the API's endpoint (pass "
                    "the vendor's base URL or its full endpoint to --api-url); "
                    "stopping instead of turning every image into an error row")
        if status >= 400:
            return result.fail(f"http_{status}", f"{self.cfg.backend} refused the image: "
                                                 f"HTTP {status}: {body[:300]}")
        self.answers_ok += 1
        try:
            result.columns = backend.parse(body)
        except (ValueError, KeyError, TypeError, IndexError) as e:
            raise Retry("bad_response", f"unreadable response: {e}") from e
        return result

    async def metered(self) -> None:
        """Waits for the rate limit; a backend awaits it right before its billed request, so
        that unmetered steps in front of it (NIM's asset upload) cannot bunch the requests
        the vendor counts. A retry is served before first attempts."""
        await self.limiter.acquire(retry=_RETRYING.get())
        self.requests_sent += 1


def media_form(data: bytes, uri: str) -> aiohttp.FormData:
    """The multipart body Hive and Sightengine both take: the original bytes as `media`."""
    form = aiohttp.FormData()
    form.add_field("media", data, filename=uri.rsplit("/", 1)[-1] or "image",
                   content_type="application/octet-stream")
    return form


class ApiBackend(abc.ABC):
    """How one vendor's API is called and read. Subclasses set `name` and `model`."""

    name = ""
    model = ""
    key_env: tuple[str, ...] = ()
    default_url = ""
    retry_after: float | None = None  # set by send() from the last response's headers

    def __init__(self, cfg: ApiConfig):
        self.cfg = cfg

    @abc.abstractmethod
    async def send(self, client: ApiClient, data: bytes, uri: str) -> tuple[int, str]:
        """Sends one image; returns the final HTTP status and body. Awaits
        `client.metered()` right before the request the vendor rate-limits."""

    @abc.abstractmethod
    def parse(self, body: str) -> dict[str, Any]:
        """A 2xx body -> the scores table's columns (raise ValueError if unreadable)."""

    @staticmethod
    def _retry_after(resp: aiohttp.ClientResponse) -> float | None:
        return retry_after_s(resp.headers.get("Retry-After"))


class RemoteApiModelHandler(RemoteModelHandler[tuple[bytes, str], PredictionResult, ApiClient]):
    """Beam's RemoteModelHandler over a vendor API: a batch's images are sent concurrently,
    each with its own retries; RunInference only sees a failure when the job must stop.

    synthsieve's own jobs do not batch: transforms/score.ScoreRemote submits each image as
    it comes (`submit`), so that no request waits for the slowest answer of its batch.
    """

    def __init__(self, backend_cls: type[ApiBackend], cfg: ApiConfig, batch_size: int = 32):
        """
        Args:
          backend_cls: how the vendor's API is called and read (HiveBackend, ...).
          cfg: endpoint, credentials' environment variables, rate, retries and thresholds.
          batch_size: images RunInference hands over at once; they are sent concurrently,
            within the rate limit and the in-flight cap.
        """
        # Retries are per image inside request(); a whole-batch retry would re-send (and
        # re-pay for) the images that had already succeeded.
        super().__init__(namespace=f"synthsieve_{cfg.backend}", num_retries=0,
                         retry_filter=lambda e: False)
        self._batching_kwargs = {"min_batch_size": 1, "max_batch_size": batch_size}
        self._backend_cls = backend_cls
        self.api = cfg  # the vendor API's settings (thresholds included)
        self.backend_name = cfg.backend
        self.model_name = backend_cls.model
        self.max_pending = batch_size

    def create_client(self) -> ApiClient:
        return ApiClient.for_config(self.api)

    def submit(self, client: ApiClient, data: bytes,
               uri: str) -> concurrent.futures.Future[ApiResult]:
        """Starts one image's call (with its retries) on the client's event loop."""
        return asyncio.run_coroutine_threadsafe(
            client.call(self._backend_cls(self.api), data, uri), client.loop)

    def request(self, batch: Sequence[tuple[bytes, str]], model: ApiClient,
                inference_args: dict[str, Any] | None = None) -> Iterable[PredictionResult]:
        """RunInference's batch: every image submitted at once; raises ApiAuthError."""
        calls = [self.submit(model, data, uri) for data, uri in batch]
        try:
            results = [call.result() for call in calls]
        except ApiAuthError as e:
            for call in calls:
                call.cancel()
            log.error("%s", e)
            raise
        return [PredictionResult(None, r) for r in results]

    def get_num_bytes(self, batch: Sequence[tuple[bytes, str]]) -> int:
        return sum(len(d) for d, _ in batch)
