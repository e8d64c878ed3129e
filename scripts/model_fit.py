"""Fitting the bundled model's head: every choice from cross-validation on train only.

Folds are grouped by origin (one repository or package is never split between folds), so
an out-of-fold score is what the model gives an image from a source it has not seen. Model
choice, calibration, verdict thresholds and the out-of-distribution rule all come from
those out-of-fold scores; val and the old test split are only reported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from model_data import EMBED_SLICE, KIND_ART, KIND_PHOTO, Embeddings, Row, token_slice
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.neural_network import MLPClassifier

from synthsieve.evaluation import metrics
from synthsieve.models.assemble import ENCODER_OUTPUT, encode_array
from synthsieve.models.features import cls_name, patch_mean_name

N_FOLDS = 5
# The ai_generated verdict may call at most this share of real images AI, per kind,
# on out-of-fold scores (orig and augmented copies of held-out images).
MAX_FPR = {KIND_PHOTO: 0.01, KIND_ART: 0.02}
# not_ai_generated may be given to at most this share of AI images (out-of-fold).
MAX_FNR = 0.05
# Out-of-distribution: the share of held-out train images (by distance to the training
# centroids fitted without them) that the rule may set aside as inconclusive.
OOD_ABSTAIN = 0.02
OOD_CENTROIDS = 64


@dataclass(frozen=True)
class Candidate:
    """One feature set and head setting that cross-validation compares."""

    name: str
    blocks: tuple[int, ...]  # CLS tokens of these blocks next to the final embedding
    c: float  # inverse L2 regularisation (logistic head), or the MLP's weight decay
    old_weight: float = 1.0  # sample weight of the older ../shared/data images
    patch_means: bool = False  # also the mean patch token of each block
    hidden: int = 0  # 0: a logistic head; else one ReLU layer of this width

    def tensors(self) -> list[str]:
        out = [ENCODER_OUTPUT]
        for b in self.blocks:
            out.append(cls_name(b))
            if self.patch_means:
                out.append(patch_mean_name(b))
        return out


LATE = (4, 5, 6, 7, 8, 9, 10, 11)
CANDIDATES = [
    Candidate("embedding", (), 1.0),
    Candidate("embedding", (), 0.1),
    *(Candidate(f"embedding + CLS of blocks {b[0]}-{b[-1]}", b, c, w)
      for b in ((1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11), LATE)
      for c in (0.003, 0.01, 0.03)
      for w in (1.0, 0.3)),
    Candidate("embedding + CLS and mean patch token of blocks 4-11", LATE, 0.01,
              patch_means=True),
    Candidate("embedding + CLS of blocks 4-11, MLP with 128 ReLU units", LATE, 1.0,
              hidden=128),
]


def design(emb: Embeddings, idx: np.ndarray, cand: Candidate) -> np.ndarray:
    """Each tensor L2-normalised, then concatenated in cand.tensors() order: what the
    assembled graph computes."""
    slices = [EMBED_SLICE]
    for b in cand.blocks:
        slices.append(token_slice(b, "cls"))
        if cand.patch_means:
            slices.append(token_slice(b, "patch"))
    parts = []
    for sl in slices:
        t = emb.x[idx, sl].astype(np.float64)
        parts.append(t / np.linalg.norm(t, axis=1, keepdims=True))
    return np.concatenate(parts, axis=1)


@dataclass
class TrainSet:
    """Train rows' embeddings (orig and augmented copies) with their folds."""

    emb: Embeddings
    rows: dict[str, Row]
    idx: np.ndarray  # positions in emb of train copies
    fold: np.ndarray
    y: np.ndarray
    orig: np.ndarray  # the stored file, not an augmented copy
    kind: np.ndarray
    old: np.ndarray
    files: list[str] = field(default_factory=list)

    @classmethod
    def build(cls, emb: Embeddings, rows: list[Row], seed: int) -> TrainSet:
        by_file = {r.file: r for r in rows}
        train = sorted(r.file for r in rows if r.split == "train")
        folds = StratifiedGroupKFold(N_FOLDS, shuffle=True, random_state=seed).split(
            train, [by_file[f].label for f in train], [by_file[f].group for f in train])
        fold_of = {train[j]: k for k, (_, te) in enumerate(folds) for j in te}
        idx = np.array([i for i, (f, _v) in enumerate(emb.keys) if f in fold_of])
        files = [emb.keys[i][0] for i in idx]
        return cls(emb, by_file, idx,
                   fold=np.array([fold_of[f] for f in files]),
                   y=np.array([by_file[f].label for f in files]),
                   orig=np.array([emb.keys[i][1] == "orig" for i in idx]),
                   kind=np.array([by_file[f].kind for f in files]),
                   old=np.array([by_file[f].dataset == "old" for f in files]),
                   files=files)


