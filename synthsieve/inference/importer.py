"""`synthsieve import-model`: turns a user's own detector into a model directory.

The source is an ONNX file, or a PyTorch checkpoint (a full module, TorchScript, or a timm
state dict) exported with torch.onnx where torch is installed. A small JSON/YAML config says
how to preprocess and what the outputs mean. The detector's graph is kept as is and a few
nodes are appended so that it ends in the outputs the model contract names (`ai_generated`
and, for multi-class detectors, a `source` distribution over the taxonomy), so the pipeline
never needs model-specific code. A dynamically quantised graph is also made to compute the
same on every x86 CPU (precision.cpu_portable: UINT8 weights, the softmax written out; the
same arithmetic). The result is checked by running it on sample images.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from synthsieve.schema import SOURCE_NONE, SOURCE_OTHER, canonical_source

__all__ = [
    "GENERIC_AI_NAMES", "OUTPUT_KINDS", "REAL_NAMES", "TORCH_SUFFIXES", "ImportModelError",
    "import_model", "load_config", "sample_images", "validate",
]

OUTPUT_KINDS = ("probability", "logit", "softmax", "probabilities")
REAL_NAMES = {"real", "human", "authentic", "not_ai_generated", "natural", "none"}
GENERIC_AI_NAMES = {"ai", "fake", "generated", "synthetic", "ai_generated"}
TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")


class ImportModelError(ValueError):
    """The source or its config cannot become a working model directory."""


def load_config(path: str | Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    text = Path(path).read_text()
    if str(path).endswith((".yaml", ".yml")):
        import yaml

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ImportModelError(f"{path} must hold a mapping")
    return data


def _export_torch(src: Path, cfg: dict[str, Any], out: Path) -> None:
    try:
        import torch
    except ImportError as e:
        raise ImportModelError(
            f"{src} is a PyTorch checkpoint; exporting it needs torch (pip install torch), "
            "or export it to ONNX yourself and import the .onnx file") from e
    size = cfg.get("input", {}).get("size", [224, 224])
    tcfg = cfg.get("torch", {})
    try:
        module = torch.jit.load(str(src), map_location="cpu")
    except Exception:  # not TorchScript: a pickled module or a state dict
        module = None
    if module is None:
        obj = torch.load(str(src), map_location="cpu", weights_only=False)
        if isinstance(obj, torch.nn.Module):
            module = obj
        elif isinstance(obj, dict) and tcfg.get("timm_model"):
            try:
                import timm
            except ImportError as e:
                raise ImportModelError("a state dict with torch.timm_model needs timm") from e
            module = timm.create_model(tcfg["timm_model"], pretrained=False,
                                       num_classes=int(tcfg.get("num_classes", 2)))
            module.load_state_dict(obj.get("state_dict", obj))
        else:
            raise ImportModelError(
                f"{src} holds a {type(obj).__name__}; give a full nn.Module, a TorchScript "
                "file, or a state dict with torch.timm_model (and num_classes) in the config")
    module.eval()
    dummy = torch.zeros(1, 3, int(size[0]), int(size[1]))
    torch.onnx.export(module, (dummy,), str(out), input_names=["input"],
                      output_names=["output"], opset_version=17,
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, dynamo=False)


def _source_layout(classes: list[str], real_index: int) -> tuple[list[str], np.ndarray]:
    """Taxonomy labels of the AI classes and the K x M matrix that sums classes into them."""
    labels: list[str] = []
    columns: list[int] = []
    for i, name in enumerate(classes):
        if i == real_index:
            columns.append(-1)
            continue
        key = name.strip().lower()
        label = SOURCE_OTHER if key in GENERIC_AI_NAMES else canonical_source(key)
        if label == SOURCE_NONE:
            label = SOURCE_OTHER
        if label not in labels:
            labels.append(label)
        columns.append(labels.index(label))
    agg = np.zeros((len(classes), len(labels)), dtype=np.float32)
    for i, col in enumerate(columns):
        if col >= 0:
            agg[i, col] = 1.0
    return labels, agg


def _append_head(model, out_cfg: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Appends the contract's outputs; returns (output names, source class labels)."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    names = [o.name for o in graph.output]
    src = out_cfg.get("name") or names[0]
    if src not in names:
        raise ImportModelError(f"the model has no output {src!r}; its outputs are {names}")
    kind = out_cfg.get("kind")
    if kind not in OUTPUT_KINDS:
        raise ImportModelError(f"output.kind must be one of {OUTPUT_KINDS}, not {kind!r}")
    inits, nodes, outputs = [], [], []
    source_labels: list[str] = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value, f"ssc_{name}"))
        return f"ssc_{name}"

    if kind in ("probability", "logit"):
        flat = const("shape", np.array([-1, 1], dtype=np.int64))
        nodes.append(helper.make_node("Reshape", [src, flat], ["ss_score"]))
        if kind == "logit":
            nodes.append(helper.make_node("Sigmoid", ["ss_score"], ["ai_generated"]))
        else:
            nodes.append(helper.make_node("Identity", ["ss_score"], ["ai_generated"]))
    else:
        classes = [str(c) for c in out_cfg.get("classes") or []]
        if len(classes) < 2:
            raise ImportModelError(f"output.kind {kind} needs output.classes (two or more)")
        real = out_cfg.get("real_class")
        real_matches = [i for i, c in enumerate(classes)
                        if c == real or (real is None and c.strip().lower() in REAL_NAMES)]
        if len(real_matches) != 1:
            raise ImportModelError(
                f"cannot tell which of {classes} means 'real': set output.real_class")
        real_index = real_matches[0]
        probs = src
        if kind == "softmax":
            nodes.append(helper.make_node("Softmax", [src], ["ss_probs"], axis=1))
            probs = "ss_probs"
        real_vec = np.zeros((len(classes), 1), dtype=np.float32)
        real_vec[real_index, 0] = 1.0
        nodes += [
            helper.make_node("MatMul", [probs, const("real", real_vec)], ["ss_real"]),
            helper.make_node("Sub", [const("one", np.ones((1, 1), np.float32)), "ss_real"],
                             ["ai_generated"]),
        ]
        labels, agg = _source_layout(classes, real_index)
        if len(labels) >= 2:  # one generic "AI" class says nothing about the generator
            ai_mask = 1.0 - real_vec
            nodes += [
                helper.make_node("MatMul", [probs, const("agg", agg)], ["ss_src"]),
                helper.make_node("MatMul", [probs, const("aimask", ai_mask)], ["ss_aisum"]),
                helper.make_node("Max", ["ss_aisum", const("eps", np.full((1, 1), 1e-12,
                                                                         np.float32))],
                                 ["ss_aisum_safe"]),
                helper.make_node("Div", ["ss_src", "ss_aisum_safe"], ["source"]),
            ]
            outputs.append(helper.make_tensor_value_info("source", TensorProto.FLOAT,
                                                         ["batch", len(labels)]))
            source_labels = labels
    graph.initializer.extend(inits)
    graph.node.extend(nodes)
    del graph.output[:]
    graph.output.extend([helper.make_tensor_value_info("ai_generated", TensorProto.FLOAT,
                                                       ["batch", 1]), *outputs])
    return [o.name for o in graph.output], source_labels


def _check_input(model, cfg_input: dict[str, Any]) -> tuple[str, list[int]]:
    inputs = [i for i in model.graph.input
              if i.name not in {init.name for init in model.graph.initializer}]
    if not inputs:
        raise ImportModelError("the model has no input")
    name = cfg_input.get("name") or inputs[0].name
    match = [i for i in inputs if i.name == name]
    if not match:
        raise ImportModelError(f"the model has no input {name!r}; its inputs are "
                               f"{[i.name for i in inputs]}")
    dims = [d.dim_value if d.HasField("dim_value") else -1
            for d in match[0].type.tensor_type.shape.dim]
    if len(dims) != 4:
        raise ImportModelError(f"input {name!r} has shape {dims}; an image model takes 4 dims")
    size = [int(v) for v in cfg_input.get("size", [224, 224])]
    layout = str(cfg_input.get("layout", "NCHW")).upper()
    spatial = dims[2:4] if layout == "NCHW" else dims[1:3]
    channels = dims[1] if layout == "NCHW" else dims[3]
    if channels not in (-1, 3):
        raise ImportModelError(f"input {name!r} has {channels} channels where {layout} "
                               "puts them; set input.layout (NCHW or NHWC) to match the model")
    for got, want in zip(spatial, size, strict=True):
        if got not in (-1, want):
            raise ImportModelError(
                f"input {name!r} expects {spatial[0]}x{spatial[1]} pixels but the config says "
                f"input.size {size}; make them agree")
    return name, size


def sample_images(sample_dir: Path | None, n: int = 8) -> list[bytes]:
    """Images to validate on: the given folder, else a few generated ones."""
    if sample_dir is not None:
        files = sorted(p for p in Path(sample_dir).rglob("*") if p.is_file())
        blobs = [p.read_bytes() for p in files]
        if blobs:
            return blobs
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        arr = rng.integers(0, 256, (120 + 10 * i, 160, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def validate(model_dir: Path, samples: list[bytes]) -> dict[str, Any]:
    """Runs the imported model through synthsieve's own decode and handler on real images."""
    from synthsieve.images import DecodeError
    from synthsieve.inference.onnx_handler import OnnxImageModelHandler
    from synthsieve.inference.outputs import interpret
    from synthsieve.inference.preprocess import prepare
    from synthsieve.inference.spec import ModelSpec

    spec = ModelSpec.load(model_dir)
    handler = OnnxImageModelHandler(spec, batch_size=4, intra_op_threads=1)
    try:
        session = handler.load_model()
    except Exception as e:
        raise ImportModelError(f"ONNX Runtime cannot load the model: {e}") from e
    pixels = []
    for blob in samples:
        try:
            pixels.append(prepare(blob, spec, 10**9)[1])
        except DecodeError:
            continue
    if not pixels:
        raise ImportModelError("none of the sample images could be decoded")
    try:
        results = list(handler.run_inference(pixels, session))
    except Exception as e:
        raise ImportModelError(f"the model fails on {spec.height}x{spec.width} "
                               f"{spec.layout} input: {e}") from e
    scores = []
    for r in results:
        for name, value in r.inference.items():
            if not np.all(np.isfinite(value)):
                raise ImportModelError(f"output {name} is NaN or infinite on a sample image")
        try:
            scores.append(interpret(r.inference, spec)["ai_generated"])
        except ValueError as e:
            raise ImportModelError(f"the model's outputs do not fit the contract: {e}") from e
    return {"images": len(scores), "min": min(scores), "max": max(scores),
            "mean": float(np.mean(scores))}


