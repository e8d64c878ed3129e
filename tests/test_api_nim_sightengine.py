"""NIM and Sightengine backends against their local emulators; --max-requests, --dry-run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from corpus import encode, photo_like
from outputs import rows
from PIL import Image
from servers import ImageHttpServer, serve_app

from synthsieve.cli import main
from synthsieve.emulators import nim, sightengine
from synthsieve.emulators.common import STATS, Faults, expected_scores

KEY = "nvapi-test-0c1d2e3f4a5b"
USER, SECRET = "se-user-123", "se-secret-9f8e7d6c"


def _images(root: Path) -> dict[str, bytes]:
    root.mkdir()
    rng = np.random.default_rng(0)
    noisy = Image.fromarray(rng.integers(0, 255, (300, 300, 3), dtype=np.uint8))
    files = {"small.jpg": encode(photo_like(64, 48, seed=1), "JPEG"),
             "small.webp": encode(photo_like(64, 48, seed=2), "WEBP"),  # NIM: re-encoded
             "large.png": encode(noisy, "PNG"),  # base64 over 180,000 chars: asset flow
             "broken.png": b"\x89PNG\r\n\x1a\n broken"}
    for name, data in files.items():
        (root / name).write_bytes(data)
    return files


def test_nim_inline_and_asset_flow_and_format_re_encoding(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NVIDIA_API_KEY", KEY)
    files = _images(tmp_path / "imgs")
    assert len(files["large.png"]) * 4 / 3 > nim.INLINE_LIMIT
    app = nim.make_app(KEY, Faults())
    out = tmp_path / "out"
    with serve_app(app) as url:
        assert main(["-q", "audit", str(tmp_path / "imgs"), "--out", str(out), "--backend",
                     "nim", "--api-url", url + nim.INVOKE_PATH, "--api-rate", "100"]) == 0
    scores = {Path(r["uri"]).name: r for r in rows(out, "scores")}
    assert set(scores) == {"small.jpg", "small.webp", "large.png"}
    for name in ("small.jpg", "large.png"):  # sent as they are
        assert scores[name]["ai_generated"] == pytest.approx(expected_scores(files[name])[0])
    assert 0 <= scores["small.webp"]["ai_generated"] <= 1  # scored on its PNG re-encoding
    assert not app[nim.ASSETS]  # the uploaded asset was consumed by its request
    for r in scores.values():
        assert r["model"].startswith("nvidia-nim") and r["backend"] == "nim"
        assert sum(dict(r["source_scores"]).values()) == pytest.approx(1.0)
    assert [e["stage"] for e in rows(out, "errors")] == ["decode"]
    assert KEY not in capsys.readouterr().out


def test_sightengine_multipart_and_url_form(tmp_path, monkeypatch):
    monkeypatch.setenv("SIGHTENGINE_API_USER", USER)
    monkeypatch.setenv("SIGHTENGINE_API_SECRET", SECRET)
    files = _images(tmp_path / "imgs")
    app = sightengine.make_app(USER, SECRET, Faults())
    out = tmp_path / "out"
    with serve_app(app) as url:
        assert main(["-q", "audit", str(tmp_path / "imgs"), "--out", str(out), "--backend",
                     "sightengine", "--api-url", url + sightengine.PATH]) == 0
        scores = {Path(r["uri"]).name: r for r in rows(out, "scores")}
        for name, row in scores.items():
            assert row["ai_generated"] == pytest.approx(expected_scores(files[name])[0],
                                                        abs=1e-5)
            assert row["source_scores"] is None and row["backend"] == "sightengine"
        # http inputs go by URL when asked (the emulator fetches only 127.0.0.1 URLs)
        srv = ImageHttpServer({"a.jpg": files["small.jpg"]})
        with srv.running():
            manifest = tmp_path / "urls.csv"
            manifest.write_text(f"uri\n{srv.url('/img/a.jpg')}\n")
            out2 = tmp_path / "out2"
            assert main(["-q", "audit", str(manifest), "--out", str(out2), "--backend",
                         "sightengine", "--api-url", url + sightengine.PATH,
                         "--allow-private-networks", "--api-send-urls", "always"]) == 0
            [row] = rows(out2, "scores")
            assert srv.hits["/img/a.jpg"] == 2  # once by synthsieve, once by "Sightengine"
            assert row["ai_generated"] == pytest.approx(
                expected_scores(files["small.jpg"])[0], abs=1e-5)
    written = b"".join(p.read_bytes() for d in (out, out2) for p in d.rglob("*") if p.is_file())
    assert SECRET.encode() not in written


def test_max_requests_stops_sending_and_dry_run_counts(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NVIDIA_API_KEY", KEY)
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(8):
        (d / f"{i}.png").write_bytes(encode(photo_like(32, 32, seed=i), "PNG"))
    (d / "dup.png").write_bytes((d / "0.png").read_bytes())
    (d / "bad.png").write_bytes(b"nope")
    app = nim.make_app(KEY, Faults())
    with serve_app(app) as url:
        api = ["--backend", "nim", "--api-url", url + nim.INVOKE_PATH]
        assert main(["-q", "audit", str(d), "--out", str(tmp_path / "dry"), *api,
                     "--dry-run"]) == 0
        dry = json.loads(capsys.readouterr().out)
        assert dry["would_send_requests"] == 8 and dry["duplicate_bytes_not_sent"] == 1
        assert app[STATS]["requests"] == 0 and not (tmp_path / "dry" / "scores").exists()
        out = tmp_path / "out"
        assert main(["-q", "audit", str(d), "--out", str(out), *api,
                     "--max-requests", "5"]) == 0
    assert app[STATS]["requests"] == 5
    errors = [e for e in rows(out, "errors") if e["error_type"] == "max_requests_reached"
              and not e["message"].startswith("identical bytes")]  # dup.png may copy one
    assert len(errors) == 3 and all("--max-requests 5" in e["message"] for e in errors)
    assert len(rows(out, "scores")) + len(rows(out, "errors")) == 10


def test_rate_limiter_never_exceeds_its_window_and_makes_up_late_sends():
    """At most `rate` sends in any one-second window, yet a loop stalled by other work (as
    the GIL stalls it behind decode threads) still averages the full rate."""
    import asyncio
    import time

    from synthsieve.inference.remote.base import RateLimiter

    async def run() -> list[float]:
        limiter = RateLimiter(50)
        sent: list[float] = []
        for i in range(150):
            # the limiter's own clock: a loaded machine delays the caller after it, which
            # no limiter can help
            sent.append(await limiter.acquire())
            if i % 10 == 0:
                time.sleep(0.03)  # a stall longer than the 20 ms mean interval
        return sent

    sent = asyncio.run(run())
    times = np.array(sent)
    for t in times:
        assert np.count_nonzero((times >= t) & (times < t + 1.0)) <= 50
    # send k + 50 goes out as soon as send k leaves the window: a stall delays one send by
    # its length, and the next ones catch up, where a burst-one token bucket loses it for good
    gaps = times[50:] - times[:-50]
    assert gaps.min() >= 1.0
    assert np.median(gaps) < 1.01 and gaps.max() < 1.1, (np.median(gaps), gaps.max())


def test_a_retry_is_sent_before_first_attempts_that_queued_earlier():
    """The run's last rows are mostly retries: queued behind first attempts, each would
    wait its backoff and then the whole queue."""
    import asyncio

    from synthsieve.inference.remote.base import RateLimiter

    async def run() -> list[str]:
        limiter = RateLimiter(20)
        order: list[str] = []

        async def send(name: str, retry: bool = False) -> None:
            await limiter.acquire(retry=retry)
            order.append(name)

        tasks = [asyncio.create_task(send(f"first{i}")) for i in range(6)]
        await asyncio.sleep(0.01)  # first0 is out; first1..5 wait for their slots
        tasks.append(asyncio.create_task(send("retry", retry=True)))
        cancelled = asyncio.create_task(send("gone"))
        await asyncio.sleep(0)
        cancelled.cancel()  # a caller that gives up frees its place
        await asyncio.gather(*tasks)
        return order

    order = asyncio.run(run())
    assert order[0] == "first0" and order.index("retry") <= 2, order
    assert sorted(order) == sorted([f"first{i}" for i in range(6)] + ["retry"])


@pytest.mark.parametrize("api", ["hive", "nim", "sightengine"])
def test_vendor_emulators_listen_on_loopback_only(api):
    from servers import free_port, listening_addresses, running

    port = free_port()
    cmd = [sys.executable, "-m", "synthsieve.cli", "emulate", api, "--port", str(port)]
    with running(cmd, port):
        # read from the kernel's socket table: nothing but 127.0.0.1 is bound
        assert listening_addresses(port) == {"127.0.0.1"}
