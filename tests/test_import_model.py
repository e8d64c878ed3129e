"""`synthsieve import-model` on ONNX detectors built in the test, and the errors it gives."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from corpus import encode, photo_like

from synthsieve.cli import main
from synthsieve.inference.importer import ImportModelError, import_model

SAMPLE = Path(__file__).resolve().parents[1] / "sample"


def make_onnx(path: Path, n_out: int, size: int = 32, nan: bool = False,
              output: str = "logits") -> Path:
    """GlobalAveragePool -> Flatten -> Gemm: a real, tiny image classifier with static HxW."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(n_out)
    w = rng.normal(0, 2, (3, n_out)).astype(np.float32)
    nodes = [helper.make_node("GlobalAveragePool", ["image"], ["gap"]),
             helper.make_node("Flatten", ["gap"], ["flat"]),
             helper.make_node("MatMul", ["flat", "w"], ["mm" if nan else output])]
    inits = [numpy_helper.from_array(w, "w")]
    if nan:  # 0/0 on every output
        inits.append(numpy_helper.from_array(np.zeros((1, n_out), np.float32), "zero"))
        nodes += [helper.make_node("Mul", ["mm", "zero"], ["z"]),
                  helper.make_node("Div", ["z", "zero"], [output])]
    graph = helper.make_graph(
        nodes, "clf",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N", n_out])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


CFG = {"name": "mine", "version": "7", "input": {"size": [32, 32]},
       "preprocess": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}


def test_binary_logit_detector_imports_and_audits(tmp_path):
    src = make_onnx(tmp_path / "d.onnx", 1)
    cfg = {**CFG, "output": {"kind": "logit"},
           "thresholds": {"ai_generated": 0.7, "not_ai_generated": 0.3}}
    cfg_file = tmp_path / "d.yaml"
    import yaml

    cfg_file.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "model"
    assert main(["-q", "import-model", str(src), "--out", str(out), "--config", str(cfg_file),
                 "--sample", str(SAMPLE)]) == 0
    spec = json.loads((out / "model.json").read_text())
    assert spec["outputs"] == {"ai_generated": "ai_generated", "source": None}
    assert spec["input"]["name"] == "image" and spec["thresholds"]["ai_generated"] == 0.7
    audit_out = tmp_path / "audit"
    assert main(["-q", "audit", str(SAMPLE), "--out", str(audit_out), "--model", str(out)]) == 0
    rows = pa.concat_tables(
        [pq.read_table(f) for f in (audit_out / "scores").glob("*.parquet")]).to_pylist()
    assert rows and all(r["model"] == "mine@7" and 0 <= r["ai_generated"] <= 1 for r in rows)


def test_multiclass_detector_gets_a_source_head_in_the_taxonomy(tmp_path):
    src = make_onnx(tmp_path / "m.onnx", 4)
    cfg = {**CFG, "output": {"name": "logits", "kind": "softmax",
                             "classes": ["Real", "stablediffusion", "Midjourney", "mystery"]}}
    result = import_model(src, tmp_path / "model", cfg)
    assert result["source_classes"] == ["stablediffusion", "midjourney",
                                        "other_image_generators"]
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(6):
        (d / f"{i}.png").write_bytes(encode(photo_like(40, 40, seed=i), "PNG"))
    out = tmp_path / "audit"
    assert main(["-q", "audit", str(d), "--out", str(out), "--model", str(tmp_path / "model")]) == 0
    rows = pq.read_table(next((out / "scores").glob("*.parquet"))).to_pylist()
    for r in rows:
        scores = dict(r["source_scores"])
        assert set(scores) == set(result["source_classes"])
        assert sum(scores.values()) == pytest.approx(1.0, abs=1e-4)
        if r["verdict"] == "ai_generated":
            assert r["source"] == max(scores, key=scores.get)
        else:
            assert r["source"] in ("none", "inconclusive") and r["source_score"] is None


def test_wrong_input_size_is_named(tmp_path):
    src = make_onnx(tmp_path / "d.onnx", 1, size=32)
    cfg = {**CFG, "input": {"size": [224, 224]}, "output": {"kind": "logit"}}
    with pytest.raises(ImportModelError, match="expects 32x32 pixels but the config says"):
        import_model(src, tmp_path / "model", cfg)


def test_missing_output_lists_the_real_ones(tmp_path):
    src = make_onnx(tmp_path / "d.onnx", 1)
    cfg = {**CFG, "output": {"name": "prob", "kind": "probability"}}
    with pytest.raises(ImportModelError, match=r"no output 'prob'; its outputs are \['logits'\]"):
        import_model(src, tmp_path / "model", cfg)


def test_nan_outputs_are_caught_on_the_sample_and_leave_nothing_behind(tmp_path):
    src = make_onnx(tmp_path / "d.onnx", 2, nan=True)
    cfg = {**CFG, "output": {"kind": "softmax", "classes": ["real", "fake"]}}
    with pytest.raises(ImportModelError, match="NaN"):
        import_model(src, tmp_path / "model", cfg)
    assert not (tmp_path / "model").exists()


def test_logits_declared_as_probabilities_are_refused(tmp_path, capsys):
    src = make_onnx(tmp_path / "d.onnx", 1)
    cfg_file = tmp_path / "c.json"
    cfg_file.write_text(json.dumps({**CFG, "output": {"kind": "probability"}}))
    assert main(["-q", "import-model", str(src), "--out", str(tmp_path / "model"),
                 "--config", str(cfg_file)]) == 2
    assert "not a probability" in capsys.readouterr().err


def test_unclear_real_class_and_bad_files_are_usage_errors(tmp_path):
    src = make_onnx(tmp_path / "d.onnx", 2)
    with pytest.raises(ImportModelError, match="real_class"):
        import_model(src, tmp_path / "m1", {**CFG, "output": {"kind": "softmax",
                                                               "classes": ["a", "b"]}})
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not onnx")
    with pytest.raises(ImportModelError, match="not a valid ONNX model"):
        import_model(junk, tmp_path / "m2", {**CFG, "output": {"kind": "logit"}})


def test_pytorch_module_is_exported(tmp_path):
    try:
        import torch
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("torch must be installed in CI (.ci/run installs the torch extra)")
        pytest.skip("torch not installed (the `torch` extra)")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(x.mean(dim=(2, 3)))

    path = tmp_path / "net.pt"
    torch.jit.save(torch.jit.script(Net()), str(path))
    result = import_model(path, tmp_path / "model",
                          {**CFG, "output": {"kind": "softmax", "classes": ["real", "ai"]}})
    assert result["validation"]["images"] > 0


def make_quantised_attention(path: Path, size: int = 32) -> Path:
    """A dynamically quantised detector with a softmax between two quantised products (the
    bundled model's pattern), quantised by ONNX Runtime's own tool to INT8 weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    rng = np.random.default_rng(3)
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["image"], ["gap"]),
         helper.make_node("Flatten", ["gap"], ["flat"]),
         helper.make_node("MatMul", ["flat", "w1"], ["scores"]),
         helper.make_node("Softmax", ["scores"], ["attention"], axis=-1),
         helper.make_node("MatMul", ["attention", "w2"], ["logits"])],
        "attention",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1])],
        [numpy_helper.from_array(rng.normal(0, 4, (3, 16)).astype(np.float32), "w1"),
         numpy_helper.from_array(rng.normal(0, 4, (16, 1)).astype(np.float32), "w2")])
    float_path = path.with_suffix(".float.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]),
              str(float_path))
    quantize_dynamic(str(float_path), str(path), weight_type=QuantType.QInt8)
    return path


def test_a_quantised_detector_is_made_to_score_alike_on_every_cpu(tmp_path):
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    src = make_quantised_attention(tmp_path / "q.onnx")
    before = onnx.load(str(src))
    assert "Softmax" in [n.op_type for n in before.graph.node]
    out = tmp_path / "model"
    import_model(src, out, {**CFG, "output": {"kind": "logit"}}, SAMPLE)
    spec = json.loads((out / "model.json").read_text())
    assert spec["imported"]["cpu_portable"] == {"uint8_weights": 2, "int8_weights_left": 0,
                                                "softmax_written_out": 1}
    after = onnx.load(str(out / "model.onnx"))
    assert "Softmax" not in [n.op_type for n in after.graph.node]
    inits = {i.name: numpy_helper.to_array(i) for i in after.graph.initializer}
    weights = [inits[n.input[1]] for n in after.graph.node if n.op_type == "MatMulInteger"]
    assert len(weights) == 2 and all(w.dtype == np.uint8 for w in weights)
    # The same arithmetic but for the softmax's last bit, which the next quantisation may
    # round into another code on some CPU: a code of 1/255 times a weight of this model (at
    # most about 10) moves the logit by 0.04 and the probability by 0.01.
    x = np.random.default_rng(0).normal(0, 1, (8, 3, 32, 32)).astype(np.float32)
    logit = ort.InferenceSession(str(src)).run(None, {"image": x})[0]
    prob = ort.InferenceSession(str(out / "model.onnx")).run(["ai_generated"], {"image": x})[0]
    np.testing.assert_allclose(prob, 1 / (1 + np.exp(-logit)), atol=0.02)


def test_a_float_detector_is_imported_as_it_is(tmp_path):
    import onnx

    src = make_onnx(tmp_path / "f.onnx", 1)
    import_model(src, tmp_path / "model", {**CFG, "output": {"kind": "logit"}}, SAMPLE)
    spec = json.loads((tmp_path / "model" / "model.json").read_text())
    assert spec["imported"]["cpu_portable"] is None
    ops = [n.op_type for n in onnx.load(str(tmp_path / "model" / "model.onnx")).graph.node]
    assert ops[:3] == ["GlobalAveragePool", "Flatten", "MatMul"]
