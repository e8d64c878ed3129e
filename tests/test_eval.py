"""`synthsieve eval` end to end on a generated labelled corpus, and its perturbations."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from corpus import encode, photo_like
from PIL import Image

from synthsieve.cli import main
from synthsieve.evaluation.perturb import CONDITIONS, center_crop, half, png_to_jpeg


def _write_manifest(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def _labelled_corpus(root: Path) -> Path:
    """Red-ish images labelled AI, cyan-ish real: the tiny model separates them perfectly."""
    rows = []
    for i in range(12):
        colour = (200 + i * 4, 40, 40) if i % 2 else (40, 200, 200 - i * 5)
        path = root / f"{i}.{'png' if i % 3 else 'jpg'}"
        Image.new("RGB", (96 + 8 * i, 80), colour).save(path)
        rows.append({"uri": str(path), "label": "ai" if i % 2 else "real",
                     "generator": "redgen" if i % 2 else ""})
    (root / "broken.png").write_bytes(b"not a png")
    rows.append({"uri": str(root / "broken.png"), "label": "ai", "generator": "redgen"})
    rows.append({"uri": str(root / "0.jpg"), "label": "maybe", "generator": ""})
    return _write_manifest(root / "labelled.csv", rows)


def test_eval_writes_json_and_html_and_prints_auc_last(tmp_path, tiny_model, capsys):
    manifest = _labelled_corpus(tmp_path)
    out = tmp_path / "eval"
    assert main(["-q", "eval", str(manifest), "--out", str(out), "--model", str(tiny_model),
                 "--group-column", "generator"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1] == "ROC-AUC 1.0"
    report = json.loads((out / "eval.json").read_text())
    assert report["overall"]["n"] == 12 and report["overall"]["n_ai"] == 6
    assert report["rows_unlabelled"] == len(CONDITIONS)  # the "maybe" row, per condition
    assert report["errors"] == len(CONDITIONS)  # the broken file, once per condition
    assert set(report["robustness"]) == set(CONDITIONS)
    assert all(m["roc_auc"] == 1.0 for m in report["robustness"].values())
    assert report["by_group"]["redgen"]["ai_generated"] == 1.0
    assert set(report["by_format"]) == {"JPEG", "PNG"}
    assert report["overall"]["confusion"]["real_as_ai"] == 0
    html = (out / "eval.html").read_text()
    assert html.count("data:image/png;base64,") == 3
    assert "Robustness" in html and "center_crop" in html
    # 12 labelled images: the page says a reliability curve from them means little
    assert "Reliability: 12 labelled images are too few to judge calibration" in html


def test_eval_refuses_a_manifest_without_labels(tmp_path, tiny_model, capsys):
    img = tmp_path / "a.png"
    img.write_bytes(encode(photo_like(40, 40), "PNG"))
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"uri\n{img}\n")
    assert main(["-q", "eval", str(manifest), "--out", str(tmp_path / "o"),
                 "--model", str(tiny_model), "--conditions", "as_is"]) == 2
    assert "usable 'label' label" in capsys.readouterr().err


def test_perturbations_do_what_they_say():
    png = encode(photo_like(200, 100), "PNG")
    jpeg = encode(photo_like(200, 100), "JPEG")
    assert Image.open(io.BytesIO(half(png))).size == (100, 50)
    assert Image.open(io.BytesIO(half(png))).format == "PNG"
    assert Image.open(io.BytesIO(center_crop(jpeg))).size == (140, 70)
    assert Image.open(io.BytesIO(center_crop(jpeg))).format == "JPEG"
    assert png_to_jpeg(jpeg) is jpeg
    assert Image.open(io.BytesIO(png_to_jpeg(png))).format == "JPEG"
    for name, fn in CONDITIONS.items():
        if fn is not None:
            assert Image.open(io.BytesIO(fn(png))).size[0] > 0, name


@pytest.mark.parametrize("bad", ["nope"])
def test_unknown_condition_is_a_usage_error(tmp_path, tiny_model, capsys, bad):
    manifest = _labelled_corpus(tmp_path)
    assert main(["-q", "eval", str(manifest), "--out", str(tmp_path / "o"),
                 "--model", str(tiny_model), "--conditions", bad]) == 2
    assert "unknown conditions" in capsys.readouterr().err


def _kinds_corpus(root: Path, ai_format: str = "PNG", real_format: str = "PNG") -> Path:
    """AI images (red) of one generator, real photos (cyan) and real art (pink, scored
    between the two by the tiny model), each with a `kind` column."""
    rows = []
    specs = ([("ai", "gen-a", (230, 40, 40), ai_format)] * 6
             + [("real", "photo", (40, 200, 200), real_format)] * 6
             + [("real", "art", (140, 60, 90), real_format)] * 4)
    for i, (label, kind, colour, fmt) in enumerate(specs):
        path = root / f"{kind}{i}.{'jpg' if fmt == 'JPEG' else 'png'}"
        Image.new("RGB", (80 + i, 64), colour).save(path, fmt)
        rows.append({"uri": str(path), "label": label, "kind": kind})
    return _write_manifest(root / "kinds.csv", rows)


def test_eval_reports_every_group_real_ones_included_with_verdict_shares_and_auc(
        tmp_path, tiny_model):
    manifest = _kinds_corpus(tmp_path)
    out = tmp_path / "eval"
    assert main(["-q", "eval", str(manifest), "--out", str(out), "--model", str(tiny_model),
                 "--group-column", "kind", "--conditions", "as_is"]) == 0
    report = json.loads((out / "eval.json").read_text())
    groups = report["by_group"]
    assert set(groups) == {"gen-a", "photo", "art"}
    assert groups["gen-a"]["n"] == 6 and groups["gen-a"]["n_ai"] == 6
    assert groups["gen-a"]["auc_against"] == "all real" and groups["gen-a"]["roc_auc"] == 1.0
    assert groups["photo"]["auc_against"] == "all AI" and groups["photo"]["n_real"] == 6
    # pink art scores between cyan photos and red AI: not called AI, still ranked below AI
    assert groups["art"]["ai_generated"] == 0.0
    assert groups["art"]["roc_auc"] == 1.0
    for g in groups.values():
        assert g["ai_generated"] + g["inconclusive"] + g["not_ai_generated"] == \
            pytest.approx(1.0, abs=1e-3)
    worst_real = report["worst"]["real_scored_highest"]
    assert worst_real[0]["group"] == "art"  # the real images closest to AI come first
    assert report["worst"]["ai_scored_lowest"][0]["label"] == 1
    assert report["warnings"] == []
    html = (out / "eval.html").read_text()
    assert "By kind" in html and "Worst mistakes" in html
    # local files get thumbnails in the gallery
    assert html.count("data:image/jpeg;base64,") >= len(worst_real)


def test_eval_warns_when_file_format_alone_predicts_the_label(tmp_path, tiny_model, caplog):
    manifest = _kinds_corpus(tmp_path, ai_format="PNG", real_format="JPEG")
    out = tmp_path / "eval"
    assert main(["-q", "eval", str(manifest), "--out", str(out), "--model", str(tiny_model),
                 "--conditions", "as_is"]) == 0
    report = json.loads((out / "eval.json").read_text())
    assert len(report["warnings"]) == 1
    assert "file format predicts the label" in report["warnings"][0]
    assert "PNG: 100% AI" in report["warnings"][0]
    assert "file format predicts the label" in (out / "eval.html").read_text()


def test_eval_counts_the_verdict_the_model_wrote_not_one_rederived_from_thresholds():
    from synthsieve.evaluation import metrics

    # one AI image scored 0.95 but written inconclusive (the model abstained)
    c = metrics.summary([1, 0], [0.95, 0.1], 0.3, 0.7,
                        ["inconclusive", "not_ai_generated"])["confusion"]
    assert c["ai_as_ai"] == 0 and c["ai_as_inconclusive"] == 1
    assert metrics.summary([1, 0], [0.95, 0.1], 0.3, 0.7)["confusion"]["ai_as_ai"] == 1


A1111_SDXL = ("a lighthouse at dusk\nSteps: 30, Sampler: DPM++ 2M, CFG scale: 7, Seed: 1, "
              "Size: 64x64, Model: sd_xl_base_1.0, Version: v1.9.4")


def _provenance_corpus(root: Path) -> Path:
    """Two AI images whose PNG text names their generator, two real ones without any."""
    from PIL.PngImagePlugin import PngInfo

    rows = []
    for i in range(4):
        ai = i % 2 == 1
        path = root / f"p{i}.png"
        info = PngInfo()
        if ai:
            info.add_text("parameters", A1111_SDXL)
        Image.new("RGB", (64 + i, 64), (230, 40, 40) if ai else (40, 200, 200)).save(
            path, pnginfo=info)
        rows.append({"uri": str(path), "label": "ai" if ai else "real"})
    return _write_manifest(root / "prov.csv", rows)


def test_eval_reads_provenance_like_the_audit(tmp_path, tiny_model):
    from synthsieve.pipelines.evaluate import EvalConfig, run_eval

    manifest = _provenance_corpus(tmp_path)
    report = run_eval(EvalConfig(manifest=str(manifest), out_dir=str(tmp_path / "e"),
                                 model_dir=str(tiny_model), conditions=("as_is",)))
    assert report["evidence"]["provenance_sources"] == {"stablediffusionxl": 2}
    assert report["evidence"]["evidence_verdicts"]["ai_generated"] >= 2
    without = run_eval(EvalConfig(manifest=str(manifest), out_dir=str(tmp_path / "n"),
                                  model_dir=str(tiny_model), conditions=("as_is",),
                                  provenance=None))
    assert without["evidence"] == {"provenance_sources": {}, "evidence_verdicts": {}}


def test_eval_turns_a_decode_past_its_time_limit_into_a_timeout_row(tmp_path, tiny_model,
                                                                     monkeypatch):
    import threading

    from synthsieve.pipelines.evaluate import EvalConfig, run_eval
    from synthsieve.transforms import decode

    manifest = _provenance_corpus(tmp_path)
    stalled = tmp_path / "p0.png"
    released = threading.Event()
    real = decode.prepare

    def stalling(data, *args, **kwargs):  # a stand-in for a file that stalls the decoder
        if data == stalled.read_bytes():
            released.wait(30)
        return real(data, *args, **kwargs)

    monkeypatch.setattr(decode, "prepare", stalling)
    try:
        report = run_eval(EvalConfig(manifest=str(manifest), out_dir=str(tmp_path / "e"),
                                     model_dir=str(tiny_model), conditions=("as_is",),
                                     decode_timeout_s=0.5))
    finally:
        released.set()
    assert report["errors_by_type"] == {"timeout": 1}
    assert report["rows_scored"] == 3 and report["accounted_for"] is True


def test_eval_counts_its_inputs_and_checks_every_one_has_its_rows(tmp_path, tiny_model):
    from synthsieve.pipelines.evaluate import accounting

    manifest = _labelled_corpus(tmp_path)
    with open(manifest, "a") as f:  # a file that is not there: one read error, no variants
        f.write(f"{tmp_path / 'gone.png'},ai,redgen\n")
    out = tmp_path / "eval"
    assert main(["-q", "eval", str(manifest), "--out", str(out), "--model", str(tiny_model),
                 "--conditions", "as_is,half"]) == 0
    report = json.loads((out / "eval.json").read_text())
    assert report["inputs"] == 15
    assert report["expected_rows"] == 14 * 2 + 1 == report["rows"]
    assert report["accounted_for"] is True
    # a row short, or the count unknown, is said so
    read_error = [{"stage": "read"}]
    assert accounting(15, 2, 27, read_error)["accounted_for"] is False
    assert accounting(None, 2, 28, read_error)["accounted_for"] is None
