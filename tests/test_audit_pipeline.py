"""End-to-end audits through the CLI: every input ends as exactly one scores or errors row."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from corpus import encode, photo_like, write_corpus
from PIL import Image

from synthsieve.cli import main
from synthsieve.schema import ERRORS_SCHEMA, SCORES_SCHEMA


def read_table(out: Path, name: str) -> pa.Table:
    files = sorted((out / name).glob("*.parquet"))
    assert files, f"no {name} shards written"
    return pa.concat_tables([pq.read_table(f) for f in files])


def audit(*args: str) -> int:
    return main(["-q", "audit", *args])


def test_corpus_of_good_and_bad_files_each_end_in_exactly_one_row(tmp_path, tiny_model):
    expected = write_corpus(tmp_path / "corpus")
    out = tmp_path / "out"
    assert audit(str(tmp_path / "corpus"), "--out", str(out), "--model", str(tiny_model)) == 0

    scores, errors = read_table(out, "scores"), read_table(out, "errors")
    assert scores.schema.equals(SCORES_SCHEMA, check_metadata=False)
    assert errors.schema.equals(ERRORS_SCHEMA, check_metadata=False)
    seen = scores.column("uri").to_pylist() + errors.column("uri").to_pylist()
    assert sorted(seen) == sorted(expected), "inputs != scores + errors"

    err_by_uri = {r["uri"]: r for r in errors.to_pylist()}
    for uri, (outcome, detail) in expected.items():
        if outcome == "error":
            row = err_by_uri[uri]
            assert (row["stage"], row["error_type"]) == detail, (uri, row)
            assert row["message"], uri
    rows = {Path(r["uri"]).name: r for r in scores.to_pylist()}
    assert rows["exif_rotated.jpg"]["width"] == 320  # original, as stored
    assert rows["cmyk.jpg"]["format"] == "JPEG"
    assert any("animated" in w for w in rows["animated.gif"]["warnings"])
    for r in rows.values():
        assert 0.0 <= r["ai_generated"] <= 1.0
        assert r["verdict"] in ("ai_generated", "not_ai_generated", "inconclusive")
        assert r["model"] == "tiny-test@0" and r["backend"] == "onnx-cpu"
        assert len(r["sha256"]) == 64 and r["bytes"] > 0
        # these files carry no provenance: the pixels decide, and nothing is invented
        assert r["c2pa"] is None and r["xmp"] is None and r["generation_params"] is None
        assert r["provenance_source"] is None and r["evidence_verdict"] == r["verdict"]
        assert r["source_scores"] is None

    summary = json.loads((out / "summary.json").read_text())
    assert summary["inputs"] == len(expected) == summary["scores"] + summary["errors"]
    assert summary["accounted_for"] is True
    assert summary["errors_by_stage"] == {"decode": 5, "read": 1}
    assert sum(summary["verdicts"].values()) == summary["scores"]
    assert summary["model"] == "tiny-test@0" and summary["wall_s"] > 0


def test_verdict_follows_the_model_card_thresholds(tmp_path, tiny_model):
    # The tiny model is sigmoid(4 * mean normalised red): red images score high, cyan low.
    d = tmp_path / "imgs"
    d.mkdir()
    from PIL import Image

    (d / "red.png").write_bytes(encode(Image.new("RGB", (64, 64), (255, 0, 0)), "PNG"))
    (d / "cyan.png").write_bytes(encode(Image.new("RGB", (64, 64), (0, 255, 255)), "PNG"))
    (d / "grey.png").write_bytes(encode(Image.new("RGB", (64, 64), (128, 128, 128)), "PNG"))
    out = tmp_path / "out"
    assert audit(str(d), "--out", str(out), "--model", str(tiny_model)) == 0
    rows = {Path(r["uri"]).name: r for r in read_table(out, "scores").to_pylist()}
    assert rows["red.png"]["verdict"] == "ai_generated" and rows["red.png"]["ai_generated"] > 0.9
    assert rows["cyan.png"]["verdict"] == "not_ai_generated"
    assert rows["grey.png"]["verdict"] == "inconclusive"
    # the tiny model has no source head: no source label at all, whatever the verdict
    assert {r["source"] for r in rows.values()} == {None}


def _write_manifest(path: Path, rows: list[dict], fmt: str) -> None:
    if fmt == "csv":
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_manifest_carries_ids_and_extra_and_turns_bad_rows_into_errors(tmp_path, tiny_model, fmt):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    (imgs / "a.jpg").write_bytes(encode(photo_like(64, 64, seed=1), "JPEG"))
    (imgs / "b.png").write_bytes(encode(photo_like(64, 64, seed=2), "PNG"))
    gone = imgs / "deleted.png"
    gone.write_bytes(encode(photo_like(64, 64, seed=3), "PNG"))
    rows = [
        {"id": "img-a", "uri": str(imgs / "a.jpg"), "caption": "a cat", "license": "cc-by"},
        {"id": "img-b", "uri": "imgs/b.png", "caption": "relative path", "license": ""},
        {"id": "img-gone", "uri": str(gone), "caption": "deleted after listing", "license": ""},
        {"id": "img-empty", "uri": "", "caption": "no uri", "license": ""},
        {"id": "img-bad", "uri": "ht\ttp://x\x01y", "caption": "malformed", "license": ""},
        {"id": "img-ftp", "uri": "ftp://example.invalid/x.jpg", "caption": "", "license": ""},
    ]
    manifest = tmp_path / f"manifest.{fmt}"
    _write_manifest(manifest, rows, fmt)
    gone.unlink()  # listed in the manifest, gone when read
    out = tmp_path / "out"
    assert audit(str(manifest), "--out", str(out), "--model", str(tiny_model)) == 0

    scores = {r["image_id"]: r for r in read_table(out, "scores").to_pylist()}
    errors = {r["image_id"]: r for r in read_table(out, "errors").to_pylist()}
    assert sorted(scores) + sorted(errors) == ["img-a", "img-b"] + sorted(
        ["img-bad", "img-empty", "img-ftp", "img-gone"])
    assert dict(scores["img-a"]["extra"]) == {"caption": "a cat", "license": "cc-by"}
    assert scores["img-b"]["uri"] == str(imgs / "b.png")  # resolved against the manifest
    assert (errors["img-gone"]["stage"], errors["img-gone"]["error_type"]) == ("read", "not_found")
    for key in ("img-empty", "img-bad", "img-ftp"):
        assert (errors[key]["stage"], errors[key]["error_type"]) == ("read", "invalid_uri")
    assert "empty uri" in errors["img-empty"]["message"]
    assert "ftp" in errors["img-ftp"]["message"]


def test_jsonl_manifest_with_broken_lines_reports_each_line(tmp_path, tiny_model):
    img = tmp_path / "a.png"
    img.write_bytes(encode(photo_like(40, 40), "PNG"))
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"url": str(img)}) + "\n{not json\n[1, 2]\n")
    out = tmp_path / "out"
    assert audit(str(manifest), "--out", str(out), "--model", str(tiny_model)) == 0
    errors = read_table(out, "errors").to_pylist()
    assert sorted(e["error_type"] for e in errors) == ["invalid_manifest_row"] * 2
    assert read_table(out, "scores").num_rows == 1


@pytest.mark.slow
def test_directory_of_1000_files_with_two_worker_processes(tmp_path, tiny_model):
    root = tmp_path / "many"
    jpeg = encode(photo_like(48, 40, seed=11), "JPEG", quality=80)
    for i in range(1000):
        sub = root / f"d{i % 10}" / f"e{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"{i:04d}.jpg").write_bytes(jpeg if i % 100 else b"broken")
    out = tmp_path / "out"
    assert audit(str(root), "--out", str(out), "--model", str(tiny_model), "--batch-size", "32",
                 "--direct_num_workers", "2", "--direct_running_mode", "multi_processing") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["inputs"] == 1000
    assert (summary["scores"], summary["errors"]) == (990, 10)
    ids = read_table(out, "scores").column("image_id").to_pylist()
    assert len(set(ids)) == len(ids) == 990


def test_limits_on_bytes_and_pixels_make_error_rows(tmp_path, tiny_model):
    d = tmp_path / "imgs"
    d.mkdir()
    (d / "big_file.png").write_bytes(encode(photo_like(300, 300), "PNG"))
    (d / "many_pixels.jpg").write_bytes(encode(photo_like(500, 400), "JPEG", quality=30))
    out = tmp_path / "out"
    # both inputs fail: exit 4 (every input failed)
    assert audit(str(d), "--out", str(out), "--model", str(tiny_model),
                 "--max-bytes", "100000", "--max-pixels", "150000") == 4
    errors = {Path(r["uri"]).name: r for r in read_table(out, "errors").to_pylist()}
    assert (errors["big_file.png"]["stage"], errors["big_file.png"]["error_type"]) == (
        "read", "too_large")
    assert (errors["many_pixels.jpg"]["stage"], errors["many_pixels.jpg"]["error_type"]) == (
        "decode", "too_many_pixels")


def test_glob_source_and_two_runs_into_one_directory_stay_apart(tmp_path, tiny_model):
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(3):
        (d / f"{i}.png").write_bytes(encode(photo_like(40, 40, seed=i), "PNG"))
    (d / "skip.txt").write_text("not matched by the glob")
    out = tmp_path / "out"
    assert audit(str(d / "*.png"), "--out", str(out), "--model", str(tiny_model),
                 "--run-id", "first") == 0
    assert audit(str(d / "0.png"), "--out", str(out), "--model", str(tiny_model),
                 "--run-id", "second") == 0
    scores = read_table(out, "scores")
    assert sorted(scores.column("run_id").to_pylist()) == ["first"] * 3 + ["second"]
    assert json.loads((out / "summary.json").read_text())["scores"] == 1  # the last run's


def test_usage_errors_exit_2_with_a_message(tmp_path, tiny_model, capsys):
    assert audit(str(tmp_path / "nope"), "--out", str(tmp_path / "o"),
                 "--model", str(tiny_model)) == 2
    assert "not a file, directory, glob or manifest" in capsys.readouterr().err
    bad = tmp_path / "m.csv"
    bad.write_text("path,caption\nx.jpg,hi\n")
    assert audit(str(bad), "--out", str(tmp_path / "o"), "--model", str(tiny_model)) == 2
    assert "needs a 'uri' or 'url' column" in capsys.readouterr().err
    empty_model = tmp_path / "empty_model"
    empty_model.mkdir()
    assert audit(str(tmp_path), "--out", str(tmp_path / "o"), "--model", str(empty_model)) == 2
    assert "model.json" in capsys.readouterr().err


def test_uri_column_names_the_manifests_path_column(tmp_path, capsys):
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(2):
        (d / f"{i}.png").write_bytes(encode(photo_like(40, 40, seed=i), "PNG"))
    manifest = tmp_path / "m.csv"
    manifest.write_text("id,path,caption\na,imgs/0.png,first\nb,imgs/1.png,second\n")
    out = tmp_path / "out"
    assert audit(str(manifest), "--out", str(out), "--backend", "none") == 2
    assert "(--uri-column NAME names another)" in capsys.readouterr().err
    assert audit(str(manifest), "--out", str(out), "--backend", "none",
                 "--uri-column", "path") == 0
    scores = {r["image_id"]: r for r in read_table(out, "scores").to_pylist()}
    assert scores["a"]["uri"] == str(d / "0.png") and scores["b"]["uri"] == str(d / "1.png")
    assert dict(scores["b"]["extra"]) == {"caption": "second"}
    assert audit(str(manifest), "--out", str(tmp_path / "o2"), "--backend", "none",
                 "--uri-column", "file") == 2
    assert "needs a 'file' column" in capsys.readouterr().err


def test_backend_none_reads_and_decodes_without_a_model(tmp_path):
    expected = write_corpus(tmp_path / "corpus")
    out = tmp_path / "out"
    # the bundled model.json gives the decode size; its weights are never loaded
    assert audit(str(tmp_path / "corpus"), "--out", str(out), "--backend", "none") == 0
    scores, errors = read_table(out, "scores"), read_table(out, "errors")
    assert scores.num_rows + errors.num_rows == len(expected)
    rows = scores.to_pylist()
    assert all(r["ai_generated"] is None and r["verdict"] is None and r["backend"] == "none"
               for r in rows)
    assert all(r["width"] > 0 and r["sha256"] for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["backend"] == "none" and summary["model"] is None


def test_the_multi_threading_mode_that_loses_data_is_refused_in_one_line(tmp_path, tiny_model,
                                                                         capsys):
    (tmp_path / "in").mkdir()
    Image.new("RGB", (40, 40), (200, 30, 30)).save(tmp_path / "in" / "a.png")
    code = audit(str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--model",
                 str(tiny_model), "--direct_num_workers", "2", "--direct_running_mode",
                 "multi_threading")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "multi_threading loses data" in err[0]
    assert not (tmp_path / "out" / "scores").exists()


def test_exit_codes_tell_a_scheduler_what_happened(tmp_path, tiny_model, capsys):
    good = tmp_path / "good"
    good.mkdir()
    Image.new("RGB", (40, 40), (200, 30, 30)).save(good / "a.png")
    (good / "b.txt").write_text("not an image")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.txt").write_text("not an image")
    (bad / "y.txt").write_text("nor this")
    empty = tmp_path / "empty"
    empty.mkdir()
    model = ["--model", str(tiny_model)]
    # half failed: fine by default, over a 0.4 error-rate budget
    assert audit(str(good), "--out", str(tmp_path / "o1"), *model) == 0
    assert audit(str(good), "--out", str(tmp_path / "o2"), *model,
                 "--max-error-rate", "0.4") == 4
    assert "above --max-error-rate 0.4" in capsys.readouterr().err
    # every input failed: exit 4, with the most common message, its URI folded to {uri}
    assert audit(str(bad), "--out", str(tmp_path / "o3"), *model) == 4
    err = capsys.readouterr().err
    assert "every input failed (2 error rows)" in err
    assert "2 x decode/not_an_image" in err and "{uri}" not in err.split("x decode")[0]
    summary = json.loads((tmp_path / "o3" / "summary.json").read_text())
    assert summary["top_errors"][0]["count"] == 2
    # a source that lists no file: a usage error naming it, and nothing written
    assert audit(str(empty), "--out", str(tmp_path / "o4"), *model) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"synthsieve audit: {empty} lists no file"]
    assert not (tmp_path / "o4").exists()
    # out-of-range rate: refused by the parser
    with pytest.raises(SystemExit) as e:
        audit(str(good), "--out", str(tmp_path / "o5"), *model, "--max-error-rate", "1.5")
    assert e.value.code == 2


def test_out_that_is_a_file_is_refused_before_anything_runs(tmp_path, tiny_model, capsys):
    src = tmp_path / "in"
    src.mkdir()
    Image.new("RGB", (40, 40), (200, 30, 30)).save(src / "a.png")
    a_file = tmp_path / "out.txt"
    a_file.write_text("x")
    assert audit(str(src), "--out", str(a_file), "--model", str(tiny_model)) == 2
    assert capsys.readouterr().err.strip() == \
        f"synthsieve audit: --out {a_file} is a file, not a directory"


def test_out_in_an_unwritable_folder_is_refused(tmp_path, tiny_model, capsys):
    src = tmp_path / "in"
    src.mkdir()
    Image.new("RGB", (40, 40), (200, 30, 30)).save(src / "a.png")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        assert audit(str(src), "--out", str(locked / "o"), "--model", str(tiny_model)) == 2
        assert "cannot be created or written" in capsys.readouterr().err
    finally:
        locked.chmod(0o700)


def test_report_on_a_directory_without_an_audit_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "nothing").mkdir()
    assert main(["-q", "report", str(tmp_path / "nothing"), "--out",
                 str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"synthsieve report: {tmp_path / 'nothing'} holds no audit "
                   "(no summary.json or scores/)"]
