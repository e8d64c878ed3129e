"""The build's data: labelled rows from ../shared/data, augmentations, and the embeddings.

Every file's sha256 is checked against its SOURCES file; the embeddings are cached on disk
by a key over everything that determines them (encoder, files, seed, augmentation version).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image, ImageFilter, ImageOps

from synthsieve.evaluation.perturb import AS_IS, CONDITIONS, jpeg75_half
from synthsieve.images import to_rgb
from synthsieve.inference.kernels import U8S8, choose_kernel, signed_weights
from synthsieve.inference.preprocess import prepare
from synthsieve.inference.spec import ModelSpec
from synthsieve.models.assemble import ENCODER_INPUT, ENCODER_OUTPUT, ENCODER_SHA256, cache_dir
from synthsieve.models.features import N_BLOCKS, feature_model

AUGMENTATION_VERSION = 4  # bump when augment() changes, to invalidate the cache
TRAIN_AUGMENTED_COPIES = 2
DIVERSE_PARTS = ("ai", "photo", "art")
# the labelled sets under ../shared/data that share diverse/'s layout (SOURCES-{part}.csv)
DIVERSE_SETS = ("diverse", "diverse2")
# kinds as the model card reports them
KIND_PHOTO, KIND_ART, KIND_AI_PHOTO, KIND_AI_OTHER = (
    "photo", "human-made non-photo", "AI photoreal", "AI other")


@dataclass(frozen=True)
class Row:
    file: str  # relative to the data directory
    label: int  # 1 = AI-generated
    split: str  # train / val / test
    dataset: str  # "old" (SOURCES.csv) or "diverse"
    group: str  # the origin; cross-validation folds never split one
    kind: str  # one of the four KIND_ values
    detail: str  # the part's own kind (diagram, screenshot, ...)
    family: str  # generator family for AI rows, "" for real ones
    sha256: str


def generator_family(generator: str) -> str:
    """A generator string from a SOURCES file -> its family (diverse/README-ai.md's grouping,
    coarsened where one family's versions share an architecture)."""
    g = generator.lower()
    rules = (
        ("nano banana", "nano-banana"), ("gpt image", "gpt-image"), ("gpt-image", "gpt-image"),
        ("gpt-4o", "gpt-image"), ("dall-e mega", "dalle-mini"), ("min-dalle", "dalle-mini"),
        ("rudall", "rudalle"), ("dall-e", "dall-e"), ("midjourney", "midjourney"),
        ("sit-xl", "sit"), ("dit-xl", "dit"), ("stylegan", "stylegan"),
        ("deepfloyd", "deepfloyd-if"), ("kolors", "kolors"), ("liquid (", "liquid"),
        ("janusflow", "janus"), ("maskgen", "maskgen"), ("bagel", "bagel"), ("edm2", "edm"),
        ("hidream", "hidream"), ("omnigen", "omnigen"), ("progressive gan", "progan"),
        ("taming transformers", "vqgan"), ("lumina-mgpt", "lumina-mgpt"),
        ("flux", "flux"), ("chroma", "flux"),
        ("hunyuan", "hunyuan"), ("playground", "playground"), ("cascade", "stablecascade"),
        ("würstchen", "stablecascade"), ("wurstchen", "stablecascade"),
        ("sd 3", "sd3"), ("stable diffusion 3", "sd3"), ("sdxl", "sdxl"), ("xl", "sdxl"),
        ("photomaker", "sdxl"), ("instantid", "sdxl"), ("juggernaut", "sdxl"),
        ("mobius", "sdxl"), ("sana", "sana"), ("pixart", "pixart"), ("kandinsky", "kandinsky"),
        ("z-image", "z-image"), ("seedream", "seedream"), ("lumina", "lumina"),
        ("cogview", "cogview"), ("latent diffusion", "ldm"),
        ("sd 1", "sd1-2"), ("sd 2", "sd1-2"), ("stable diffusion", "sd1-2"),
        ("sd-family", "sd1-2"), ("unclip", "sd1-2"), ("zero123", "sd1-2"),
    )
    for key, family in rules:
        if key in g:
            return family
    return "other"


def _check(data_dir: Path, file: str, sha: str) -> None:
    got = hashlib.sha256((data_dir / file).read_bytes()).hexdigest()
    if got != sha:
        raise SystemExit(f"{file}: sha256 {got} does not match its SOURCES file")


def load_rows(data_dir: Path) -> list[Row]:
    """Old train/val/test plus diverse train/val, every file's hash checked."""
    rows: list[Row] = []
    with open(data_dir / "SOURCES.csv", newline="") as f:
        for r in csv.DictReader(f):
            if r["label"] not in ("ai", "real"):
                continue
            ai = r["label"] == "ai"
            # Old real photos are split by camera, so the camera is their origin.
            group = ("old:" + r["source_repo_or_package"] if ai
                     else "old-camera:" + r["generator_or_camera"])
            rows.append(Row(r["file"], int(ai), r["split"], "old", group,
                            KIND_AI_OTHER if ai else KIND_PHOTO, "old",
                            generator_family(r["generator_or_camera"]) if ai else "",
                            r["sha256"]))
    for dataset in DIVERSE_SETS:
        for part in DIVERSE_PARTS:
            with open(data_dir / dataset / f"SOURCES-{part}.csv", newline="") as f:
                for r in csv.DictReader(f):
                    ai = r["label"] == "ai"
                    if ai:
                        kind = KIND_AI_PHOTO if r["kind"] == "photo" else KIND_AI_OTHER
                    else:
                        kind = KIND_PHOTO if part == "photo" else KIND_ART
                    rows.append(Row(f"{dataset}/{r['file']}", int(ai), r["split"], dataset,
                                    r["origin"], kind, r["kind"],
                                    generator_family(r["generator_or_author"]) if ai else "",
                                    r["sha256"]))
    for r in rows:
        _check(data_dir, r.file, r.sha256)
    return rows


def images_sha256(rows: list[Row]) -> str:
    used = sorted((r.file, r.sha256, r.split) for r in rows)
    return hashlib.sha256(repr(used).encode()).hexdigest()


# --- augmentation -------------------------------------------------------------------


def _encode(img: Image.Image, fmt: str, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    if fmt in ("JPEG", "WEBP"):
        img.convert("RGB").save(buf, fmt, quality=quality)
    else:
        img.save(buf, fmt)
    return buf.getvalue()


def augment(data: bytes, rng: np.random.Generator) -> bytes:
    """One training copy as a web corpus might hold it: a random crop, often a rescale,
    sometimes blur or a screenshot-like upscale, then re-encoded as JPEG (quality 50-95),
    WebP or PNG. Each draw happens whether or not it is used, so a copy depends only on the
    seed and the image's position."""
    img = to_rgb(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    u = [float(v) for v in rng.uniform(size=8)]
    w, h = img.size
    area = 0.5 + 0.5 * u[0]
    cw, ch = max(32, int(w * area ** 0.5)), max(32, int(h * area ** 0.5))
    x0 = int(u[1] * max(0, w - cw))
    y0 = int(u[2] * max(0, h - ch))
    img = img.crop((x0, y0, min(w, x0 + cw), min(h, y0 + ch)))
    if u[3] < 0.5:  # downscale to 50-100 %
        s = 0.5 + 0.5 * u[4]
        img = img.resize((max(16, int(img.width * s)), max(16, int(img.height * s))),
                         Image.Resampling.BICUBIC if u[5] < 0.5 else Image.Resampling.LANCZOS)
    elif u[3] < 0.65:  # screenshot of an image shown larger than its size
        s = 1.0 + u[4]
        img = img.resize((int(img.width * s), int(img.height * s)), Image.Resampling.BILINEAR)
    if u[6] < 0.2:
        img = img.filter(ImageFilter.GaussianBlur(0.3 + 1.2 * u[5]))
    if u[7] < 0.7:
        return _encode(img, "JPEG", int(50 + 45 * (u[7] / 0.7)))
    if u[7] < 0.85:
        return _encode(img, "WEBP", int(60 + 35 * u[0]))
    return _encode(img, "PNG")


def variants(row: Row, data: bytes, rng: np.random.Generator) -> dict[str, bytes]:
    """Which copies of an image are embedded: train as-is plus augmented copies; val as-is
    and JPEG q75 at half size (the robustness the card reports); old test under every
    robustness condition."""
    if row.split == "train":
        out = {"orig": data}
        for i in range(TRAIN_AUGMENTED_COPIES):
            out[f"aug{i}"] = augment(data, rng)
        return out
    if row.split == "val" or row.dataset == "diverse":
        return {"orig": data, "jpeg75_half": jpeg75_half(data)}
    return {("orig" if c == AS_IS else c): (fn(data) if fn else data)
            for c, fn in CONDITIONS.items()}


# --- embedding ----------------------------------------------------------------------


class FeatureEmbedder:
    """Image bytes -> the final embedding and every block's CLS and patch-mean tokens,
    through synthsieve's own decode and preprocessing."""

    def __init__(self, encoder: Path, spec: ModelSpec, threads: int = 0):
        model = feature_model(onnx.load(str(encoder)), ENCODER_OUTPUT)
        if choose_kernel() == U8S8:  # the same features, faster where U8S8 is exact
            model = signed_weights(model)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self._session = ort.InferenceSession(model.SerializeToString(), opts,
                                             providers=["CPUExecutionProvider"])
        self._names = [o.name for o in self._session.get_outputs()]
        self.spec = spec

    def __call__(self, blob: bytes) -> np.ndarray:
        # One image per run: the encoder's dynamic INT8 quantisation shares one activation
        # scale across a batch, so batched features depend on their neighbours.
        x = self.spec.normalize_batch(prepare(blob, self.spec, 10**9)[1][None])
        outs = self._session.run(self._names, {ENCODER_INPUT: x})
        return np.concatenate([o[0] for o in outs]).astype(np.float32)


# Layout of one feature vector: the 512-d embedding, then per block CLS and patch mean.
EMBED_SLICE = slice(0, 512)


def token_slice(block: int, which: str) -> slice:
    start = 512 + (2 * block + (0 if which == "cls" else 1)) * 768
    return slice(start, start + 768)


FEATURE_DIM = 512 + 2 * N_BLOCKS * 768


@dataclass
class Embeddings:
    keys: list[tuple[str, str]]  # (file, variant)
    x: np.ndarray  # float16 [n, FEATURE_DIM]

    def index(self) -> dict[tuple[str, str], int]:
        return {k: i for i, k in enumerate(self.keys)}


def image_rng(seed: int, file: str) -> np.random.Generator:
    """Each image's own random stream: its augmented copies depend only on the seed and its
    path, so adding images to the data changes no other image's copies (and the cache
    stays valid for them)."""
    digest = hashlib.sha256(file.encode()).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])


def embed_all(embed: FeatureEmbedder, data_dir: Path, rows: list[Row], seed: int
              ) -> Embeddings:
    """Every row's variants, cached on disk by what determines them. The cache grows: images
    already embedded under the same encoder, preprocessing, seed and augmentation (matched
    by path and sha256) are read back, and only new ones run through the encoder."""
    pre = json.dumps(embed.spec.raw["preprocess"], sort_keys=True)
    key = hashlib.sha256(
        f"{ENCODER_SHA256}|uint8-weights|portable-softmax|features-v1|{pre}|{seed}|"
        f"{AUGMENTATION_VERSION}|{TRAIN_AUGMENTED_COPIES}|{sorted(CONDITIONS)}".encode()
    ).hexdigest()[:16]
    cache = cache_dir() / f"features-{key}.npz"
    have: dict[tuple[str, str, str], np.ndarray] = {}
    if cache.is_file():
        z = np.load(cache)
        have = {tuple(k.split("|", 2)): v for k, v in zip(z["keys"], z["x"], strict=True)}
    cached_files = {(f, sha) for f, _v, sha in have}
    todo = [r for r in sorted(rows, key=lambda r: r.file)
            if (r.file, r.sha256) not in cached_files]
    t0 = time.time()
    for i, r in enumerate(todo):
        data = (data_dir / r.file).read_bytes()
        for name, blob in variants(r, data, image_rng(seed, r.file)).items():
            have[(r.file, name, r.sha256)] = embed(blob).astype(np.float16)
        if (i + 1) % 50 == 0:
            print(f"  embedded {i + 1}/{len(todo)} new images in {time.time() - t0:.0f} s",
                  file=sys.stderr, flush=True)
    if todo:
        cache.parent.mkdir(parents=True, exist_ok=True)
        part = cache.with_suffix(".part.npz")
        np.savez(part, keys=np.array(["|".join(k) for k in have]),
                 x=np.stack(list(have.values())))
        part.replace(cache)
    wanted = {(r.file, r.sha256) for r in rows}
    keys = sorted(k for k in have if (k[0], k[2]) in wanted)
    return Embeddings([(f, v) for f, v, _sha in keys], np.stack([have[k] for k in keys]))