@dataclass
class Head:
    """Dense layers on the design matrix, standardisation folded into the first; the last
    layer gives one logit. `scale` multiplies and `shift` adds to that logit (calibration)."""

    layers: list[tuple[np.ndarray, np.ndarray]]  # (weights [in, out], bias [out])

    def logit(self, x: np.ndarray) -> np.ndarray:
        for i, (w, b) in enumerate(self.layers):
            x = x @ w + b
            if i < len(self.layers) - 1:
                x = np.maximum(x, 0.0)
        return x.reshape(-1)

    def calibrated(self, a: float, b: float) -> Head:
        *hidden, (w, bias) = self.layers
        return Head([*hidden, (w * a, bias * a + b)])


def fit_head(x: np.ndarray, y: np.ndarray, cand: Candidate, weight: np.ndarray,
             seed: int = 0) -> Head:
    """Standardise and fit the candidate's head; the standardisation is folded into the
    first layer so the graph needs only MatMul/Add."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = (x - mu) / sd
    if cand.hidden:
        clf = MLPClassifier((cand.hidden,), alpha=cand.c, max_iter=200, random_state=seed)
        # MLPClassifier has no class weights: balance the classes through the sample weights
        balance = np.where(y == 1, len(y) / (2 * y.sum()), len(y) / (2 * (len(y) - y.sum())))
        clf.fit(z, y, sample_weight=weight * balance)
        (w1, w2), (b1, b2) = clf.coefs_, clf.intercepts_
        w1f = w1 / sd[:, None]
        return Head([(w1f, b1 - mu @ w1f), (w2, b2)])
    clf = LogisticRegression(C=cand.c, max_iter=5000, class_weight="balanced")
    clf.fit(z, y, sample_weight=weight)
    w = clf.coef_[0] / sd
    return Head([(w.reshape(-1, 1), np.array([clf.intercept_[0] - mu @ w]))])


def out_of_fold(ts: TrainSet, cand: Candidate) -> np.ndarray:
    """Out-of-fold logits for every train copy; each fold's head is fitted on the other
    folds' images, originals and augmented copies alike."""
    x = design(ts.emb, ts.idx, cand)
    weight = np.where(ts.old, cand.old_weight, 1.0)
    oof = np.zeros(len(ts.idx))
    for k in range(N_FOLDS):
        tr, te = ts.fold != k, ts.fold == k
        oof[te] = fit_head(x[tr], ts.y[tr], cand, weight[tr]).logit(x[te])
    return oof


def oof_auc(ts: TrainSet, cand: Candidate) -> float:
    oof = out_of_fold(ts, cand)
    return round(metrics.roc_auc(ts.y[ts.orig], oof[ts.orig]), 4)


BOOTSTRAP_REPS = 200


def grouped_bootstrap_se(ts: TrainSet, score: np.ndarray, seed: int) -> float:
    """Standard error of the out-of-fold ROC-AUC (stored files) when whole origins are
    resampled: the uncertainty that matters for sources the model has not seen."""
    m = ts.orig
    y, s = ts.y[m], score[m]
    groups = np.array([ts.rows[f].group for f, keep in zip(ts.files, m, strict=True) if keep])
    names, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(names))]
    rng = np.random.default_rng(seed)
    aucs = []
    for _ in range(BOOTSTRAP_REPS):
        pick = np.concatenate([members[g] for g in rng.integers(0, len(names), len(names))])
        auc = metrics.roc_auc(y[pick], s[pick])
        if auc is not None:
            aucs.append(auc)
    return float(np.std(aucs))


def complexity(cand: Candidate) -> tuple:
    """Simpler first: a linear head, no patch tokens, fewer blocks, stronger regularisation
    (smaller C), the old images at full weight (no reweighting)."""
    return (cand.hidden, cand.patch_means, len(cand.blocks), cand.c, cand.old_weight != 1.0)


