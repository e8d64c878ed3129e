"""What a scheduler reads, the exit code and summary.json, is true: unknown counts are said
to be unknown, refusals are one line, and nothing runs on a mistyped option."""

from __future__ import annotations

import json
import warnings
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
