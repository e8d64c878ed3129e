"""Identical bytes are scored once, and --resume does only what is not in DIR yet."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from corpus import encode, photo_like
from outputs import rows
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from synthsieve.cli import main


def test_identical_bytes_are_scored_once_but_every_input_gets_a_row(tmp_path, tiny_model):
    d = tmp_path / "imgs"
    d.mkdir()
    # the copies carry generator text: a follower copies its leader's provenance too
    buf = io.BytesIO()
    info = PngInfo()
    info.add_text("parameters", "a fox\nSteps: 20, Sampler: Euler, Model: flux1-dev")
    Image.open(io.BytesIO(encode(photo_like(80, 60, seed=5), "PNG"))).save(
        buf, "PNG", pnginfo=info)
    same = buf.getvalue()
    for i in range(5):
        (d / f"copy{i}.png").write_bytes(same)
    (d / "other.png").write_bytes(encode(photo_like(80, 60, seed=6), "PNG"))
    for i in range(2):
        (d / f"broken{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0 same broken bytes")
    out = tmp_path / "out"
    assert main(["-q", "audit", str(d), "--out", str(out), "--model", str(tiny_model)]) == 0
    scores = {Path(r["uri"]).name: r for r in rows(out, "scores")}
    errors = {Path(r["uri"]).name: r for r in rows(out, "errors")}
    assert sorted(scores) == ["copy0.png", "copy1.png", "copy2.png", "copy3.png", "copy4.png",
                              "other.png"]
    copies = [scores[f"copy{i}.png"] for i in range(5)]
    assert len({r["ai_generated"] for r in copies}) == 1
    for r in copies:
        assert r["generation_params"]["tool"] == "a1111", r["uri"]
        assert r["provenance_source"] == "flux" and r["evidence_verdict"] == "ai_generated"
    assert len({r["image_id"] for r in copies}) == 5
    assert sum(any("scored once" in w for w in r["warnings"]) for r in copies) == 4
    assert sorted(errors) == ["broken0.jpg", "broken1.jpg"]
    assert all(e["stage"] == "decode" for e in errors.values())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["duplicate_bytes_scored_once"] == 5
    assert summary["inputs"] == 8 and summary["accounted_for"]


def test_resume_does_only_the_rest_and_writes_nothing_twice(tmp_path, tiny_model):
    d = tmp_path / "imgs"
    d.mkdir()
    listed = []
    for i in range(8):
        path = d / f"{i}.png"
        path.write_bytes(encode(photo_like(40, 40, seed=i), "PNG") if i != 3 else b"junk")
        listed.append({"id": f"img{i}", "uri": str(path)})
    listed.append({"id": "bad-row", "uri": ""})

    def manifest(name: str, subset: list[dict]) -> str:
        path = tmp_path / name
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["id", "uri"])
            w.writeheader()
            w.writerows(subset)
        return str(path)

    out = tmp_path / "out"
    # The first run got through half of the corpus (as a run that failed part-way would
    # have committed), including the broken file and the bad manifest row.
    first = manifest("first.csv", listed[:4] + listed[-1:])
    assert main(["-q", "audit", first, "--out", str(out), "--model", str(tiny_model)]) == 0
    everything = manifest("all.csv", listed)
    assert main(["-q", "audit", everything, "--out", str(out), "--model", str(tiny_model),
                 "--resume"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["inputs"] == 4 and summary["skipped_by_resume"] == 5
    ids = [r["image_id"] for r in rows(out, "scores") + rows(out, "errors")]
    assert sorted(ids) == sorted(r["id"] for r in listed), "missing or duplicated rows"
    # A third run has nothing left to do.
    assert main(["-q", "audit", everything, "--out", str(out), "--model", str(tiny_model),
                 "--resume"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["inputs"], summary["scores"], summary["errors"]) == (0, 0, 0)
    assert len(rows(out, "scores") + rows(out, "errors")) == len(listed)


@pytest.mark.slow
def test_kill_9_mid_run_then_resume_gives_every_input_exactly_once(tmp_path, tiny_model):
    """The last images of the manifest are held by the server until the test lets them go,
    so the first run cannot finish before it is killed: the kill is certain, not a race."""
    import asyncio
    import os
    import signal
    import subprocess
    import sys
    import threading
    import time

    from aiohttp import web
    from servers import serve_app

    n, held_from = 1500, 1200
    blobs = [encode(photo_like(32, 32, seed=i), "PNG") if i % 50 else b"broken"
             for i in range(n)]
    release = threading.Event()

    async def image(request: web.Request) -> web.Response:
        i = int(request.match_info["i"])
        while i >= held_from and not release.is_set():
            await asyncio.sleep(0.05)
        return web.Response(body=blobs[i], content_type="image/png")

    app = web.Application()
    app.router.add_get("/img/{i}.png", image)
    out = tmp_path / "out"
    with serve_app(app) as url:
        manifest = tmp_path / "m.csv"
        manifest.write_text("id,uri\n" + "".join(f"i{i:05d},{url}/img/{i}.png\n"
                                                 for i in range(n)))
        args = ["-q", "audit", str(manifest), "--out", str(out), "--model", str(tiny_model),
                "--commit-every", "25", "--allow-private-networks", "--http-timeout", "600"]
        proc = subprocess.Popen([sys.executable, "-m", "synthsieve", *args],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            if len(list((out / "scores").glob("*.parquet"))) >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"the run ended before the kill: {proc.stderr.read()}"
        os.killpg(proc.pid, signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
        proc.stderr.close()
        committed = len(rows(out, "scores") + rows(out, "errors"))
        assert 0 < committed <= held_from
        release.set()
        assert main([*args, "--resume"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    ids = [r["image_id"] for r in rows(out, "scores") + rows(out, "errors")]
    assert len(ids) == len(set(ids)) == n, "lost or duplicated rows after kill -9 + resume"
    assert summary["skipped_by_resume"] == committed
    assert summary["inputs"] == n - committed
    # no half-written shard is ever visible as a table
    assert not [p for p in (out / "scores").iterdir() if p.name.endswith(".parquet")
                and p.stat().st_size == 0]
