"""The Hive backend against the local Hive emulator (127.0.0.1), faults included."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from corpus import encode, good_and_bad_files, photo_like
from outputs import rows
from servers import serve_app

from synthsieve.cli import main
from synthsieve.emulators.hive import PATH, STATS, Faults, expected_scores, make_app
from synthsieve.inference.remote.hive import map_hive_output

KEY = "hive-test-key-7f3a9c0e21"


def _corpus(root: Path, n_extra: int = 0) -> dict[str, bytes]:
    root.mkdir()
    files = {name: data for name, (data, _) in good_and_bad_files().items()}
    for i in range(n_extra):
        files[f"extra{i}.png"] = encode(photo_like(48, 48, seed=100 + i), "PNG")
    for name, data in files.items():
        (root / name).write_bytes(data)
    return files


def _audit(src: Path, out: Path, url: str, *extra: str) -> int:
    return main(["-q", "audit", str(src), "--out", str(out), "--backend", "hive",
                 "--api-url", url + PATH, *extra])


def test_hive_scores_map_into_the_schema_and_bad_files_are_never_sent(tmp_path, monkeypatch,
                                                                     caplog, capsys):
    monkeypatch.setenv("HIVE_API_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    app = make_app(KEY, Faults())
    files = _corpus(tmp_path / "imgs")
    out = tmp_path / "out"
    with serve_app(app) as url:
        assert _audit(tmp_path / "imgs", out, url, "--api-rate", "200") == 0
    scores = {Path(r["uri"]).name: r for r in rows(out, "scores")}
    errors = {Path(r["uri"]).name: r for r in rows(out, "errors")}
    assert len(scores) + len(errors) == len(files)
    assert app[STATS]["requests"] == len(scores)  # decode errors cost no request
    for name, row in scores.items():
        ai, source, deepfake = expected_scores(files[name])
        assert row["ai_generated"] == pytest.approx(ai, abs=1e-6)
        assert row["deepfake"] == pytest.approx(deepfake, abs=1e-6)
        assert (row["model"], row["backend"]) == ("hive-ai-generated-image-detection@v2",
                                                  "hive")
        assert sum(dict(row["source_scores"]).values()) == pytest.approx(1.0, abs=1e-5)
        if row["verdict"] == "ai_generated":
            assert row["source"] == source and row["source_score"] == pytest.approx(ai)
        elif row["verdict"] == "not_ai_generated":
            assert row["source"] == "none"
    # the key is never written or logged
    written = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())
    assert KEY.encode() not in written
    assert KEY not in caplog.text and KEY not in capsys.readouterr().out


@pytest.mark.slow
def test_every_image_ends_scored_through_429s_5xx_and_malformed_answers(tmp_path, monkeypatch):
    monkeypatch.setenv("HIVE_API_KEY", KEY)
    app = make_app(KEY, Faults(rate_limit_per_s=15, error_rate=0.15, malformed_rate=0.05,
                               seed=3))
    files = _corpus(tmp_path / "imgs", n_extra=30)
    out = tmp_path / "out"
    with serve_app(app) as url:
        assert _audit(tmp_path / "imgs", out, url, "--api-rate", "40",
                      "--api-retries", "10") == 0
    scores, errors = rows(out, "scores"), rows(out, "errors")
    assert len(scores) + len(errors) == len(files)
    assert all(e["stage"] == "decode" or e["stage"] == "read" for e in errors), errors
    stats = app[STATS]
    assert stats["rate_limited"] > 0 and stats["errors"] > 0
    assert stats["ok"] >= len(scores)


def test_an_input_the_api_refuses_is_an_error_row_not_retried(tmp_path, monkeypatch):
    monkeypatch.setenv("HIVE_API_KEY", KEY)
    app = make_app(KEY, Faults(max_bytes=20_000))
    d = tmp_path / "imgs"
    d.mkdir()
    (d / "small.png").write_bytes(encode(photo_like(32, 32), "PNG"))
    (d / "large.png").write_bytes(encode(photo_like(400, 300, seed=2), "PNG"))
    out = tmp_path / "out"
    with serve_app(app) as url:
        assert _audit(d, out, url) == 0
    [err] = rows(out, "errors")
    assert (err["stage"], err["error_type"], err["attempts"]) == ("api", "http_400", 1)
    assert "larger than 20000 bytes" in err["message"]
    assert app[STATS]["requests"] == 2


def test_a_rejected_key_stops_the_job_with_a_clear_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HIVE_API_KEY", "not-the-key-55aa")
    app = make_app(KEY, Faults())
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(5):
        (d / f"{i}.png").write_bytes(encode(photo_like(32, 32, seed=i), "PNG"))
    with serve_app(app) as url:
        assert _audit(d, tmp_path / "out", url) == 3
    err = capsys.readouterr().err
    assert "HTTP 401" in err and "check the API key" in err
    assert "not-the-key-55aa" not in err
    # one clean line, not the runner's tracebacks of every bundle that met the 401
    assert len(err.strip().splitlines()) == 1, err[:2000]
    assert not rows(tmp_path / "out", "errors")  # no corpus of error rows
    # a missing key is a usage error, said before anything runs
    monkeypatch.delenv("HIVE_API_KEY")
    assert _audit(d, tmp_path / "out2", "http://127.0.0.1:9") == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "synthsieve audit: HIVE_API_KEY not set: the hive backend reads its credentials from "
        "the environment"]
    assert not (tmp_path / "out2").exists()


def test_hive_output_mapping_follows_the_taxonomy():
    output = {"classes": [
        {"class": "not_ai_generated", "score": 0.05}, {"class": "ai_generated", "score": 0.95},
        {"class": "flux", "score": 0.7}, {"class": "midjourney", "score": 0.1},
        {"class": "brand_new_generator", "score": 0.1}, {"class": "none", "score": 0.1},
        {"class": "deepfake", "score": 0.02}],
        "algorithmic_tags": {"c2pa": {"claim_generator": "ChatGPT",
                                      "actions_software_agent": "GPT-4o",
                                      "actions_action": "c2pa.created",
                                      "actions_digital_source_type": "trainedAlgorithmicMedia"},
                             "xmp": {"credit": "", "digital_source_type": ""},
                             "exif": {"make": ""}}}
    m = map_hive_output(output, 0.8, 0.2)
    assert (m["verdict"], m["source"], m["source_score"]) == ("ai_generated", "flux", 0.7)
    assert m["source_scores"]["other_image_generators"] == pytest.approx(0.1)
    assert "brand_new_generator" not in m["source_scores"]
    assert m["deepfake"] == 0.02
    assert m["c2pa"]["validation_state"] == "vendor_reported"
    assert m["c2pa"]["software_agent"] == "GPT-4o" and m["xmp"] is None
    low = map_hive_output({"classes": [{"class": "ai_generated", "score": 0.1},
                                       {"class": "none", "score": 1.0}]}, 0.8, 0.2)
    assert (low["verdict"], low["source"], low["source_score"]) == (
        "not_ai_generated", "none", None)
    json.dumps(m)  # plain data only


def _five_images(d: Path) -> Path:
    d.mkdir()
    for i in range(5):
        (d / f"{i}.png").write_bytes(encode(photo_like(32, 32, seed=i), "PNG"))
    return d


def test_api_url_may_be_the_base_url_and_a_wrong_path_stops_the_job(tmp_path, monkeypatch,
                                                                    capsys):
    monkeypatch.setenv("HIVE_API_KEY", KEY)
    app = make_app(KEY, Faults())
    d = _five_images(tmp_path / "imgs")
    with serve_app(app) as url:
        # the natural guess, the service's base URL: the endpoint's path is added
        assert main(["-q", "audit", str(d), "--out", str(tmp_path / "base"), "--backend",
                     "hive", "--api-url", url]) == 0
        assert len(rows(tmp_path / "base", "scores")) == 5
        capsys.readouterr()
        # a path that is not the endpoint: every answer is 404, so stop as for a bad key
        assert main(["-q", "audit", str(d), "--out", str(tmp_path / "wrong"), "--backend",
                     "hive", "--api-url", url + "/api/v3/detect"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "answered HTTP 404 to the first 3 requests" in err[0], err


def test_vendor_verdict_thresholds_are_options_and_recorded_in_the_summary(tmp_path,
                                                                           monkeypatch):
    monkeypatch.setenv("HIVE_API_KEY", KEY)
    d = _five_images(tmp_path / "imgs")
    with serve_app(make_app(KEY, Faults())) as url:
        assert _audit(d, tmp_path / "default", url) == 0
        assert _audit(d, tmp_path / "all", url, "--api-ai-threshold", "0",
                      "--api-not-ai-threshold", "0") == 0
    default = json.loads((tmp_path / "default" / "summary.json").read_text())
    assert default["thresholds"] == {"ai_generated": 0.8, "not_ai_generated": 0.2}
    everything = json.loads((tmp_path / "all" / "summary.json").read_text())
    assert everything["thresholds"] == {"ai_generated": 0.0, "not_ai_generated": 0.0}
    assert everything["verdicts"] == {"ai_generated": 5}  # every score is >= 0


def test_a_rejected_key_prints_one_line_and_no_traceback_from_the_command(tmp_path):
    """As a scheduler sees it: the process's whole stderr, logging included."""
    d = _five_images(tmp_path / "imgs")
    env = {**os.environ, "HIVE_API_KEY": "wrong-key-9f9f"}
    with serve_app(make_app(KEY, Faults())) as url:
        proc = subprocess.run(
            [sys.executable, "-m", "synthsieve", "-q", "audit", str(d), "--out",
             str(tmp_path / "out"), "--backend", "hive", "--api-url", url],
            capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 3
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("synthsieve audit: hive answered HTTP 401")
    assert "wrong-key-9f9f" not in proc.stderr


def test_api_rows_leave_as_answers_come_and_keep_their_own_window(monkeypatch):
    """Calls are not batched: a row leaves when its answer is in, often while another
    element is being processed, and must still land in its own element's window."""
    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to
    from apache_beam.transforms.window import FixedWindows, TimestampedValue

    from synthsieve.elements import ImageInfo, ImageRef
    from synthsieve.inference.remote import ApiConfig
    from synthsieve.inference.remote.base import RemoteApiModelHandler
    from synthsieve.inference.remote.hive import HiveBackend
    from synthsieve.io.http import close_http
    from synthsieve.transforms.score import ScoreRemote

    monkeypatch.setenv("HIVE_API_KEY", KEY)
    data = encode(photo_like(40, 40), "PNG")
    elements = [(i * 10.0, ImageInfo(ImageRef(f"mem://{i}.png", f"id{i}"), "x", len(data),
                                     40, 40, "PNG")) for i in range(12)]
    with serve_app(make_app(KEY, Faults(latency_ms=50))) as url:
        cfg = ApiConfig(backend="hive", url=url + PATH, key_env=("HIVE_API_KEY",),
                        rate_per_s=200, max_in_flight=8)
        handler = RemoteApiModelHandler(HiveBackend, cfg, batch_size=4)

        class _WindowStart(beam.DoFn):
            def process(self, row, window=beam.DoFn.WindowParam):
                yield row["image_id"], int(window.start)

        try:
            with beam.Pipeline() as p:
                rows = (p
                        | beam.Create(elements)
                        | beam.Map(lambda e: TimestampedValue(
                            (e[1], (data, e[1].ref.uri)), e[0]))
                        | beam.WindowInto(FixedWindows(10))
                        | ScoreRemote(handler, "run"))
                assert_that(rows["scores"] | beam.ParDo(_WindowStart()),
                            equal_to([(f"id{i}", i * 10) for i in range(12)]))
                assert_that(rows["errors"], equal_to([]), label="no errors")
        finally:
            close_http()


def test_the_handler_also_serves_beams_run_inference(monkeypatch):
    """synthsieve's jobs submit calls one by one; the handler still works as a Beam
    RemoteModelHandler for a user's own RunInference."""
    import apache_beam as beam
    from apache_beam.ml.inference.base import RunInference
    from apache_beam.testing.util import assert_that, equal_to

    from synthsieve.inference.remote import ApiConfig
    from synthsieve.inference.remote.base import RemoteApiModelHandler
    from synthsieve.inference.remote.hive import HiveBackend
    from synthsieve.io.http import close_http

    monkeypatch.setenv("HIVE_API_KEY", KEY)
    data = encode(photo_like(40, 40), "PNG")
    with serve_app(make_app(KEY, Faults())) as url:
        cfg = ApiConfig(backend="hive", url=url + PATH, key_env=("HIVE_API_KEY",),
                        rate_per_s=200)
        handler = RemoteApiModelHandler(HiveBackend, cfg, batch_size=4)
        try:
            with beam.Pipeline() as p:
                verdicts = (p
                            | beam.Create([(data, f"mem://{i}.png") for i in range(6)])
                            | RunInference(handler)
                            | beam.Map(lambda r: (r.inference.error_type,
                                                  r.inference.columns["verdict"] is not None)))
                assert_that(verdicts, equal_to([(None, True)] * 6))
        finally:
            close_http()