def select(ts: TrainSet, log: Callable[[str], None], seed: int,
           keep: Candidate | None = None) -> tuple[Candidate, np.ndarray, list]:
    """The simplest candidate whose out-of-fold ROC-AUC (stored files) is within one
    standard error of the best (the one-standard-error rule: differences smaller than the
    origin-to-origin noise are not evidence, and a simpler head generalises more safely).
    With `keep`, that candidate is used instead, and the table records what the rule chose."""
    table, results = [], []
    for cand in CANDIDATES:
        oof = out_of_fold(ts, cand)
        auc = metrics.roc_auc(ts.y[ts.orig], oof[ts.orig])
        art = ts.orig & ((ts.kind == KIND_ART) | (ts.y == 1))
        entry = {"candidate": cand.name, "C": cand.c, "old_weight": cand.old_weight,
                 "oof_roc_auc": round(auc, 4),
                 "oof_roc_auc_ai_vs_art": round(metrics.roc_auc(ts.y[art], oof[art]), 4)}
        table.append(entry)
        results.append((cand, auc, oof))
        log(f"  {cand.name}, C={cand.c}, old weight {cand.old_weight}: out-of-fold "
            f"ROC-AUC {entry['oof_roc_auc']} (AI vs art {entry['oof_roc_auc_ai_vs_art']})")
    best_cand, best_auc, best_oof = max(results, key=lambda r: r[1])
    se = grouped_bootstrap_se(ts, best_oof, seed)
    eligible = [r for r in results if r[1] >= best_auc - se]
    chosen = min(eligible, key=lambda r: complexity(r[0]))
    log(f"  best {best_cand.name} (C={best_cand.c}) {best_auc:.4f}, standard error {se:.4f} "
        f"(origins resampled); simplest within one SE: {chosen[0].name} (C={chosen[0].c})")
    rule = {"rule": "one standard error", "best_oof_roc_auc": round(best_auc, 4),
            "standard_error": round(se, 4)}
    if keep is not None:
        kept = next((r for r in results if r[0] == keep), None)
        if kept is None:
            raise SystemExit(f"--keep-candidate: {keep} is not among the candidates")
        rule["rule_would_choose"] = {"candidate": chosen[0].name, "C": chosen[0].c,
                                     "old_weight": chosen[0].old_weight}
        log(f"  kept {kept[0].name} (C={kept[0].c}) as --keep-candidate asks")
        chosen = kept
    for entry, (cand, _auc, _oof) in zip(table, results, strict=True):
        entry["chosen"] = cand is chosen[0]
    table.append(rule)
    return chosen[0], chosen[2], table


def platt(logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """p = sigmoid(a * logit + b) fitted on out-of-fold logits; a stays positive."""
    clf = LogisticRegression(C=1e4, max_iter=5000).fit(logits.reshape(-1, 1), y)
    a, b = float(clf.coef_[0, 0]), float(clf.intercept_[0])
    return (a, b) if a > 0 else (1.0, 0.0)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def thresholds(ts: TrainSet, p: np.ndarray) -> tuple[float, float, dict]:
    """ai_generated: the lowest threshold whose out-of-fold false positive rate is within
    MAX_FPR for each real kind; not_ai_generated: the highest whose out-of-fold false
    negative rate is within MAX_FNR, never above the AI threshold."""
    t_ai = 0.5
    for kind, cap in MAX_FPR.items():
        s = np.sort(p[(ts.y == 0) & (ts.kind == kind)])
        allowed = int(np.floor(cap * len(s)))
        t_ai = max(t_ai, float(s[len(s) - 1 - allowed]) + 1e-6)
    ai = np.sort(p[ts.y == 1])
    t_not = min(float(ai[int(np.floor(MAX_FNR * len(ai)))]) - 1e-6, t_ai)
    rule = (f"ai_generated: lowest threshold with out-of-fold FPR <= "
            f"{MAX_FPR[KIND_PHOTO]:.0%} on photos and <= {MAX_FPR[KIND_ART]:.0%} on human-made "
            f"non-photo images; not_ai_generated: highest with out-of-fold FNR <= {MAX_FNR:.0%}"
            "; both on the stored files and their augmented copies")
    return round(t_not, 6), round(t_ai, 6), {"rule": rule}


def fit_ood(ts: TrainSet, seed: int) -> tuple[np.ndarray, float, np.ndarray]:
    """Centroids of the train images' final embeddings and the distance threshold.

    The threshold is the (1 - OOD_ABSTAIN) quantile of out-of-fold distances: each held-out
    image's distance to centroids fitted without its fold. Returns the centroids fitted on
    all train images, the threshold and the out-of-fold distances."""
    def unit(idx: np.ndarray) -> np.ndarray:
        e = ts.emb.x[idx, EMBED_SLICE].astype(np.float64)
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    def centroids(e: np.ndarray) -> np.ndarray:
        km = KMeans(OOD_CENTROIDS, n_init=4, random_state=seed).fit(e)
        c = km.cluster_centers_
        return c / np.linalg.norm(c, axis=1, keepdims=True)

    oof = np.zeros(len(ts.idx))
    for k in range(N_FOLDS):
        tr = (ts.fold != k) & ts.orig
        c = centroids(unit(ts.idx[tr]))
        te = ts.fold == k
        oof[te] = 1.0 - (unit(ts.idx[te]) @ c.T).max(1)
    threshold = float(np.quantile(oof, 1.0 - OOD_ABSTAIN))
    return centroids(unit(ts.idx[ts.orig])), round(threshold, 6), oof


def head_json(cand: Candidate, head: Head, centroids: np.ndarray) -> dict:
    last = len(head.layers) - 1
    return {
        "format": "synthsieve-head/2",
        "features": [{"tensor": t, "normalise": "l2"} for t in cand.tensors()],
        "layers": [{"weights": encode_array(w), "bias": [round(float(v), 7) for v in b],
                    "activation": "none" if i == last else "relu"}
                   for i, (w, b) in enumerate(head.layers)],
        "ood": {"tensor": ENCODER_OUTPUT, "centroids": encode_array(centroids)},
    }
