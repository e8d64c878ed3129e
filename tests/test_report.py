"""`synthsieve report`: DuckDB over an audit (and a previous one), as JSON and as one HTML
page that headless Chromium renders without console errors, showing the totals."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pytest
from corpus import noise_png
from PIL import Image

from synthsieve.cli import main

PARAMS = "a cat\nSteps: 20, Sampler: Euler, Model: flux1-dev, Version: v1.9.4"


@pytest.fixture(scope="module")
def audits(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("report")
    corpus = root / "corpus"
    corpus.mkdir()
    for i in range(6):
        (corpus / f"img{i}.png").write_bytes(noise_png(i, PARAMS if i < 2 else None))
    (corpus / "notes.txt").write_text("not an image")
    before = root / "before"
    assert main(["-q", "audit", str(corpus), "--out", str(before), "--model",
                 str(tiny_model)]) == 0
    (corpus / "img5.png").write_bytes(noise_png(5, PARAMS))  # now says it was generated
    after = root / "after"
    assert main(["-q", "audit", str(corpus), "--out", str(after), "--model",
                 str(tiny_model)]) == 0
    return root, before, after


def test_json_report_counts_each_image_once_and_diffs_two_audits(audits):
    root, before, after = audits
    out = root / "report.json"
    assert main(["-q", "report", str(after), str(before), "--out", str(out), "--format",
                 "json"]) == 0
    report = json.loads(out.read_text())
    assert report["totals"] == {"images": 7, "scores": 6, "errors": 1, "inputs_in_summary": 7,
                                "accounted_for": True}
    assert report["evidence_verdicts"]["ai_generated"] >= 3
    assert report["provenance_sources"] == {"flux": 3}
    assert report["provenance_coverage"]["generator_text"] == 3
    assert report["errors_by_type"] == {"decode/not_an_image": 1}
    assert sum(report["histogram"]) == 6
    changed = report["diff"]["examples"]
    assert [e["uri"].rsplit("/", 1)[-1] for e in changed if e["now"] == "ai_generated"] == [
        "img5.png"]
    assert report["diff"]["only_in_this_audit"] == report["diff"]["only_in_previous"] == 0


@pytest.fixture(scope="module")
def chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium must be installed in CI (.ci/run installs it)")
        pytest.skip("chromium not installed (apt-get install chromium)")
    return exe


def run_chromium(exe: str, *args: str) -> subprocess.CompletedProcess:
    # Every request that is not file:// goes to a dead loopback port: nothing leaves the box.
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--proxy-server=127.0.0.1:9", "--enable-logging=stderr",
             "--v=0"]
    return subprocess.run([exe, *flags, *args], capture_output=True, text=True, timeout=120)


def test_html_report_renders_in_headless_chromium_with_totals(audits, chromium):
    root, before, after = audits
    page = root / "report.html"
    assert main(["-q", "report", str(after), str(before), "--out", str(page)]) == 0
    shot = root / "report.png"
    result = run_chromium(chromium, f"--screenshot={shot}", "--window-size=1200,2400",
                          f"file://{page}")
    assert shot.exists() and shot.stat().st_size > 20_000, result.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.std() > 10  # something was drawn, not a blank page
    console = [line for line in result.stderr.splitlines() if "CONSOLE" in line]
    assert not console, console
    dom = run_chromium(chromium, "--dump-dom", f"file://{page}").stdout
    assert '<div class="card" id="total-images"><div>images</div><div class="big">7' in dom
    assert "inputs 7 = scores + errors" in dom
    assert "img5.png" in dom  # the diff names the image that changed verdict
