"""URL manifests fetched over http from a real aiohttp server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
from pathlib import Path

import pytest
from aiohttp.abc import AbstractResolver
from corpus import encode, photo_like
from outputs import rows
from servers import ImageHttpServer

from synthsieve.cli import main
from synthsieve.elements import FetchedImage, ImageRef
from synthsieve.io import http as fetch_http
from synthsieve.io import read as read_module
from synthsieve.io.http import (
    HttpClient,
    HttpConfig,
    robots_opt_out,
)
from synthsieve.io.netguard import GuardedResolver, refusal_reason
from synthsieve.io.retry import retry_after_s

LOOPBACK_NETS = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


@pytest.fixture
def loopback_only(monkeypatch):
    """Fails the test, without connecting, if anything tries to reach a non-loopback address."""
    attempts: list[str] = []

    def check(address) -> None:
        host = address[0] if isinstance(address, tuple) else str(address)
        ip = ipaddress.ip_address(str(host).split("%")[0])
        if not any(ip in net for net in LOOPBACK_NETS):
            attempts.append(str(ip))
            raise AssertionError(f"test tried to connect to {ip}")

    real_connect = socket.socket.connect
    real_sock_connect = asyncio.selector_events.BaseSelectorEventLoop.sock_connect

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            check(address)
        return real_connect(self, address)

    async def sock_connect(self, sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            check(address)
        return await real_sock_connect(self, sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(asyncio.selector_events.BaseSelectorEventLoop, "sock_connect",
                        sock_connect)
    yield attempts
    assert not attempts, f"non-loopback connections were attempted: {attempts}"


@pytest.fixture
def server():
    files = {"good.jpg": encode(photo_like(120, 90, seed=1), "JPEG"),
             "good.png": encode(photo_like(100, 80, seed=2), "PNG"),
             "optout_a.png": encode(photo_like(64, 64, seed=3), "PNG"),
             "trunc.jpg": encode(photo_like(300, 200, seed=4), "JPEG")[:2000]}
    srv = ImageHttpServer(files)
    with srv.running():
        yield srv


def _manifest(tmp_path: Path, urls: list[tuple[str, str]]) -> Path:
    path = tmp_path / "urls.jsonl"
    path.write_text("".join(json.dumps({"id": i, "url": u, "caption": f"c-{i}"}) + "\n"
                            for i, u in urls))
    return path


@pytest.mark.slow
def test_url_manifest_retries_caps_and_records_status_and_opt_out(tmp_path, tiny_model, server,
                                                                 loopback_only):
    u = server.url
    urls = [("good", u("/img/good.jpg")), ("good-again", u("/img/good.jpg")),
            ("png", u("/img/good.png")), ("optout", u("/img/optout_a.png")),
            ("flaky", u("/flaky/good.png")), ("limited", u("/limited/good.jpg")),
            ("hops", u("/hop/3")), ("down", u("/down")), ("missing", u("/missing")),
            ("page", u("/page")), ("huge", u("/huge")), ("loop", u("/hop/9")),
            ("empty", u("/empty")), ("trunc", u("/img/trunc.jpg")), ("slow", u("/slow"))]
    out = tmp_path / "out"
    assert main(["-q", "audit", str(_manifest(tmp_path, urls)), "--out", str(out),
                 "--model", str(tiny_model), "--allow-private-networks", "--max-bytes",
                 "1000000", "--http-retries", "2", "--http-timeout", "1"]) == 0
    scores = {r["image_id"]: r for r in rows(out, "scores")}
    errors = {r["image_id"]: r for r in rows(out, "errors")}
    assert len(scores) + len(errors) == len(urls)
    assert set(scores) == {"good", "good-again", "png", "optout", "flaky", "limited", "hops"}
    assert server.hits["/img/good.jpg"] == 2  # "good" and "good-again" shared one fetch; +hops
    assert all(r["http_status"] == 200 for r in scores.values())
    assert scores["optout"]["robots_opt_out"] is True
    assert scores["good"]["robots_opt_out"] is False
    assert dict(scores["png"]["extra"]) == {"caption": "c-png"}
    assert server.hits["/flaky/good.png"] == 3  # two 503s retried, then 200
    assert server.hits["/limited/good.jpg"] == 2  # 429 honoured Retry-After, then 200
    expect = {"down": ("fetch", "http_503", 503), "missing": ("fetch", "http_404", 404),
              "page": ("fetch", "not_an_image_content_type", 200),
              "huge": ("fetch", "too_large", 200), "loop": ("fetch", "too_many_redirects", 302),
              "empty": ("fetch", "empty_body", 200), "trunc": ("decode", "truncated", 200),
              "slow": ("fetch", "timeout", None)}
    for key, (stage, error_type, status) in expect.items():
        row = errors[key]
        assert (row["stage"], row["error_type"]) == (stage, error_type), row
        assert row["http_status"] == status, row
    assert server.hits["/down"] == 3 and errors["down"]["attempts"] == 3
    assert server.hits["/missing"] == 1 and errors["missing"]["attempts"] == 1


def test_ssrf_guard_refuses_before_any_connection(tmp_path, tiny_model, server, loopback_only):
    port = server.port
    urls = [("v4", f"http://127.0.0.1:{port}/img/good.jpg"),
            ("name", f"http://localhost:{port}/img/good.jpg"),
            ("v6", f"http://[::1]:{port}/img/good.jpg"),
            ("mapped", f"http://[::ffff:127.0.0.1]:{port}/img/good.jpg"),
            ("private", "http://10.0.0.1/x.jpg"), ("lan", "http://192.168.1.20/x.jpg"),
            ("metadata", "http://169.254.169.254/latest/meta-data/"),
            ("multicast", "http://224.0.0.1/x.jpg"), ("zero", "http://0.0.0.0/x.jpg"),
            ("cgnat", "http://100.64.0.1/x.jpg")]
    out = tmp_path / "out"
    # every input refused: exit 4, as any run in which every input failed
    assert main(["-q", "audit", str(_manifest(tmp_path, urls)), "--out", str(out),
                 "--model", str(tiny_model)]) == 4
    errors = {r["image_id"]: r for r in rows(out, "errors")}
    assert not rows(out, "scores")
    assert set(errors) == {i for i, _ in urls}
    for row in errors.values():
        assert (row["stage"], row["error_type"]) == ("fetch", "forbidden_address"), row
    assert server.hits == {}, "the guard let a request through"


def test_redirect_to_cloud_metadata_is_refused_even_when_private_is_allowed(
        tmp_path, tiny_model, server, loopback_only):
    out = tmp_path / "out"
    manifest = _manifest(tmp_path, [("r", server.url("/to-metadata"))])
    assert main(["-q", "audit", str(manifest), "--out", str(out), "--model", str(tiny_model),
                 "--allow-private-networks"]) == 4  # its one input failed
    [row] = rows(out, "errors")
    assert (row["error_type"], server.hits["/to-metadata"]) == ("forbidden_address", 1)
    assert "metadata" in row["message"]


@pytest.mark.parametrize(("address", "allow", "refused"), [
    ("127.0.0.1", False, True), ("::1", False, True), ("10.1.2.3", False, True),
    ("172.16.0.1", False, True), ("192.168.0.1", False, True), ("169.254.1.1", False, True),
    ("fe80::1", False, True), ("fc00::1", False, True), ("224.0.0.251", False, True),
    ("0.0.0.0", False, True), ("100.64.0.1", False, True), ("::ffff:10.0.0.1", False, True),
    ("8.8.8.8", False, False), ("2001:4860:4860::8888", False, False),
    ("127.0.0.1", True, False), ("10.1.2.3", True, False),
    ("169.254.169.254", True, True), ("fd00:ec2::254", True, True),
])
def test_refusal_table(address, allow, refused):
    assert (refusal_reason(address, allow) is not None) is refused


def test_opt_out_and_retry_after_parsing():
    assert robots_opt_out(["noai"]) and robots_opt_out(["googlebot: noindex, noimageai"])
    assert robots_opt_out(["noindex", "NoAI"]) and not robots_opt_out(["noindex, nofollow"])
    assert retry_after_s("7") == 7.0 and retry_after_s(None) is None
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert retry_after_s("soon") is None


class _RebindingResolver(AbstractResolver):
    """A DNS server under an attacker's control: the name's answer flips between a public
    address and loopback on every lookup, hoping one is checked and the other connected."""

    def __init__(self):
        self.answers: list[str] = []

    async def resolve(self, host, port=0, family=socket.AF_INET):
        answer = "93.184.216.34" if len(self.answers) % 2 == 0 else "127.0.0.1"
        self.answers.append(answer)
        return [{"hostname": host, "host": answer, "port": port, "family": socket.AF_INET,
                 "proto": 0, "flags": socket.AI_NUMERICHOST}]

    async def close(self):
        pass


def test_dns_answer_changing_between_lookups_never_reaches_loopback(server, monkeypatch):
    # Every connection is recorded; a non-loopback one is refused before it is made, as a
    # closed port would refuse it, so the test never leaves the machine.
    connected: list[str] = []
    real_sock_connect = asyncio.selector_events.BaseSelectorEventLoop.sock_connect

    async def sock_connect(self, sock, address):
        connected.append(address[0])
        if not any(ipaddress.ip_address(address[0]) in net for net in LOOPBACK_NETS):
            raise ConnectionRefusedError(f"(test) no route to {address[0]}")
        return await real_sock_connect(self, sock, address)

    monkeypatch.setattr(asyncio.selector_events.BaseSelectorEventLoop, "sock_connect",
                        sock_connect)
    rebinding = _RebindingResolver()
    monkeypatch.setattr(fetch_http, "GuardedResolver",
                        lambda allow: GuardedResolver(allow, base=rebinding))
    # no DNS cache, so that every retry looks the name up again and meets the other answer
    cfg = HttpConfig(max_bytes=1 << 20, retries=3, backoff_base_s=0.01, dns_cache_s=0)
    client = HttpClient(cfg)
    client.setup()
    url = f"http://rebind.example:{server.port}/img/good.jpg"
    result = asyncio.run_coroutine_threadsafe(client.fetcher.fetch(url), client.loop).result(30)

    # attempt 1: public answer, allowed, connected (refused by the stand-in network);
    # attempt 2: loopback answer, refused by the guard with no connection: the row says so
    assert rebinding.answers == ["93.184.216.34", "127.0.0.1"]
    assert connected == ["93.184.216.34"]
    assert (result.error_type, result.attempts) == ("forbidden_address", 2)
    assert "127.0.0.1 is a loopback address" in result.message
    assert server.hits == {}, "the rebound name reached the loopback server"


def test_one_worker_shares_reads_of_nearby_uris_and_rereads_far_ones(server, loopback_only,
                                                                     monkeypatch):
    """The in-process reader keeps no per-URI state beyond its recent reads: a repeat among
    them shares the read, a repeat further apart is read again, and every reference gets its
    own image either way."""
    monkeypatch.setattr(read_module, "RECENT_URIS", 2)
    fetch = read_module._FetchBatch("run-nearby", 1_000_000, HttpConfig(
        max_bytes=1_000_000, allow_private_networks=True), share_recent=True)
    fetch.setup()
    try:
        def refs(name: str, path: str) -> tuple[str, list[ImageRef]]:
            return server.url(path), [ImageRef(uri=server.url(path), image_id=name, extra=None)]

        good, png, optout = "/img/good.jpg", "/img/good.png", "/img/optout_a.png"
        out = list(fetch.process([refs("a", good), refs("b", good)]))  # same batch
        out += list(fetch.process([refs("c", good)]))  # just read
        assert server.hits[good] == 1
        out += list(fetch.process([refs("d", png), refs("e", optout)]))  # good falls out
        out += list(fetch.process([refs("f", good)]))
        assert server.hits[good] == 2
    finally:
        fetch.teardown()
    images = [o for o in out if isinstance(o, FetchedImage)]
    assert [i.ref.image_id for i in images] == ["a", "b", "c", "d", "e", "f"]
    assert len({i.sha256 for i in images if i.ref.uri.endswith(good)}) == 1
