"""Fetches http(s) image URLs with aiohttp: bounded, retried, capped and SSRF-guarded.

Each worker process runs one asyncio event loop in a background thread with one
ClientSession; every DoFn thread of that process submits its batch of URLs to it, so the
connection limits (total and per host) hold for the whole process.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
from yarl import URL

from synthsieve import __version__
from synthsieve.io.netguard import (
    ForbiddenAddressError,
    GuardedResolver,
    check_literal,
    find_forbidden,
)
from synthsieve.io.retry import Outcome, Retry, RetryPolicy, retry_after_s, with_retries

__all__ = [
    "ACCEPTED_TYPES", "REDIRECTS", "USER_AGENT", "Fetcher", "HttpClient", "HttpConfig",
    "HttpResult", "WorkerLoop", "close_http", "robots_opt_out",
]

log = logging.getLogger(__name__)

USER_AGENT = (f"synthsieve/{__version__} (AI-generated image audit; "
              "honours X-Robots-Tag noai/noimageai)")
REDIRECTS = (301, 302, 303, 307, 308)
# Servers label images loosely; these are the types that can hold an image.
ACCEPTED_TYPES = ("image/", "application/octet-stream", "binary/octet-stream")


@dataclass(frozen=True)
class HttpConfig:
    max_bytes: int
    concurrency: int = 64
    per_host: int = 8
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 30.0
    retries: int = 3
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    max_redirects: int = 5
    allow_private_networks: bool = False
    user_agent: str = USER_AGENT
    # How long a host's checked addresses are reused (0: look up on every connection). The
    # cache holds only addresses the guard allowed, so it cannot be rebound either.
    dns_cache_s: int = 60


@dataclass(kw_only=True)
class HttpResult(Outcome):
    url: str
    data: bytes | None = None
    opt_out: bool | None = None  # X-Robots-Tag said noai or noimageai


def robots_opt_out(header_values: list[str]) -> bool:
    """True when any X-Robots-Tag value says noai or noimageai (optionally per user agent)."""
    for value in header_values:
        for part in value.lower().replace(";", ",").split(","):
            token = part.strip().split(":")[-1].strip()
            if token in ("noai", "noimageai"):
                return True
    return False


class WorkerLoop:
    """One event loop thread per worker process, with one session per HttpConfig; the
    vendor API clients (inference/remote) run on the same loop.

    `shutdown` closes the sessions and joins the thread. A batch job calls it when its
    pipeline is done, so that no loop, socket or thread of ours is left for interpreter exit
    to tear down in whatever order it likes.
    """

    _lock = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _sessions: dict[HttpConfig, aiohttp.ClientSession] = {}
    _closers: list[Callable[[], Awaitable[None]]] = []

    @classmethod
    def get(cls) -> asyncio.AbstractEventLoop:
        with cls._lock:
            if cls._loop is None or not cls._loop.is_running():
                loop = asyncio.new_event_loop()
                started = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(started.set)
                    loop.run_forever()

                cls._thread = threading.Thread(target=run, name="synthsieve-http", daemon=True)
                cls._thread.start()
                started.wait()
                cls._loop = loop
                cls._sessions = {}
                cls._closers = []
            return cls._loop

    @classmethod
    def at_shutdown(cls, closer: Callable[[], Awaitable[None]]) -> None:
        """closer() is awaited on the loop by shutdown, before the loop stops."""
        with cls._lock:
            cls._closers.append(closer)

    @classmethod
    def shutdown(cls, timeout_s: float = 10.0) -> None:
        with cls._lock:
            loop, thread = cls._loop, cls._thread
            sessions, closers = list(cls._sessions.values()), list(cls._closers)
            cls._loop, cls._thread, cls._sessions, cls._closers = None, None, {}, []
        if loop is None:
            return
        if loop.is_running():
            async def close() -> None:
                # Calls still running (a job that stopped on a refused key leaves some) end
                # first, then the clients and sessions they used.
                running = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                for task in running:
                    task.cancel()
                await asyncio.gather(*running, return_exceptions=True)
                for closer in closers:
                    await closer()
                for session in sessions:
                    await session.close()

            try:
                asyncio.run_coroutine_threadsafe(close(), loop).result(timeout_s)
            except Exception as e:  # noqa: BLE001 - closing is best effort; stopping is not
                log.warning("closing HTTP sessions: %s: %s", type(e).__name__, e)
            loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout_s)
        if thread is None or not thread.is_alive():
            loop.close()

    @classmethod
    def session(cls, cfg: HttpConfig) -> aiohttp.ClientSession:
        loop = cls.get()
        with cls._lock:
            if cfg not in cls._sessions:
                async def make() -> aiohttp.ClientSession:
                    connector = aiohttp.TCPConnector(
                        limit=cfg.concurrency, limit_per_host=cfg.per_host,
                        resolver=GuardedResolver(cfg.allow_private_networks),
                        use_dns_cache=cfg.dns_cache_s > 0, ttl_dns_cache=cfg.dns_cache_s)
                    return aiohttp.ClientSession(
                        connector=connector, trust_env=False, auto_decompress=True,
                        headers={"User-Agent": cfg.user_agent, "Accept": "image/*,*/*;q=0.5"},
                        timeout=aiohttp.ClientTimeout(total=None,
                                                      sock_connect=cfg.connect_timeout_s,
                                                      sock_read=cfg.read_timeout_s))
                cls._sessions[cfg] = asyncio.run_coroutine_threadsafe(make(), loop).result()
            return cls._sessions[cfg]


def close_http() -> None:
    """Closes this process's HTTP sessions and stops its event loop thread (a later fetch
    starts a new one)."""
    WorkerLoop.shutdown()


class Fetcher:
    """The fetch policy for one URL; used by the DoFn, the bench and the tests."""

    def __init__(self, cfg: HttpConfig, session: aiohttp.ClientSession):
        self._cfg = cfg
        self._session = session

    async def fetch(self, url: str) -> HttpResult:
        """GETs `url`, following redirects and retrying what is transient; never raises."""
        cfg = self._cfg
        result = HttpResult(url=url)
        # A retry resumes at the last redirect's target; following one is not a retry.
        state = {"current": url, "hops": 0}

        async def attempt() -> HttpResult:
            try:
                while True:
                    parsed = URL(state["current"])
                    if parsed.scheme not in ("http", "https") or not parsed.host:
                        return result.fail("invalid_url", f"cannot fetch {state['current']!r}")
                    check_literal(parsed.host, cfg.allow_private_networks)
                    async with self._session.get(parsed, allow_redirects=False) as resp:
                        result.status = resp.status
                        if resp.status not in REDIRECTS:
                            return await self._read(resp, result)
                        location = resp.headers.get("Location")
                        state["hops"] += 1
                        if not location:
                            return result.fail("bad_redirect",
                                               f"HTTP {resp.status} without a Location header")
                        if state["hops"] > cfg.max_redirects:
                            return result.fail("too_many_redirects",
                                               f"more than {cfg.max_redirects} redirects")
                        state["current"] = str(parsed.join(URL(location)))
            except ForbiddenAddressError as e:
                return result.fail("forbidden_address", str(e))
            except aiohttp.InvalidURL as e:
                return result.fail("invalid_url", f"invalid URL: {e}")
            except (TimeoutError, aiohttp.ClientError, OSError) as e:
                forbidden = find_forbidden(e)
                if forbidden is not None:
                    return result.fail("forbidden_address", str(forbidden))
                raise  # transient: with_retries tries again
            except ValueError as e:
                return result.fail("invalid_url", f"invalid URL: {e}")

        return await with_retries(attempt, result, RetryPolicy(
            cfg.retries, cfg.backoff_base_s, cfg.backoff_max_s))

    async def _read(self, resp: aiohttp.ClientResponse, result: HttpResult) -> HttpResult:
        """The body of a final (non-redirect) answer, within the limits."""
        cfg = self._cfg
        if resp.status == 429 or resp.status >= 500:
            raise Retry(f"http_{resp.status}", f"HTTP {resp.status}",
                        retry_after_s(resp.headers.get("Retry-After")))
        if resp.status >= 400:
            return result.fail(f"http_{resp.status}",
                               f"HTTP {resp.status} {resp.reason or ''}".strip())
        ctype = (resp.headers.get("Content-Type") or "").split(";")[0].strip()
        if ctype and not ctype.lower().startswith(ACCEPTED_TYPES):
            return result.fail("not_an_image_content_type",
                               f"Content-Type {ctype!r} is not an image")
        if resp.content_length is not None and resp.content_length > cfg.max_bytes:
            return result.fail("too_large", f"Content-Length {resp.content_length} is over "
                                            f"the --max-bytes limit of {cfg.max_bytes}")
        buf = bytearray()
        async for chunk in resp.content.iter_chunked(1 << 16):
            buf += chunk
            if len(buf) > cfg.max_bytes:
                return result.fail("too_large", f"body is over the --max-bytes limit of "
                                                f"{cfg.max_bytes}; stopped reading")
        if not buf:
            return result.fail("empty_body", "the response body is empty")
        result.data = bytes(buf)
        result.opt_out = robots_opt_out(resp.headers.getall("X-Robots-Tag", []))
        return result


class HttpClient:
    """The worker's event loop and a Fetcher bound to its session, set up once per DoFn."""

    def __init__(self, cfg: HttpConfig):
        self._cfg = cfg

    def setup(self) -> None:
        self.loop = WorkerLoop.get()
        self.fetcher = Fetcher(self._cfg, WorkerLoop.session(self._cfg))
