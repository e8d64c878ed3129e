"""What a scheduler reads, the exit code and summary.json, is true: unknown counts are said
to be unknown, refusals are one line, and nothing runs on a mistyped option."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
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


def _live_resources() -> dict[str, set[int]]:
    """What synthsieve may leave running in this process, by kind, as object ids."""
    import asyncio
    import concurrent.futures
    import gc
    import threading

    import onnxruntime as ort

    gc.collect()
    with warnings.catch_warnings():  # isinstance() on torch's deprecated aliases warns
        warnings.simplefilter("ignore")
        return _by_kind(gc.get_objects(), asyncio, concurrent.futures, threading, ort)


def _by_kind(objects, asyncio, futures, threading, ort) -> dict[str, set[int]]:
    return {
        "non-daemon threads": {id(t) for t in threading.enumerate()
                               if not t.daemon and t is not threading.main_thread()},
        "synthsieve threads": {id(t) for t in threading.enumerate()
                               if t.name.startswith("synthsieve")},
        "event loops": {id(o) for o in objects
                        if isinstance(o, asyncio.AbstractEventLoop) and not o.is_closed()},
        "executors": {id(o) for o in objects
                      if isinstance(o, futures.ThreadPoolExecutor)
                      and not o._shutdown},  # noqa: SLF001 (no public flag)
        "onnx sessions": {id(o) for o in objects if isinstance(o, ort.InferenceSession)},
    }


def test_an_audit_leaves_no_thread_loop_executor_or_session_behind(tmp_path, tiny_model):
    """Whatever is alive at interpreter exit is torn down in no set order; native thread
    pools torn down that way abort the process after a complete run."""
    src = _folder(tmp_path)
    (src / "notes.txt").write_text("not an image")
    before = _live_resources()
    assert main(["-q", "audit", str(src), "--out", str(tmp_path / "out"), "--model",
                 str(tiny_model)]) == 0
    after = _live_resources()
    left = {kind: after[kind] - before[kind] for kind in after if after[kind] - before[kind]}
    assert left == {}


def _refused(capsys, argv: list[str]) -> str:
    """Runs the CLI expecting a usage error: exit 2 and one line on stderr, which it returns."""
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own refusals exit from inside main
        code = e.code
    assert code == 2, argv
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


def test_a_mistyped_option_is_refused_with_a_suggestion_and_nothing_runs(tmp_path, tiny_model,
                                                                          capsys):
    src = _folder(tmp_path)
    out = tmp_path / "out"
    line = _refused(capsys, ["-q", "audit", str(src), "--out", str(out), "--model",
                             str(tiny_model), "--no-provenence"])
    assert line == ("synthsieve audit: unknown option --no-provenence "
                    "(did you mean --no-provenance?)")
    assert not out.exists()
    # Beam's own flags still pass, and a typo of one is caught too
    line = _refused(capsys, ["-q", "audit", str(src), "--out", str(out), "--model",
                             str(tiny_model), "--direct_num_worker=2"])
    assert "did you mean --direct_num_workers?" in line
    line = _refused(capsys, ["-q", "scrub", str(out), "--out", str(tmp_path / "s"),
                             "--polcy", "p.yaml"])
    assert "unknown option --polcy" in line and "--policy" in line


@pytest.mark.parametrize(("flag", "value"), [
    ("--api-rate", "0"), ("--api-rate", "-3"), ("--api-rate", "fast"), ("--api-timeout", "0"),
    ("--http-timeout", "-1"), ("--api-retries", "-1"), ("--http-retries", "-2"),
    ("--max-requests", "-5"), ("--batch-size", "0"), ("--max-error-rate", "2"),
    ("--api-ai-threshold", "1.5"), ("--decode-timeout", "inf"),
])
def test_numeric_options_out_of_range_are_usage_errors(tmp_path, capsys, flag, value):
    line = _refused(capsys, ["-q", "audit", str(tmp_path), "--out", str(tmp_path / "o"),
                             flag, value])
    assert line.startswith(f"synthsieve audit: argument {flag}: must be")


def test_vendor_thresholds_that_cross_are_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HIVE_API_KEY", "k")
    src = _folder(tmp_path)
    line = _refused(capsys, ["-q", "audit", str(src), "--out", str(tmp_path / "o"),
                             "--backend", "hive", "--api-ai-threshold", "0.3",
                             "--api-not-ai-threshold", "0.6"])
    assert line == ("synthsieve audit: --api-not-ai-threshold 0.6 is above "
                    "--api-ai-threshold 0.3")


@pytest.mark.parametrize(("name", "why"), [
    ("projects/My Project/subscriptions/uploads", "is not a project ID"),
    ("projects/p/subscriptions/uploads", "is not a project ID"),
    ("projects/good-project/subscriptions/goog-uploads", "is not a Pub/Sub ID"),
    ("projects/good-project/subscriptions/9uploads", "is not a Pub/Sub ID"),
    ("projects/good-project/topics/uploads", "must look like projects/PROJECT/subscriptions/"),
])
def test_invalid_pubsub_names_are_usage_errors(tmp_path, tiny_model, capsys, name, why):
    line = _refused(capsys, ["-q", "stream", "--subscription", name, "--out",
                             str(tmp_path / "o"), "--model", str(tiny_model)])
    assert line.startswith(f"synthsieve stream: --subscription {name}: ") and why in line


def test_version():
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0


def test_a_run_without_errors_still_has_an_errors_table(tmp_path, tiny_model):
    import duckdb

    src = _folder(tmp_path)
    out = tmp_path / "out"
    assert main(["-q", "audit", str(src), "--out", str(out), "--model", str(tiny_model)]) == 0
    # the README's kind of query works on a clean run
    con = duckdb.connect()
    n = con.execute(f"SELECT count(*) FROM '{out}/errors/*.parquet'").fetchone()[0]
    assert n == 0
    cols = [c[0] for c in con.execute(f"DESCRIBE SELECT * FROM '{out}/errors/*.parquet'")
            .fetchall()]
    assert "error_type" in cols and "stage" in cols
    assert con.execute(f"SELECT count(*) FROM '{out}/scores/*.parquet'").fetchone()[0] == 2


def test_dry_run_creates_nothing(tmp_path, capsys):
    src = _folder(tmp_path)
    out = tmp_path / "out"
    assert main(["-q", "audit", str(src), "--out", str(out), "--backend", "hive",
                 "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["would_send_requests"] == 2
    assert not out.exists()


def test_shared_manifest_without_the_shared_data_is_one_line_and_exit_2(tmp_path):
    import subprocess
    import sys

    script = Path(__file__).resolve().parent.parent / "scripts" / "shared_manifest.py"
    proc = subprocess.run([sys.executable, str(script), "--data", str(tmp_path / "none"),
                           "--out", str(tmp_path / "m.csv")], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"shared_manifest: {tmp_path / 'none'} is not ../shared/data (no SOURCES.csv or "
        "diverse/); pass --data"]
    assert not (tmp_path / "m.csv").exists()
