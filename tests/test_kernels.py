"""The integer kernels a quantised model runs on: U8S8 only where the CPU computes it exactly,
and then the same embeddings and scores as the exact-everywhere U8U8 graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from corpus import sample_model_inputs
from onnx import TensorProto, helper, numpy_helper

from synthsieve.inference.kernels import (
    ENV,
    U8S8,
    U8U8,
    choose_kernel,
    has_exact_u8s8,
    signed_graph_file,
    signed_weights,
    uint8_weight_nodes,
    write_signed_graph,
)
from synthsieve.inference.precision import unsigned_weights


def test_the_kernel_follows_the_cpu_unless_the_environment_says_otherwise():
    vnni = frozenset({"avx2", "avx512_vnni"})
    avx2 = frozenset({"avx2", "fma"})
    assert choose_kernel({}, vnni) == U8S8
    assert choose_kernel({}, frozenset({"avx_vnni"})) == U8S8
    assert choose_kernel({}, frozenset({"amx_int8"})) == U8S8
    assert choose_kernel({}, avx2) == U8U8  # saturating U8S8 there: stay exact
    assert choose_kernel({ENV: "u8u8"}, vnni) == U8U8  # how to check the AVX2 path anywhere
    assert choose_kernel({ENV: "U8S8"}, avx2) == U8S8
    assert choose_kernel({ENV: "auto"}, avx2) == U8U8
    with pytest.raises(ValueError, match="SYNTHSIEVE_INT8_KERNEL"):
        choose_kernel({ENV: "fast"}, vnni)


def _int8_matmul_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.integers(-128, 128, (8, 4)).astype(np.int8), "w")
    wz = numpy_helper.from_array(np.array(3, np.int8), "wz")
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
             helper.make_node("MatMulInteger", ["xq", "w", "xz", "wz"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 8])], [helper.make_tensor_value_info(
            "y", TensorProto.INT32, [1, 4])], [w, wz])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_signed_weights_undo_unsigned_weights_exactly():
    original = _int8_matmul_model()
    unsigned = unsigned_weights(original)
    assert len(uint8_weight_nodes(unsigned)) == 1 and not uint8_weight_nodes(original)
    back = signed_weights(unsigned)
    assert not uint8_weight_nodes(back)
    for a, b in zip(original.graph.initializer, back.graph.initializer, strict=True):
        assert numpy_helper.to_array(a).dtype == numpy_helper.to_array(b).dtype == np.int8
        assert np.array_equal(numpy_helper.to_array(a), numpy_helper.to_array(b))
    import onnxruntime as ort

    x = np.linspace(-1, 2, 8, dtype=np.float32)[None]
    run = [ort.InferenceSession(m.SerializeToString()).run(None, {"x": x})[0]
           for m in (unsigned, back)]
    assert np.array_equal(*run)


def test_the_signed_graph_written_at_install_is_used_only_while_the_model_is_unchanged(
        tmp_path):
    import os

    import onnxruntime as ort

    model_path = tmp_path / "model.onnx"
    onnx.save(unsigned_weights(_int8_matmul_model()), str(model_path))
    assert signed_graph_file(model_path) is None  # nothing written yet
    written = write_signed_graph(model_path)
    assert written is not None and signed_graph_file(model_path) == written
    x = np.linspace(-1, 2, 8, dtype=np.float32)[None]
    from_file = ort.InferenceSession(str(written)).run(None, {"x": x})[0]
    in_memory = ort.InferenceSession(signed_weights(onnx.load(str(model_path)))
                                     .SerializeToString()).run(None, {"x": x})[0]
    assert np.array_equal(from_file, in_memory)
    st = model_path.stat()
    os.utime(model_path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert signed_graph_file(model_path) is None  # a replaced model: derive again
    signed_only = tmp_path / "signed.onnx"
    onnx.save(_int8_matmul_model(), str(signed_only))
    assert write_signed_graph(signed_only) is None  # already signed: nothing to derive


def _with_embedding_output(model_dir: Path, out: Path) -> Path:
    """A copy of the model directory whose graph also outputs the encoder's embedding."""
    from synthsieve.models.assemble import ENCODER_OUTPUT

    model = onnx.load(str(model_dir / "model.onnx"))
    model.graph.output.append(helper.make_tensor_value_info(ENCODER_OUTPUT,
                                                            TensorProto.FLOAT, None))
    out.mkdir()
    onnx.save(model, str(out / "model.onnx"))
    (out / "model.json").write_text((model_dir / "model.json").read_text())
    return out


@pytest.mark.skipif(not has_exact_u8s8(), reason="this CPU has no VNNI/AMX: U8S8 differs "
                                                  "here, which is why it is not chosen")
def test_u8s8_and_u8u8_give_identical_embeddings_and_scores_on_the_sample(
        default_model, tmp_path, monkeypatch):
    from synthsieve.inference.onnx_handler import OnnxImageModelHandler
    from synthsieve.inference.spec import ModelSpec
    from synthsieve.models.assemble import ENCODER_OUTPUT

    spec = ModelSpec.load(_with_embedding_output(default_model, tmp_path / "m"))
    images = sample_model_inputs(spec)
    outputs = {}
    # u8s8 derived at load, then from the file fetch-model writes
    for run, kernel in ((U8U8, U8U8), (U8S8, U8S8), ("u8s8 file", U8S8)):
        if run == "u8s8 file":
            write_signed_graph(Path(spec.model_path))
            assert signed_graph_file(Path(spec.model_path)) is not None
        monkeypatch.setenv(ENV, kernel)
        handler = OnnxImageModelHandler(spec, batch_size=len(images), intra_op_threads=2)
        model = handler.load_model()
        assert model.kernel == kernel
        outputs[run] = [r.inference for r in handler.run_inference(images, model)]
        model.close()
    for run in (U8S8, "u8s8 file"):
        for a, b in zip(outputs[U8U8], outputs[run], strict=True):
            assert set(a) >= {ENCODER_OUTPUT, spec.ai_output}
            for name in a:
                assert np.array_equal(a[name], b[name]), (run, name)
