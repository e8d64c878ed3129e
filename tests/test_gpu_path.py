"""The GPU path: graphs TensorRT can build, computing what the CPU model computes, and the
handlers that run them. The GPU runs themselves skip without a GPU (marked `gpu`)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pyarrow.parquet as pq
import pytest
from corpus import noise_png
from onnx import TensorProto, helper, numpy_helper

from synthsieve.cli import main
from synthsieve.inference.onnx_handler import OnnxImageModelHandler
from synthsieve.inference.precision import dequantize_dynamic, to_fp16, unsigned_weights
from synthsieve.inference.spec import ModelSpec
from synthsieve.inference.tensorrt_engine import FLOAT_FILE, build_engine_dir

SIDE = 32


def _run(model: onnx.ModelProto, x: np.ndarray, output: str = "prob") -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    return session.run([output], {"x": x})[0]


def quantized_image_model(model_dir: Path) -> Path:
    """A small image classifier dynamically quantised by ONNX Runtime's own tool, with
    weights at the edges of INT8 so that saturating CPU kernels would show."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    w1 = (rng.choice([-1.0, 1.0], (SIDE, 64)) * rng.uniform(0.8, 1.0, (SIDE, 64))
          ).astype(np.float32)
    w2 = (rng.standard_normal((64, 1)) * 0.05).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["tokens"]),
         helper.make_node("MatMul", ["tokens", "w1"], ["h"]),
         helper.make_node("Relu", ["h"], ["hr"]),
         helper.make_node("MatMul", ["hr", "w2"], ["t"]),
         helper.make_node("ReduceMean", ["t"], ["m"], axes=[1], keepdims=0),
         helper.make_node("Sigmoid", ["m"], ["prob"])],
        "quantised",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, SIDE, SIDE])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["batch", 1])],
        [numpy_helper.from_array(np.array([0, 3 * SIDE, SIDE], np.int64), "shape"),
         numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    float_path = model_dir / "float.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]),
              str(float_path))
    quantize_dynamic(str(float_path), str(model_dir / "model.onnx"),
                     weight_type=QuantType.QInt8)
    float_path.unlink()
    (model_dir / "model.json").write_text(json.dumps({
        "name": "quantised-test", "version": "0", "file": "model.onnx",
        "input": {"name": "x", "size": [SIDE, SIDE], "layout": "NCHW", "dtype": "float32",
                  "batch_invariant": False},
        "preprocess": {"resize": "stretch", "resample": "bilinear", "crop": "none",
                       "scale": 1 / 255, "mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2]},
        "outputs": {"ai_generated": "prob", "source": None}, "source_classes": [],
        "thresholds": {"ai_generated": 0.7, "not_ai_generated": 0.3}}))
    return model_dir


@pytest.fixture(scope="module")
def quantized(tmp_path_factory) -> Path:
    return quantized_image_model(tmp_path_factory.mktemp("quantised"))


def images(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ((rng.random((n, 3, SIDE, SIDE)) - 0.5) * 5).astype(np.float32)


def test_uint8_weights_compute_the_onnx_definition_of_integer_matmul(quantized):
    model = onnx.load(str(quantized / "model.onnx"))
    assert {n.op_type for n in model.graph.node} >= {"DynamicQuantizeLinear", "MatMulInteger"}
    exact = unsigned_weights(model)
    x = images(6)
    # integer arithmetic done by numpy for the first layer, one image at a time
    consts = {i.name: numpy_helper.to_array(i) for i in exact.graph.initializer}
    w = consts["w1_quantized"].astype(np.int64) - consts["w1_zero_point"].astype(np.int64)
    assert consts["w1_quantized"].dtype == np.uint8
    probe = helper.make_tensor_value_info("h", TensorProto.FLOAT, None)
    exact.graph.output.append(probe)
    for image in x:
        tokens = image.reshape(1, 3 * SIDE, SIDE)
        lo, hi = min(tokens.min(), 0), max(tokens.max(), 0)
        scale = np.float32((hi - lo) / 255)
        zero = np.clip(np.round(-lo / scale), 0, 255)
        q = np.clip(np.round(tokens / scale) + zero, 0, 255).astype(np.int64) - int(zero)
        expected = (q @ w) * scale * consts["w1_scale"]
        got = _run(exact, image[None], "h")
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def test_float_graph_has_no_integer_kernels_agrees_with_the_cpu_model_and_batches(quantized):
    model = unsigned_weights(onnx.load(str(quantized / "model.onnx")))
    floated = dequantize_dynamic(model)
    assert not {n.op_type for n in floated.graph.node} & {
        "MatMulInteger", "ConvInteger", "DynamicQuantizeLinear"}
    x = images(16, seed=1)
    per_image = np.concatenate([_run(model, x[i:i + 1]) for i in range(len(x))])
    np.testing.assert_allclose(_run(floated, x), per_image, atol=1e-5)
    # each image keeps its own quantisation grid: a batch gives each image's own answer
    np.testing.assert_allclose(_run(floated, x), np.concatenate(
        [_run(floated, x[i:i + 1]) for i in range(len(x))]), atol=1e-6)
    half = to_fp16(model)
    assert any(i.data_type == TensorProto.FLOAT16 for i in half.graph.initializer)
    np.testing.assert_allclose(_run(half, x), per_image, atol=2e-2)


def test_build_engine_onnx_only_gives_a_model_dir_that_scores_like_the_original(
        tmp_path, quantized, capsys):
    out = tmp_path / "gpu-model"
    assert main(["build-engine", str(quantized), "--out", str(out), "--onnx-only",
                 "--max-batch", "8"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["float_graph"] == str(out / FLOAT_FILE) and "engine" not in summary
    spec = ModelSpec.load(out)
    assert spec.batch_invariant and spec.file == FLOAT_FILE
    assert spec.raw["derived_from"] == {"model": "quantised-test@0", "precision": "fp32"}
    corpus = tmp_path / "imgs"
    corpus.mkdir()
    for i in range(12):
        (corpus / f"{i}.png").write_bytes(noise_png(900 + i, side=SIDE * 2))
    scores = {}
    for name, model_dir in (("cpu", quantized), ("float", out)):
        audit = tmp_path / name
        assert main(["-q", "audit", str(corpus), "--out", str(audit), "--model",
                     str(model_dir), "--no-provenance"]) == 0
        table = pq.read_table(audit / "scores").to_pylist()
        scores[name] = {r["image_id"]: r["ai_generated"] for r in table}
    assert scores["cpu"].keys() == scores["float"].keys() and len(scores["cpu"]) == 12
    # the CPU model as shipped (INT8 weights) may differ where the CPU saturates; its
    # exact form is what the float graph must match
    exact_dir = tmp_path / "exact"
    exact_dir.mkdir()
    onnx.save(unsigned_weights(onnx.load(str(quantized / "model.onnx"))),
              str(exact_dir / "model.onnx"))
    (exact_dir / "model.json").write_text((quantized / "model.json").read_text())
    assert main(["-q", "audit", str(corpus), "--out", str(tmp_path / "exact-audit"),
                 "--model", str(exact_dir), "--no-provenance"]) == 0
    exact = {r["image_id"]: r["ai_generated"]
             for r in pq.read_table(tmp_path / "exact-audit" / "scores").to_pylist()}
    for image_id, value in exact.items():
        assert scores["float"][image_id] == pytest.approx(value, abs=1e-5)


def test_gpu_backends_say_what_is_missing_instead_of_starting(tmp_path, tiny_model, capsys):
    (tmp_path / "x.png").write_bytes(noise_png(1, side=48))
    assert main(["audit", str(tmp_path), "--out", str(tmp_path / "o"), "--model",
                 str(tiny_model), "--backend", "tensorrt"]) == 2
    assert "no engine: run `synthsieve build-engine" in capsys.readouterr().err
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert main(["audit", str(tmp_path), "--out", str(tmp_path / "o"), "--model",
                     str(tiny_model), "--backend", "onnx-cuda"]) == 2
        assert "no CUDAExecutionProvider" in capsys.readouterr().err
    if importlib.util.find_spec("tensorrt") is None:
        assert main(["build-engine", str(tiny_model), "--out", str(tmp_path / "g")]) == 2
        assert "tensorrt is not installed" in capsys.readouterr().err
        assert not (tmp_path / "g").exists(), "nothing written before the check"


def _cuda() -> bool:
    return "CUDAExecutionProvider" in ort.get_available_providers()


gpu = pytest.mark.gpu


@gpu
@pytest.mark.skipif(not _cuda() or importlib.util.find_spec("tensorrt") is None,
                    reason="needs an NVIDIA GPU with tensorrt and onnxruntime-gpu")
def test_tensorrt_engine_and_onnx_cuda_score_like_the_float_graph(tmp_path, quantized):
    from synthsieve.inference.tensorrt_handler import TensorRTImageModelHandler

    out = tmp_path / "gpu-model"
    summary = build_engine_dir(quantized, out, max_batch=8, opt_batch=4)
    assert summary["engine"]["max_batch"] == 8
    spec = ModelSpec.load(out)
    batch = [np.random.default_rng(i).integers(0, 255, (SIDE, SIDE, 3), dtype=np.uint8)
             for i in range(11)]  # more than max_batch: split inside the handler
    cpu = OnnxImageModelHandler(spec, batch_size=11)
    expected = [r.inference["prob"] for r in cpu.run_inference(batch, cpu.load_model())]
    trt_handler = TensorRTImageModelHandler(spec)
    got = [r.inference["prob"] for r in trt_handler.run_inference(batch,
                                                                  trt_handler.load_model())]
    np.testing.assert_allclose(np.array(got), np.array(expected), atol=1e-3)
    cuda = OnnxImageModelHandler(spec, batch_size=11, providers=("CUDAExecutionProvider",))
    on_cuda = [r.inference["prob"] for r in cuda.run_inference(batch, cuda.load_model())]
    np.testing.assert_allclose(np.array(on_cuda), np.array(expected), atol=1e-4)
