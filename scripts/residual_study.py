"""Study for a low-level signal beside CLIP's: does a small CNN over high-pass residuals at
native resolution add to the bundled head, out of fold?

Not part of the model: it measures, with the build's own folds (grouped by origin, seed),
whether such a branch is worth building into the graph (issue 29, item 4), before the
model contract grows a second, native-resolution input for it.

The network (in the spirit of Tiny-LaDeDa): a fixed per-channel high-pass filter (the image
minus its 3x3 mean), three small strided convolutions, global average pooling, one logit
per 64x64 patch; an image's score is the mean patch logit over a grid of patches of its
centre. Only diverse/ and diverse2/ train images take part (within each set, AI and real
files are stored alike; the old set's formats differ by label). Every training copy of
either class is re-encoded as JPEG q60-95 and most are rescaled, so that the codec and the
storage size cannot separate the classes. Reported, per fold-held-out image: the residual
model's ROC-AUC as stored and after JPEG q75 at half size, and the TPR at the verdict of
the CLIP head alone and of a logistic stack of both logits (the stack fitted on the other
folds' out-of-fold logits), per kind.

    python scripts/residual_study.py --data ../shared/data [--epochs 4]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import model_fit as fit
import numpy as np
from build_default_model import SEED, spec_dict
from model_data import (
    DIVERSE_SETS,
    KIND_AI_OTHER,
    KIND_AI_PHOTO,
    KIND_ART,
    KIND_PHOTO,
    FeatureEmbedder,
    embed_all,
    image_rng,
    load_rows,
)
from PIL import Image
from sklearn.linear_model import LogisticRegression

from synthsieve.evaluation import metrics
from synthsieve.evaluation.perturb import jpeg75_half
from synthsieve.images import DEFAULT_MAX_PIXELS, decode_image
from synthsieve.inference.spec import ModelSpec
from synthsieve.models.assemble import fetch_encoder, portable_encoder_file

PATCH = 64
TRAIN_PATCHES = 8  # random patches per training copy
COPIES = 2  # augmented training copies per image
GRID = 4  # GRID x GRID patches of the centre score an image


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def decode(blob: bytes) -> Image.Image:
    """The pipeline's own decode, at the stored size."""
    return decode_image(blob, (PATCH, PATCH), DEFAULT_MAX_PIXELS, full_size=True).image


def training_copy(img: Image.Image, rng: np.random.Generator) -> np.ndarray:
    """Rescaled (70% of copies, to 50-100%) and always re-encoded as JPEG q60-95."""
    if rng.uniform() < 0.7:
        s = rng.uniform(0.5, 1.0)
        img = img.resize((max(PATCH, int(img.width * s)), max(PATCH, int(img.height * s))),
                         Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=int(rng.integers(60, 96)))
    return np.asarray(decode(buf.getvalue()), dtype=np.uint8)


def random_patches(a: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    a = pad(a)
    h, w = a.shape[:2]
    ys = rng.integers(0, h - PATCH + 1, n)
    xs = rng.integers(0, w - PATCH + 1, n)
    return np.stack([a[y:y + PATCH, x:x + PATCH] for y, x in zip(ys, xs, strict=True)])


def grid_patches(a: np.ndarray) -> np.ndarray:
    """GRID x GRID patches spread over the central region."""
    a = pad(a)
    h, w = a.shape[:2]
    ys = np.linspace(h // 4, max(h // 4, 3 * h // 4 - PATCH), GRID).astype(int)
    xs = np.linspace(w // 4, max(w // 4, 3 * w // 4 - PATCH), GRID).astype(int)
    ys = np.clip(ys, 0, h - PATCH)
    xs = np.clip(xs, 0, w - PATCH)
    return np.stack([a[y:y + PATCH, x:x + PATCH] for y in ys for x in xs])


def pad(a: np.ndarray) -> np.ndarray:
    h, w = a.shape[:2]
    if h >= PATCH and w >= PATCH:
        return a
    return np.pad(a, ((0, max(0, PATCH - h)), (0, max(0, PATCH - w)), (0, 0)), mode="edge")


def network():
    import torch
    from torch import nn

    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            # fixed high-pass: the pixel minus the mean of its 3x3 neighbourhood
            k = -np.ones((3, 1, 3, 3), np.float32) / 9
            k[:, 0, 1, 1] += 1
            self.hp = nn.Conv2d(3, 3, 3, padding=1, groups=3, bias=False)
            self.hp.weight.data = torch.from_numpy(k)
            self.hp.weight.requires_grad_(False)
            self.body = nn.Sequential(
                nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 1))

        def forward(self, x):
            return self.body(self.hp(x * (1 / 255.0)) * 20.0).squeeze(1)

    return Residual()


def train(x: np.ndarray, y: np.ndarray, epochs: int, seed: int):
    import torch

    torch.manual_seed(seed)
    net = network()
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=2e-3)
    pos = y.mean()
    lossf = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor((1 - pos) / pos))
    rng = np.random.default_rng(seed)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2)
    yt = torch.from_numpy(y.astype(np.float32))
    net.train()
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for i in range(0, len(order), 128):
            b = torch.from_numpy(order[i:i + 128])
            opt.zero_grad()
            loss = lossf(net(xt[b].float()), yt[b])
            loss.backward()
            opt.step()
    net.eval()
    return net


