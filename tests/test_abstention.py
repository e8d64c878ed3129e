"""A model that measures distance to its training data abstains on far-away images, and the
spec option that keeps pixel-level detail for the bundled model's 224 px crop."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import build_tiny_model
from outputs import table
from PIL import Image

from synthsieve.cli import main
from synthsieve.inference.outputs import OUT_OF_DISTRIBUTION, interpret, verdict_columns
from synthsieve.inference.spec import ModelSpec, ModelSpecError


def test_an_image_far_from_the_training_data_is_inconclusive_with_a_warning(tmp_path):
    model = build_tiny_model(tmp_path / "model", ood=True)
    (tmp_path / "in").mkdir()
    # both red (the tiny model scores red as AI); one is also very green: too far
    Image.new("RGB", (48, 48), (240, 20, 20)).save(tmp_path / "in" / "near.png")
    Image.new("RGB", (48, 48), (240, 250, 20)).save(tmp_path / "in" / "far.png")
    out = tmp_path / "out"
    assert main(["-q", "audit", str(tmp_path / "in"), "--out", str(out),
                 "--model", str(model)]) == 0
    rows = {r["uri"].rsplit("/", 1)[-1]: r for r in table(out, "scores").to_pylist()}
    assert rows["near.png"]["verdict"] == "ai_generated"
    assert OUT_OF_DISTRIBUTION not in rows["near.png"]["warnings"]
    far = rows["far.png"]
    assert far["verdict"] == "inconclusive" and OUT_OF_DISTRIBUTION in far["warnings"]
    assert far["ai_generated"] > 0.9  # the score is kept; only the verdict abstains
    assert far["source"] is None and far["source_score"] is None  # this model has no source head


def test_source_columns_are_null_without_a_source_head_and_labelled_with_one():
    no_head = verdict_columns(0.95, 0.7, 0.3, None)
    assert no_head["verdict"] == "ai_generated"
    assert (no_head["source"], no_head["source_score"], no_head["source_scores"]) == (
        None, None, None)
    head = {"midjourney": 0.8, "dalle": 0.2}
    assert verdict_columns(0.95, 0.7, 0.3, head)["source"] == "midjourney"
    assert verdict_columns(0.5, 0.7, 0.3, head)["source"] == "inconclusive"
    assert verdict_columns(0.1, 0.7, 0.3, head)["source"] == "none"


def test_a_non_finite_distance_is_a_bad_model_output_not_a_verdict(tmp_path):
    spec = ModelSpec.load(build_tiny_model(tmp_path / "m", ood=True))
    with pytest.raises(ValueError, match="not finite"):
        interpret({"prob": np.array([0.9]), "dist": np.array([np.nan])}, spec)


def test_distance_output_and_threshold_must_come_together(tmp_path):
    model = build_tiny_model(tmp_path / "m", ood=True)
    raw = json.loads((model / "model.json").read_text())
    del raw["thresholds"]["out_of_distribution"]
    with pytest.raises(ModelSpecError, match="go together"):
        ModelSpec.from_dict(raw, str(model))


@pytest.mark.parametrize(("size", "expected"), [
    ((1200, 900), (597, 448)),  # large: brought down to 448 on the shorter side, not 224
    ((400, 300), (400, 300)),  # between 224 and 448: left at its own pixels
    ((150, 100), (336, 224)),  # small: enlarged to the input size
])
def test_shorter_side_max_keeps_pixels_before_the_centre_crop(tmp_path, monkeypatch, size,
                                                               expected):
    raw = json.loads((build_tiny_model(tmp_path / "m", size=224) / "model.json").read_text())
    raw["preprocess"]["shorter_side_max"] = 448
    spec = ModelSpec.from_dict(raw, str(tmp_path / "m"))
    resized = []
    real_resize = Image.Image.resize

    def spy(self, new_size, *a, **kw):
        resized.append(tuple(new_size))
        return real_resize(self, new_size, *a, **kw)

    monkeypatch.setattr(Image.Image, "resize", spy)
    out = spec.resize_crop(Image.new("RGB", size, (10, 20, 30)))
    assert out.size == (224, 224)
    assert (resized[0] if resized else size) == expected
    assert spec.decode_min_size == (448, 448)


def test_shorter_side_max_below_the_input_size_is_refused(tmp_path):
    raw = json.loads((build_tiny_model(tmp_path / "m", size=224) / "model.json").read_text())
    raw["preprocess"]["shorter_side_max"] = 100
    with pytest.raises(ModelSpecError, match="shorter_side_max"):
        ModelSpec.from_dict(raw, str(tmp_path / "m"))
