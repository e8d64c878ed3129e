"""What a person sees on the console: done / total, rate and ETA while a job runs, a short
summary at the end on stderr, and stdout left to the JSON summary."""

from __future__ import annotations

import io
import json
import logging
import time

import pyarrow as pa
import pyarrow.parquet as pq
from corpus import encode, photo_like

from synthsieve.cli import main
from synthsieve.cli.console import ConsoleProgress, summary_lines
from synthsieve.io.sources import count_references
from synthsieve.transforms.progress import ReportProgress, rows_done


def _write_rows(n: int) -> None:
    """n rows through the real counting DoFn, as a job's writers see them."""
    fn = ReportProgress(every_s=0.0)
    fn.setup()
    for i in range(n):
        assert list(fn.process(i)) == [i]


def test_without_a_terminal_progress_is_a_log_line_with_total_rate_and_eta(caplog):
    caplog.set_level(logging.INFO, logger="synthsieve.progress")
    with ConsoleProgress("audit", lambda: 100, stream=io.StringIO(), every_s=0.05) as shown:
        _write_rows(40)
        deadline = time.monotonic() + 5
        while not any("of 100 images" in r.message for r in caplog.records):
            assert time.monotonic() < deadline, [r.message for r in caplog.records]
            time.sleep(0.02)
        assert rows_done() == 40 and shown.total == 100
    lines = [r.message for r in caplog.records if "of 100 images" in r.message]
    assert lines[-1].startswith("audit: 40 of 100 images (40%), ")
    assert "images/s, about " in lines[-1] and lines[-1].endswith(" left")
    # while a console shows the count, the worker's own per-process lines stay quiet
    assert not any(r.message.startswith("progress:") for r in caplog.records)


def test_the_line_says_when_the_total_is_not_known_and_how_long_is_left():
    known = ConsoleProgress("eval", None)
    assert known.line(25, 5.0) == "eval: 25 images done, 5.0 images/s (total not known yet)"
    assert known.line(1, 1.0) == "eval: 1 image done, 1.0 images/s (total not known yet)"
    known._total = 100
    assert known.line(25, 5.0) == "eval: 25 of 100 images (25%), 5.0 images/s, about 15 s left"
    known._total = 100_000
    assert known.line(1000, 10.0).endswith("about 16 min 30 s left")
    assert known.line(100_000, 10.0) == "eval: 100,000 of 100,000 images (100%), 10000.0 images/s"


def test_counting_references_reads_what_the_run_will_read(tmp_path):
    d = tmp_path / "imgs"
    (d / "sub").mkdir(parents=True)
    for name in ("a.png", "b.png", "sub/c.png"):
        (d / name).write_bytes(b"x")
    csv = tmp_path / "m.csv"
    csv.write_text('uri,caption\na.png,"two\nlines"\n\nb.png,plain\n')
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text('{"uri": "a.png"}\n\n{"uri": "b.png"}\nnot json\n')
    parquet = tmp_path / "m.parquet"
    pq.write_table(pa.table({"uri": ["a", "b", "c", "d"]}), parquet)
    assert count_references([str(d)]) == 3
    assert count_references([str(csv)]) == 2  # a quoted line break is one row
    assert count_references([str(jsonl)]) == 3  # the bad line becomes an error row too
    assert count_references([str(parquet), str(d / "*.png")]) == 6
    assert count_references(["s3://bucket/prefix/"]) is None  # no second listing of a bucket


def test_audit_prints_a_human_summary_on_stderr_and_only_json_on_stdout(tmp_path, capsys):
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(3):
        (d / f"{i}.png").write_bytes(encode(photo_like(40, 40, seed=i), "PNG"))
    (d / "bad.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    assert main(["audit", str(d), "--out", str(out), "--backend", "none"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)  # stdout is the JSON document and nothing else
    assert summary["inputs"] == 4
    assert "audit: 4 inputs: 3 scored, 1 error in " in captured.err
    assert "errors by stage: 1 decode" in captured.err
    assert f"next: synthsieve report {out} --out {out}/report.html" in captured.err


def test_summary_lines_name_verdicts_output_and_next_command():
    summary = {"inputs": 1, "scores": 1, "errors": 0, "wall_s": 1.5, "images_per_s": 0.67,
               "evidence_verdicts": {"ai_generated": 1}, "errors_by_stage": {}}
    assert summary_lines("audit", summary, "out", "synthsieve report out") == [
        "audit: 1 input: 1 scored, 0 errors in 1.5 s (0.67 images/s)",
        "  verdicts: 1 ai_generated",
        "  output: out",
        "  next: synthsieve report out",
    ]
