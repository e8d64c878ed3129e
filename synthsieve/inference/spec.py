"""ModelSpec: everything the pipeline knows about a model, read from its model.json.

The pipeline preprocesses and interprets outputs only from this file, so a model directory
can be swapped without code changes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from synthsieve.schema import SOURCE_SET

__all__ = ["ModelSpec", "ModelSpecError", "WorkerModelSpec", "load_spec"]

_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "lanczos": Image.Resampling.LANCZOS,
    "nearest": Image.Resampling.NEAREST,
}


class ModelSpecError(ValueError):
    """model.json is missing, malformed or inconsistent."""


@dataclass(frozen=True)
class ModelSpec:
    """A model directory's model.json, checked (docs/model-contract.md lists every key).

    Load it with ModelSpec.load(DIR); from_dict raises ModelSpecError for a model.json that
    is incomplete or inconsistent.

    Attributes:
      name, version: the model's id, `name@version` (`model_id`).
      model_dir, file: where the network is (`model_path`).
      input_name, height, width, layout, dtype: the graph's input.
      resize, resample, crop, scale, mean, std, shorter_side_max: how an RGB image becomes
        that input (`to_uint8`, then `normalize_batch`).
      ai_output, source_output, ood_output: the outputs read per image.
      source_classes: taxonomy labels of the source head, in its order.
      threshold_ai, threshold_not_ai, threshold_ood: the verdict thresholds.
      batch_invariant: False when an image's output depends on its batch neighbours.
      raw: model.json as read, for what the pipeline does not interpret.
    """

    name: str
    version: str
    model_dir: str
    file: str
    input_name: str
    height: int
    width: int
    layout: str  # NCHW or NHWC
    dtype: str
    resize: str  # "shorter_side" (aspect kept, then crop) or "stretch"
    resample: str
    crop: str  # "center" or "none"
    scale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    ai_output: str
    source_output: str | None
    source_classes: tuple[str, ...]
    threshold_ai: float
    threshold_not_ai: float
    # False when a sample's output depends on the rest of its batch (e.g. dynamic INT8
    # quantisation with one activation scale per tensor); such models run one image per call.
    batch_invariant: bool = True
    # An optional output measuring how far the image lies from the model's training data;
    # above threshold_ood the verdict is inconclusive whatever the score.
    ood_output: str | None = None
    # With resize "shorter_side": the shorter side is brought into [input size, this] rather
    # than onto the input size, so the centre crop keeps pixel-level detail of large images
    # (resizing to 224 erases most traces a generator leaves); None = onto the input size.
    shorter_side_max: int | None = None
    threshold_ood: float | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def model_id(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def model_path(self) -> str:
        return str(Path(self.model_dir) / self.file)

    @property
    def resample_filter(self) -> Image.Resampling:
        return _RESAMPLE[self.resample]

    @classmethod
    def load(cls, model_dir: str | Path) -> ModelSpec:
        path = Path(model_dir) / "model.json"
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError as e:
            raise ModelSpecError(f"{path} not found: a model directory needs model.json") from e
        except json.JSONDecodeError as e:
            raise ModelSpecError(f"{path} is not valid JSON: {e}") from e
        return cls.from_dict(raw, str(Path(model_dir).resolve()))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], model_dir: str) -> ModelSpec:
        try:
            inp = raw["input"]
            pre = raw["preprocess"]
            out = raw["outputs"]
            thr = raw["thresholds"]
            height, width = (int(v) for v in inp["size"])
            source_classes = tuple(raw.get("source_classes") or ())
            spec = cls(
                name=str(raw["name"]),
                version=str(raw["version"]),
                model_dir=model_dir,
                file=str(raw.get("file", "model.onnx")),
                input_name=str(inp["name"]),
                height=height,
                width=width,
                layout=str(inp.get("layout", "NCHW")).upper(),
                dtype=str(inp.get("dtype", "float32")),
                resize=str(pre.get("resize", "shorter_side")),
                resample=str(pre.get("resample", "bicubic")).lower(),
                crop=str(pre.get("crop", "center")),
                scale=float(pre.get("scale", 1 / 255)),
                mean=tuple(float(v) for v in pre["mean"]),
                std=tuple(float(v) for v in pre["std"]),
                ai_output=str(out["ai_generated"]),
                source_output=out.get("source"),
                source_classes=source_classes,
                threshold_ai=float(thr["ai_generated"]),
                threshold_not_ai=float(thr["not_ai_generated"]),
                batch_invariant=bool(inp.get("batch_invariant", True)),
                ood_output=out.get("out_of_distribution"),
                shorter_side_max=(int(pre["shorter_side_max"])
                                  if pre.get("shorter_side_max") is not None else None),
                threshold_ood=(float(thr["out_of_distribution"])
                               if thr.get("out_of_distribution") is not None else None),
                raw=raw,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ModelSpecError(
                f"model.json in {model_dir} is incomplete or invalid: {e!r}") from e
        spec._validate()
        return spec

    def _validate(self) -> None:
        if self.layout not in ("NCHW", "NHWC"):
            raise ModelSpecError(f"input.layout must be NCHW or NHWC, not {self.layout}")
        if self.resize not in ("shorter_side", "stretch"):
            raise ModelSpecError(f"preprocess.resize {self.resize!r} is not supported")
        if self.crop not in ("center", "none"):
            raise ModelSpecError(f"preprocess.crop {self.crop!r} is not supported")
        if self.crop == "none" and self.resize != "stretch":
            raise ModelSpecError('preprocess.crop "none" needs resize "stretch"')
        if self.shorter_side_max is not None and (
                self.resize != "shorter_side"
                or self.shorter_side_max < max(self.width, self.height)):
            raise ModelSpecError("preprocess.shorter_side_max needs resize shorter_side and "
                                 "a value of at least the input size")
        if self.resample not in _RESAMPLE:
            raise ModelSpecError(f"preprocess.resample {self.resample!r} is not supported")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ModelSpecError("preprocess.mean and preprocess.std need three values")
        if not 0.0 <= self.threshold_not_ai <= self.threshold_ai <= 1.0:
            raise ModelSpecError(
                "thresholds need 0 <= not_ai_generated <= ai_generated <= 1, got "
                f"{self.threshold_not_ai} and {self.threshold_ai}"
            )
        unknown = [c for c in self.source_classes if c not in SOURCE_SET]
        if unknown:
            raise ModelSpecError(f"source_classes not in the taxonomy: {unknown}")
        if (self.ood_output is None) != (self.threshold_ood is None):
            raise ModelSpecError("outputs.out_of_distribution and "
                                 "thresholds.out_of_distribution go together")
        if self.source_output and not self.source_classes:
            raise ModelSpecError("outputs.source is set but source_classes is empty")

    def resize_crop(self, img: Image.Image) -> Image.Image:
        """Geometric preprocessing of one RGB image to the model's input size."""
        w, h = img.size
        if self.resize == "stretch":
            return img.resize((self.width, self.height), self.resample_filter)
        scale = max(self.width / w, self.height / h)
        if self.shorter_side_max is not None:
            # at least the input size, at most shorter_side_max, never upscaled in between
            scale = max(scale, min(1.0, self.shorter_side_max / min(w, h)))
        new_w = max(self.width, round(w * scale))
        new_h = max(self.height, round(h * scale))
        if (new_w, new_h) != (w, h):
            img = img.resize((new_w, new_h), self.resample_filter)
        if self.crop == "center":
            left = (new_w - self.width) // 2
            top = (new_h - self.height) // 2
            img = img.crop((left, top, left + self.width, top + self.height))
        return img

    @property
    def decode_min_size(self) -> tuple[int, int]:
        """The smallest (w, h) a JPEG may be draft-decoded to before resize_crop."""
        if self.shorter_side_max is not None:
            return self.shorter_side_max, self.shorter_side_max
        return self.width, self.height

    def to_uint8(self, img: Image.Image) -> np.ndarray:
        """One preprocessed image as HWC uint8, the compact form passed between transforms."""
        return np.asarray(self.resize_crop(img), dtype=np.uint8)

    def normalize_batch(self, batch: np.ndarray) -> np.ndarray:
        """NHWC uint8 -> the model's layout and dtype, with scale, mean and std applied."""
        x = batch.astype(np.float32) * np.float32(self.scale)
        x -= np.asarray(self.mean, dtype=np.float32)
        x /= np.asarray(self.std, dtype=np.float32)
        if self.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x, dtype=self.dtype)


class WorkerModelSpec:
    """A model directory that exists only on the workers (a path in their container), for
    a job a remote runner runs: model.json is read on the worker, when first needed there.

    The submitting machine builds the job graph without it; what it would have checked
    (the model file, the GPU libraries) is checked where the model is loaded.
    """

    def __init__(self, model_dir: str):
        self.model_dir = model_dir
        self._spec: ModelSpec | None = None

    @property
    def model_id(self) -> str:
        """The real id once loaded; before that, the directory (what the submitter knows)."""
        return self._spec.model_id if self._spec is not None else f"model at {self.model_dir}"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_spec":
            raise AttributeError(name)
        if self._spec is None:
            self._spec = ModelSpec.load(self.model_dir)
        return getattr(self._spec, name)

    def __getstate__(self) -> dict[str, Any]:
        return {"model_dir": self.model_dir, "_spec": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


def load_spec(model_dir: str, on_workers_only: bool = False) -> ModelSpec | WorkerModelSpec:
    """ModelSpec.load, or, for a remote runner's job whose model directory is not on this
    machine, a WorkerModelSpec that the workers load."""
    if on_workers_only and not (Path(model_dir) / "model.json").is_file():
        return WorkerModelSpec(model_dir)
    return ModelSpec.load(model_dir)