def import_model(src: str | Path, out_dir: str | Path, config: dict[str, Any],
                 sample_dir: str | Path | None = None) -> dict[str, Any]:
    import onnx

    from synthsieve.inference.precision import PrecisionError, cpu_portable

    src, out_dir = Path(src), Path(out_dir)
    if not src.is_file():
        raise ImportModelError(f"{src} does not exist")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ImportModelError(f"{out_dir} exists and is not empty")
    cfg_input = dict(config.get("input", {}))
    pre = dict(config.get("preprocess", {}))
    out_cfg = dict(config.get("output", {}))
    if "mean" not in pre or "std" not in pre:
        raise ImportModelError("preprocess.mean and preprocess.std are required (three "
                               "values each, on the 0..1 scale after preprocess.scale)")
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = src
        if src.suffix.lower() in TORCH_SUFFIXES:
            onnx_path = Path(tmp) / "exported.onnx"
            _export_torch(src, config, onnx_path)
        try:
            model = onnx.load(str(onnx_path))
            onnx.checker.check_model(model)
        except Exception as e:
            raise ImportModelError(f"{onnx_path} is not a valid ONNX model: {e}") from e
        input_name, size = _check_input(model, cfg_input)
        outputs, source_labels = _append_head(model, out_cfg)
        try:
            onnx.checker.check_model(model)
        except Exception as e:
            raise ImportModelError(f"could not append the output head: {e}") from e
        try:
            model, portable = cpu_portable(model)
        except (PrecisionError, onnx.checker.ValidationError) as e:
            raise ImportModelError(f"cannot make the quantised graph CPU-independent: "
                                   f"{e}") from e
        out_dir.mkdir(parents=True, exist_ok=True)
        onnx.save(model, str(out_dir / "model.onnx"))
    thresholds = config.get("thresholds", {"ai_generated": 0.5, "not_ai_generated": 0.5})
    spec = {
        "name": str(config.get("name", src.stem)),
        "version": str(config.get("version", "1")),
        "file": "model.onnx",
        "description": config.get("description", f"imported from {src.name}"),
        "input": {"name": input_name, "size": size,
                  "layout": str(cfg_input.get("layout", "NCHW")).upper(),
                  "dtype": cfg_input.get("dtype", "float32"),
                  "batch_invariant": bool(cfg_input.get("batch_invariant", True))},
        "preprocess": {"resize": pre.get("resize", "shorter_side"),
                       "resample": pre.get("resample", "bicubic"),
                       "crop": pre.get("crop", "center"),
                       "scale": float(pre.get("scale", 1 / 255)),
                       "mean": [float(v) for v in pre["mean"]],
                       "std": [float(v) for v in pre["std"]]},
        "outputs": {"ai_generated": "ai_generated",
                    "source": "source" if source_labels else None},
        "source_classes": source_labels,
        "thresholds": thresholds,
        "imported": {"from": src.name, "output_kind": out_cfg.get("kind"),
                     "classes": out_cfg.get("classes"), "cpu_portable": portable},
    }
    (out_dir / "model.json").write_text(json.dumps(spec, indent=2) + "\n")
    try:
        from synthsieve.inference.spec import ModelSpec, ModelSpecError

        try:
            ModelSpec.load(out_dir)
        except ModelSpecError as e:
            raise ImportModelError(str(e)) from e
        check = validate(out_dir, sample_images(Path(sample_dir) if sample_dir else None))
    except Exception:
        shutil.rmtree(out_dir, ignore_errors=True)  # never leave a half-valid model behind
        raise
    if not (check["min"] >= 0.0 and check["max"] <= 1.0 and not math.isnan(check["mean"])):
        raise ImportModelError(f"scores out of range: {check}")
    return {"model_dir": str(out_dir), "outputs": outputs, "source_classes": source_labels,
            "validation": check}