def image_logits(net, patches: list[np.ndarray]) -> np.ndarray:
    import torch

    with torch.no_grad():
        return np.array([float(net(torch.from_numpy(p).permute(0, 3, 1, 2).float()).mean())
                         for p in patches])


def tpr_at_caps(y: np.ndarray, kind: np.ndarray, p: np.ndarray) -> tuple[float, dict]:
    """The build's rule (fit.MAX_FPR per real kind) on one set of scores."""
    called = p >= fit.ai_threshold(y, kind, p)
    return float(called[y == 1].mean()), {
        k: round(float(called[kind == k].mean()), 4)
        for k in (KIND_AI_PHOTO, KIND_AI_OTHER, KIND_PHOTO, KIND_ART)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data"))
    ap.add_argument("--epochs", type=int, default=4)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    data = Path(args.data).resolve()
    rows = load_rows(data)
    spec = ModelSpec.from_dict(spec_dict((0.5, 0.5), None, {}), "")
    emb = embed_all(FeatureEmbedder(portable_encoder_file(fetch_encoder(None)), spec), data,
                    rows, SEED)
    ts = fit.TrainSet.build(emb, rows, SEED)
    cand = next(c for c in fit.CANDIDATES
                if c.blocks == fit.LATE and c.c == 0.003 and c.old_weight == 0.3)
    clip_oof = fit.out_of_fold(ts, cand)
    members = [i for i, (f, o) in enumerate(zip(ts.files, ts.orig, strict=True))
               if o and ts.rows[f].dataset in DIVERSE_SETS]
    files = [ts.files[i] for i in members]
    y = ts.y[members]
    kind = ts.kind[members]
    fold = ts.fold[members]
    clip = clip_oof[members]
    log(f"{len(files)} diverse/diverse2 train images; preparing patches")
    t0 = time.time()
    train_x, train_owner, stored, reencoded = [], [], [], []
    for j, f in enumerate(files):
        blob = (data / f).read_bytes()
        img = decode(blob)
        rng = image_rng(SEED + 1, f)
        for _ in range(COPIES):
            train_x.append(random_patches(training_copy(img, rng), TRAIN_PATCHES, rng))
            train_owner += [j] * TRAIN_PATCHES
        stored.append(grid_patches(np.asarray(img, dtype=np.uint8)))
        reencoded.append(grid_patches(np.asarray(decode(jpeg75_half(blob)), dtype=np.uint8)))
    tx = np.concatenate(train_x)
    owner = np.array(train_owner)
    log(f"  {len(tx)} training patches in {time.time() - t0:.0f} s")
    res = np.zeros(len(files))
    res_re = np.zeros(len(files))
    for k in range(fit.N_FOLDS):
        t0 = time.time()
        tr = fold[owner] != k
        net = train(tx[tr], y[owner][tr], args.epochs, SEED + k)
        te = np.flatnonzero(fold == k)
        res[te] = image_logits(net, [stored[i] for i in te])
        res_re[te] = image_logits(net, [reencoded[i] for i in te])
        log(f"  fold {k}: {time.time() - t0:.0f} s, held-out ROC-AUC "
            f"{metrics.roc_auc(y[te], res[te]):.4f}")
    # the stack: fitted per fold on the other folds' out-of-fold logits
    stack = np.zeros(len(files))
    z = np.column_stack([clip, res])
    for k in range(fit.N_FOLDS):
        tr, te = fold != k, fold == k
        lr = LogisticRegression(C=1.0, class_weight="balanced").fit(z[tr], y[tr])
        stack[te] = lr.decision_function(z[te])
    photo_like = np.isin(kind, (KIND_PHOTO, KIND_AI_PHOTO))
    out = {"images": len(files), "epochs": args.epochs,
           "residual_roc_auc": round(metrics.roc_auc(y, res), 4),
           "residual_roc_auc_jpeg75_half": round(metrics.roc_auc(y, res_re), 4),
           "residual_roc_auc_photo_like": round(metrics.roc_auc(y[photo_like],
                                                                res[photo_like]), 4),
           "residual_roc_auc_other": round(metrics.roc_auc(y[~photo_like],
                                                           res[~photo_like]), 4)}
    for name, score in (("clip", clip), ("stack", stack)):
        a, b = fit.platt(score, y)
        p = fit.sigmoid(a * score + b)
        tpr, per_kind = tpr_at_caps(y, kind, p)
        out[name] = {"roc_auc": round(metrics.roc_auc(y, score), 4),
                     "tpr_at_verdict": round(tpr, 4), "called_ai": per_kind}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
