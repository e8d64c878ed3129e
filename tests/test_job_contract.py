"""What a scheduler reads, the exit code and summary.json, is true: unknown counts are said
to be unknown, refusals are one line, and nothing runs on a mistyped option."""

from __future__ import annotations

import json
from pathlib import Path

from apache_beam.runners.portability.fn_api_runner import fn_runner
from PIL import Image

from synthsieve.cli import main


def _folder(tmp_path: Path, n: int = 2) -> Path:
    src = tmp_path / "in"
    src.mkdir()
    for i in range(n):
        Image.new("RGB", (40, 40), (200, 30 * i, 30)).save(src / f"a{i}.png")
    return src


def test_unreadable_counters_make_the_count_unknown_and_exit_5(tmp_path, tiny_model,
                                                                  monkeypatch, capsys):
    def broken(self):
        raise RuntimeError("metrics service unavailable")

    monkeypatch.setattr(fn_runner.RunnerResult, "metrics", broken)
    src = _folder(tmp_path)
    out = tmp_path / "out"
    assert main(["-q", "audit", str(src), "--out", str(out), "--model", str(tiny_model)]) == 5
    summary = json.loads((out / "summary.json").read_text())
    assert summary["accounted_for"] is None and summary["inputs"] is None
    assert summary["scores"] == 2  # the rows are there; only the count to check them is not
    assert "accounted_for null" in capsys.readouterr().err
    # report on it says the same
    assert main(["-q", "report", str(out), "--out", str(tmp_path / "r.json"), "--format",
                 "json"]) == 5
    assert json.loads((tmp_path / "r.json").read_text())["totals"]["accounted_for"] is None
