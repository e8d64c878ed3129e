"""Real servers for tests, started on 127.0.0.1 only: moto_server (S3), gcp-storage-emulator."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 0.2):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on {LOOPBACK}:{port} after {timeout} s")


@contextlib.contextmanager
def running(cmd: list[str], port: int, env: dict | None = None) -> Iterator[None]:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, **(env or {})})
    try:
        wait_for_port(port, proc)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


# Keep every cloud SDK away from anything but loopback: no instance-metadata probes, fake keys.
CLOUD_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "NO_GCE_CHECK": "True",
    "GCE_METADATA_HOST": f"{LOOPBACK}:9",
    "GCE_METADATA_IP": f"{LOOPBACK}:9",
    "GOOGLE_CLOUD_PROJECT": "test-project",
}


@dataclass
class S3Server:
    endpoint: str
    beam_args: list[str] = field(default_factory=list)

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")


@contextlib.contextmanager
def s3_server() -> Iterator[S3Server]:
    port = free_port()
    moto = os.path.join(os.path.dirname(sys.executable), "moto_server")
    with running([moto, "-H", LOOPBACK, "-p", str(port)], port, CLOUD_ENV):
        endpoint = f"http://{LOOPBACK}:{port}"
        yield S3Server(endpoint, ["--s3_endpoint_url", endpoint, "--s3_region_name",
                                  "us-east-1", "--s3_access_key_id", "testing",
                                  "--s3_secret_access_key", "testing"])


@dataclass
class GcsServer:
    host: str

    def client(self):
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(project="test-project", credentials=AnonymousCredentials(),
                              client_options={"api_endpoint": self.host})


@contextlib.contextmanager
def gcs_server() -> Iterator[GcsServer]:
    port = free_port()
    exe = os.path.join(os.path.dirname(sys.executable), "gcp-storage-emulator")
    with running([exe, "start", "--host", LOOPBACK, "--port", str(port), "--in-memory"], port,
                 CLOUD_ENV):
        yield GcsServer(f"http://{LOOPBACK}:{port}")


class ImageHttpServer:
    """An aiohttp server on 127.0.0.1 serving images and misbehaving on purpose.

    Paths: /img/NAME (bytes from `files`; names starting optout_ carry X-Robots-Tag: noai),
    /flaky/NAME (503 twice with Retry-After: 0, then the image), /down (always 503),
    /limited/NAME (429 with Retry-After: 1 once, then the image), /missing (404),
    /page (text/html), /huge (3 MB, chunked, no Content-Length), /hop/N (N redirects, then
    /img/good.jpg), /to-metadata (302 to the cloud metadata address), /empty (200, no body),
    /slow (answers after 3 s). `hits` counts requests per path.
    """

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.hits: dict[str, int] = {}
        self.port = free_port()
        self.base = f"http://{LOOPBACK}:{self.port}"

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def _app(self):
        import asyncio

        from aiohttp import web

        def count(request) -> int:
            self.hits[request.path] = self.hits.get(request.path, 0) + 1
            return self.hits[request.path]

        def image(name: str):
            if name not in self.files:
                return web.Response(status=404)
            ctype = {"png": "image/png", "gif": "image/gif", "webp": "image/webp"}.get(
                name.rsplit(".", 1)[-1], "image/jpeg")
            headers = {"X-Robots-Tag": "noai, noimageai"} if name.startswith("optout_") else {}
            return web.Response(body=self.files[name], content_type=ctype, headers=headers)

        async def img(request):
            count(request)
            return image(request.match_info["name"])

        async def flaky(request):
            if count(request) <= 2:
                return web.Response(status=503, headers={"Retry-After": "0"})
            return image(request.match_info["name"])

        async def down(request):
            count(request)
            return web.Response(status=503, headers={"Retry-After": "0"})

        async def limited(request):
            if count(request) == 1:
                return web.Response(status=429, headers={"Retry-After": "1"})
            return image(request.match_info["name"])

        async def missing(request):
            count(request)
            return web.Response(status=404, text="no such image")

        async def page(request):
            count(request)
            return web.Response(text="<html>not an image</html>", content_type="text/html")

        async def huge(request):
            count(request)
            resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            for _ in range(48):
                await resp.write(b"\xff" * 65536)
            await resp.write_eof()
            return resp

        async def hop(request):
            count(request)
            n = int(request.match_info["n"])
            raise web.HTTPFound(f"/hop/{n - 1}" if n > 1 else "/img/good.jpg")

        async def to_metadata(request):
            count(request)
            raise web.HTTPFound("http://169.254.169.254/latest/meta-data/")

        async def empty(request):
            count(request)
            return web.Response(body=b"", content_type="image/png")

        async def slow(request):
            count(request)
            await asyncio.sleep(3)
            return image("good.jpg")

        app = web.Application()
        app.add_routes([web.get("/img/{name}", img), web.get("/flaky/{name}", flaky),
                        web.get("/down", down), web.get("/limited/{name}", limited),
                        web.get("/missing", missing), web.get("/page", page),
                        web.get("/huge", huge), web.get("/hop/{n}", hop),
                        web.get("/to-metadata", to_metadata), web.get("/empty", empty),
                        web.get("/slow", slow)])
        return app

    @contextlib.contextmanager
    def running(self) -> Iterator[ImageHttpServer]:
        with serve_app(self._app(), self.port):
            yield self


@contextlib.contextmanager
def serve_app(app, port: int | None = None) -> Iterator[str]:
    """Runs an aiohttp Application on 127.0.0.1 in a thread; yields its base URL."""
    import asyncio
    import threading

    from aiohttp import web

    port = port or free_port()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, LOOPBACK, port).start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield f"http://{LOOPBACK}:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def listening_addresses(port: int) -> set[str]:
    """The addresses something listens on at `port`, read from the kernel's socket table
    (no connection is made)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table) as fh:
            for line in fh.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.split(":")
                if int(hex_port, 16) != port or state != "0A":  # 0A: LISTEN
                    continue
                if len(address) == 8:
                    found.add(socket.inet_ntop(socket.AF_INET, bytes.fromhex(address)[::-1]))
                else:  # four little-endian 32-bit words
                    raw = bytes.fromhex(address)
                    ip = ipaddress.IPv6Address(b"".join(raw[i:i + 4][::-1]
                                                        for i in range(0, 16, 4)))
                    found.add(str(ip.ipv4_mapped or ip))
    return found
