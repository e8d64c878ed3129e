"""`synthsieve report`: DuckDB over an audit (and a previous one), as JSON and as one HTML
page that headless Chromium renders without console errors, showing the totals."""

from __future__ import annotations

import json
import os
import re
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
    assert report["run"]["model"] == "tiny-test@0" and report["run"]["sources"] == [
        str(root / "corpus")]
    assert set(report["run"]["thresholds"]) == {"ai_generated", "not_ai_generated"}
    flagged = report["gallery"]["flagged"]
    assert flagged["total"] == len(flagged["items"]) == report["evidence_verdicts"][
        "ai_generated"]
    assert all("generator text: a1111" in i["badges"] for i in flagged["items"]
               if i["uri"].endswith(("img0.png", "img1.png")))
    assert report["gallery"]["errors"]["items"][0]["error_type"] == "not_an_image"


def _flagged_in_score_order(audit_dir) -> list[str]:
    import pyarrow.parquet as pq

    rows = [r for p in sorted((audit_dir / "scores").glob("*.parquet"))
            for r in pq.read_table(p).to_pylist() if r["evidence_verdict"] == "ai_generated"]
    rows.sort(key=lambda r: (-r["ai_generated"], r["image_id"]))
    return [r["uri"] for r in rows]


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
    # the gallery: every flagged image, highest score first, with its thumbnail
    flagged = dom[dom.index('id="gallery-flagged"'):dom.index('id="gallery-disagreements"')]
    expected = _flagged_in_score_order(after)
    assert len(expected) >= 3
    assert re.findall(r'data-uri="([^"]+)"', flagged) == expected
    assert flagged.count("data:image/jpeg;base64,") == len(expected)
    assert "tiny-test@0" in dom and "ai_generated threshold" not in dom  # it is in the plot
    assert 'id="logscale"' in dom
    assert page.stat().st_size < 4 * 1024 * 1024


def test_thumbnails_stop_at_the_pages_budget_and_skip_what_cannot_be_shown(tmp_path):
    from synthsieve.reporting.audit_html import _Thumbs

    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(noise_png(i, side=200))
    (tmp_path / "bad.png").write_bytes(b"not an image")
    thumbs = _Thumbs(budget=1)  # room for the first thumbnail only
    first, _ = thumbs.get(str(tmp_path / "0.png"))
    assert first.startswith("data:image/jpeg;base64,")
    assert thumbs.get(str(tmp_path / "1.png")) == (None, "thumbnail budget used")
    assert thumbs.get(str(tmp_path / "0.png"))[0] == first  # shown again at no cost
    roomy = _Thumbs()
    assert roomy.get(str(tmp_path / "bad.png")) == (None, "no thumbnail")
    assert roomy.get("http://127.0.0.1:9/x.jpg") == (None, "no thumbnail")  # not fetched
