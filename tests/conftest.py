from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from synthsieve.models import DEFAULT_MODEL_DIR  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def build_tiny_model(model_dir: Path, size: int = 32, ood: bool = False) -> Path:
    """A real (if simple) ONNX classifier: sigmoid of a weighted mean of the red channel.

    It exercises the whole model contract (input name, layout, normalisation, output,
    thresholds) at a tiny fraction of the bundled model's cost, for pipeline-mechanics tests.
    With `ood`, it also outputs a distance to its "training data": the mean of the
    normalised green channel, so very green images (above 0.5, green > ~191) are too far.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model_dir.mkdir(parents=True, exist_ok=True)
    w = np.zeros((3, 1), dtype=np.float32)
    w[0, 0] = 4.0
    g = np.zeros((3, 1), dtype=np.float32)
    g[1, 0] = 1.0
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["m"], axes=[2, 3], keepdims=0),
        helper.make_node("MatMul", ["m", "w"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["prob"]),
    ]
    outputs = [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["batch", 1])]
    if ood:
        nodes.append(helper.make_node("MatMul", ["m", "g"], ["dist"]))
        outputs.append(helper.make_tensor_value_info("dist", TensorProto.FLOAT, ["batch", 1]))
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, size, size])],
        outputs, [numpy_helper.from_array(w, "w")]
        + ([numpy_helper.from_array(g, "g")] if ood else []),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, str(model_dir / "model.onnx"))
    spec = {
        "name": "tiny-test", "version": "0", "file": "model.onnx",
        "input": {"name": "x", "size": [size, size], "layout": "NCHW", "dtype": "float32"},
        "preprocess": {"resize": "shorter_side", "resample": "bilinear", "crop": "center",
                       "scale": 1 / 255, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
        "outputs": {"ai_generated": "prob", "source": None},
        "source_classes": [],
        "thresholds": {"ai_generated": 0.7, "not_ai_generated": 0.3},
    }
    if ood:
        spec["outputs"]["out_of_distribution"] = "dist"
        spec["thresholds"]["out_of_distribution"] = 0.5
    (model_dir / "model.json").write_text(json.dumps(spec))
    return model_dir


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="session")
def default_model() -> Path:
    """The bundled model; CI assembles it (`synthsieve fetch-model`), so there it must exist."""
    if not (DEFAULT_MODEL_DIR / "model.onnx").is_file():
        if os.environ.get("CI"):
            pytest.fail("bundled model.onnx missing: .ci/run must run `synthsieve fetch-model`")
        pytest.skip("bundled model.onnx not assembled; run `synthsieve fetch-model`")
    return DEFAULT_MODEL_DIR


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "SOURCES.csv").is_file():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA


@pytest.fixture
def cloud_env(monkeypatch):
    """Cloud SDKs kept on loopback: fake keys, no instance-metadata probes."""
    from servers import CLOUD_ENV

    for k, v in CLOUD_ENV.items():
        monkeypatch.setenv(k, v)


@pytest.fixture()
def pubsub_emulator(monkeypatch):
    """Our Pub/Sub emulator on 127.0.0.1, reached as Google's is: PUBSUB_EMULATOR_HOST."""
    from servers import CLOUD_ENV

    from synthsieve.emulators.pubsub import PubSubEmulator

    with PubSubEmulator() as emu:
        for k, v in {**CLOUD_ENV, "PUBSUB_EMULATOR_HOST": emu.host}.items():
            monkeypatch.setenv(k, v)
        yield emu
