"""Fault injection: an audit through proxies that fail 20% of requests still accounts for
every image once.

A FaultProxy (tests/faultproxy.py) sits in front of each of moto_server (the S3 bucket the
images are listed and read from), the URL server (a manifest of http URLs) and the Hive
emulator (which scores every image): 5xx answers, connection resets, slow answers and
truncated bodies, a fifth of all requests, seeded.
"""

from __future__ import annotations

import json
import logging
from collections import Counter

import pytest
from corpus import noise_png
from faultproxy import FAULTS, FaultPlan, fault_proxy
from outputs import rows
from servers import ImageHttpServer, s3_server, serve_app

from synthsieve.cli import main
from synthsieve.emulators.hive import PATH, STATS, Faults, make_app

KEY = "hive-fault-key-41d0c9b7e2"
N_S3, N_URL = 1000, 1000


@pytest.mark.slow
def test_2000_images_through_20_percent_faults_each_end_in_exactly_one_row(
        tmp_path, tiny_model, cloud_env, monkeypatch, caplog, capsys):
    monkeypatch.setenv("HIVE_API_KEY", KEY)
    # everything that handles the key logs at DEBUG (botocore's DEBUG signs every S3 request
    # into the log: minutes of formatting, and it never sees the key)
    caplog.set_level(logging.INFO)
    for name in ("synthsieve", "aiohttp", "apache_beam.ml"):
        caplog.set_level(logging.DEBUG, logger=name)
    url_files = {f"u{i:04d}.png": noise_png(10_000 + i, side=24) for i in range(N_URL)}
    http = ImageHttpServer(url_files)
    hive = make_app(KEY, Faults())
    with s3_server() as s3, http.running(), serve_app(hive) as hive_url, \
            fault_proxy(s3.endpoint, FaultPlan(seed=1)) as (s3_proxy, s3_faults), \
            fault_proxy(http.base, FaultPlan(seed=2)) as (url_proxy, url_faults), \
            fault_proxy(hive_url, FaultPlan(seed=3)) as (api_proxy, api_faults):
        c = s3.client()
        c.create_bucket(Bucket="faulty")
        for i in range(N_S3):
            c.put_object(Bucket="faulty", Key=f"imgs/s{i:04d}.png",
                         Body=noise_png(20_000 + i, side=24))
        manifest = tmp_path / "urls.jsonl"
        manifest.write_text("".join(json.dumps({"id": f"url-{name}", "url":
                                                f"{url_proxy}/img/{name}"}) + "\n"
                                    for name in url_files))
        out = tmp_path / "out"
        rc = main(["-q", "audit", "s3://faulty/imgs/", str(manifest), "--out", str(out),
                   "--backend", "hive", "--api-url", api_proxy + PATH, "--api-rate", "400",
                   "--api-retries", "4", "--http-retries", "4", "--allow-private-networks",
                   "--s3_endpoint_url", s3_proxy, "--s3_region_name", "us-east-1",
                   "--s3_access_key_id", "testing", "--s3_secret_access_key", "testing"])

    scores, errors = rows(out, "scores"), rows(out, "errors")
    ids = [r["image_id"] for r in scores] + [r["image_id"] for r in errors]
    uris = {r["uri"] for r in scores} | {r["uri"] for r in errors}
    assert len(ids) == len(set(ids)) == N_S3 + N_URL, "an image was lost or written twice"
    assert {u for u in uris if u.startswith("s3://")} == {
        f"s3://faulty/imgs/s{i:04d}.png" for i in range(N_S3)}
    assert sum(u.startswith(url_proxy) for u in uris) == N_URL
    summary = json.loads((out / "summary.json").read_text())
    assert summary["inputs"] == N_S3 + N_URL and summary["accounted_for"] is True
    assert rc == 0

    # every kind of fault happened in front of every server
    for proxy in (s3_faults, url_faults, api_faults):
        assert all(proxy.counts[f] > 0 for f in FAULTS), proxy.counts
        assert 0.15 < sum(proxy.counts[f] for f in FAULTS) / proxy.counts["requests"] < 0.25
    # retries absorb nearly all of them; what is left is a row that says what happened
    assert len(scores) >= 0.97 * (N_S3 + N_URL), Counter(
        (r["stage"], r["error_type"]) for r in errors)
    for r in errors:
        assert r["stage"] in ("read", "fetch", "api") and r["message"], r
    assert hive[STATS]["requests"] >= len(scores)

    # the API key never reaches a log line, the console or an output file
    written = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())
    assert KEY.encode() not in written
    assert KEY not in caplog.text and KEY not in capsys.readouterr().out
    with capsys.disabled():  # the figures, for pytest -s
        print(f"\nfaults injected: s3 {dict(s3_faults.counts)}, urls {dict(url_faults.counts)}, "
              f"api {dict(api_faults.counts)}; scored {len(scores)}, error rows "
              f"{dict(Counter((r['stage'], r['error_type']) for r in errors))}, "
              f"wall {summary['wall_s']} s")


def test_the_url_fetcher_through_the_fault_proxy_gets_every_byte_right_or_says_why():
    """The fetch policy alone, behind the same faults: each URL ends as its exact bytes or
    as an error naming what went wrong, and retries absorb nearly every fault."""
    import asyncio

    from synthsieve.io.http import HttpClient, HttpConfig, close_http

    files = {f"f{i:03d}.png": noise_png(30_000 + i, side=16) for i in range(300)}
    http = ImageHttpServer(files)
    cfg = HttpConfig(max_bytes=1 << 20, retries=4, backoff_base_s=0.01,
                     allow_private_networks=True)
    with http.running(), fault_proxy(http.base, FaultPlan(seed=4, slow_s=(0.05, 0.2))) \
            as (url, proxy):
        client = HttpClient(cfg)
        client.setup()

        async def fetch_all():
            return await asyncio.gather(*(client.fetcher.fetch(f"{url}/img/{name}")
                                          for name in files))

        try:
            results = asyncio.run_coroutine_threadsafe(fetch_all(), client.loop).result(120)
        finally:
            close_http()
    assert all(proxy.counts[f] > 0 for f in FAULTS), proxy.counts
    fetched = 0
    for name, result in zip(files, results, strict=True):
        if result.error_type is None:
            assert result.data == files[name] and result.status == 200
            fetched += 1
        else:
            assert result.message and result.attempts == cfg.retries + 1, result
    assert fetched >= 0.97 * len(files)
    assert max(r.attempts for r in results) > 1  # faults were met, and retried
