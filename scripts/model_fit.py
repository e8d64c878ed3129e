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
from model_data import (
    EMBED_SLICE,
    KIND_AI_OTHER,
    KIND_AI_PHOTO,
    KIND_ART,
    KIND_PHOTO,
    Embeddings,
    Row,
    token_slice,
)
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


def group_folds(files: list[str], rows: dict[str, Row], n: int, seed: int) -> dict[str, int]:
    """file -> one of n folds, stratified by label, never splitting an origin."""
    folds = StratifiedGroupKFold(n, shuffle=True, random_state=seed).split(
        files, [rows[f].label for f in files], [rows[f].group for f in files])
    return {files[j]: k for k, (_, te) in enumerate(folds) for j in te}


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
        fold_of = group_folds(train, by_file, N_FOLDS, seed)
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


def out_of_fold(ts: TrainSet, cand: Candidate, ens: Ensemble | None = None, seed: int = 0
                ) -> np.ndarray:
    """Out-of-fold logits for every train copy; each fold's heads (one, unless `ens` says
    otherwise) are fitted on the other folds' images, originals and augmented copies
    alike."""
    ens = ens or Ensemble()
    x = design(ts.emb, ts.idx, cand)
    oof = np.zeros(len(ts.idx))
    for k in range(N_FOLDS):
        head = ens.fit(ts, x, ts.fold != k, cand, seed + k)
        oof[ts.fold == k] = head.logit(x[ts.fold == k])
    return oof


BOOTSTRAP_REPS = 200


def origin_bootstrap_se(ts: TrainSet, called: np.ndarray, seed: int,
                        baseline: np.ndarray | None = None) -> float:
    """Standard error of the out-of-fold TPR at the verdict (the share of AI stored files
    `called` ai_generated), or of its difference from `baseline`'s on the same images, when
    whole origins are resampled: the uncertainty that matters for sources the model has
    not seen."""
    m = ts.orig & (ts.y == 1)
    value = called[m].astype(float)
    if baseline is not None:
        value -= baseline[m]
    groups = np.array([ts.rows[f].group for f, keep in zip(ts.files, m, strict=True) if keep])
    names, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(names))]
    rng = np.random.default_rng(seed)
    return float(np.std([value[np.concatenate([members[g] for g in rng.integers(
        0, len(names), len(names))])].mean() for _ in range(BOOTSTRAP_REPS)]))


def verdict_metrics(ts: TrainSet, oof_logit: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Out-of-fold logits calibrated and thresholded as the build does (platt, thresholds):
    ROC-AUC on the stored files, the share of AI stored files called ai_generated, and
    which copies are."""
    a, b = platt(oof_logit[ts.orig], ts.y[ts.orig])
    p = sigmoid(a * oof_logit + b)
    called = p >= thresholds(ts, p)[1]
    auc = metrics.roc_auc(ts.y[ts.orig], oof_logit[ts.orig])
    return auc, float(called[ts.orig & (ts.y == 1)].mean()), called


def complexity(cand: Candidate) -> tuple:
    """Simpler first: a linear head, no patch tokens, fewer blocks, stronger regularisation
    (smaller C), the old images at full weight (no reweighting)."""
    return (cand.hidden, cand.patch_means, len(cand.blocks), cand.c, cand.old_weight != 1.0)


def select(ts: TrainSet, log: Callable[[str], None], seed: int,
           keep: Candidate | None = None) -> tuple[Candidate, np.ndarray, list]:
    """The simplest candidate whose out-of-fold TPR at the verdict (stored AI files called
    ai_generated at the threshold that keeps real images within MAX_FPR) is within one
    standard error of the best. The TPR at that threshold is what the product is asked
    for; the one-standard-error rule because differences smaller than the origin-to-origin
    noise are not evidence, and a simpler head generalises more safely. With `keep`, that
    candidate is used instead, and the table records what the rule chose."""
    table, results = [], []
    for cand in CANDIDATES:
        oof = out_of_fold(ts, cand)
        auc, tpr, called = verdict_metrics(ts, oof)
        art = ts.orig & ((ts.kind == KIND_ART) | (ts.y == 1))
        entry = {"candidate": cand.name, "C": cand.c, "old_weight": cand.old_weight,
                 "oof_roc_auc": round(auc, 4),
                 "oof_roc_auc_ai_vs_art": round(metrics.roc_auc(ts.y[art], oof[art]), 4),
                 "oof_tpr_at_verdict": round(tpr, 4)}
        table.append(entry)
        results.append((cand, tpr, oof, called))
        log(f"  {cand.name}, C={cand.c}, old weight {cand.old_weight}: out-of-fold "
            f"ROC-AUC {entry['oof_roc_auc']} (AI vs art {entry['oof_roc_auc_ai_vs_art']}), "
            f"TPR at the verdict {entry['oof_tpr_at_verdict']}")
    best_cand, best_tpr, _oof, best_called = max(results, key=lambda r: r[1])
    se = origin_bootstrap_se(ts, best_called, seed)
    eligible = [r for r in results if r[1] >= best_tpr - se]
    chosen = min(eligible, key=lambda r: complexity(r[0]))
    log(f"  best {best_cand.name} (C={best_cand.c}) TPR {best_tpr:.4f}, standard error "
        f"{se:.4f} (origins resampled); simplest within one SE: {chosen[0].name} "
        f"(C={chosen[0].c})")
    rule = {"rule": "one standard error", "best_oof_tpr_at_verdict": round(best_tpr, 4),
            "standard_error": round(se, 4)}
    if keep is not None:
        kept = next((r for r in results if r[0] == keep), None)
        if kept is None:
            raise SystemExit(f"--keep-candidate: {keep} is not among the candidates")
        rule["rule_would_choose"] = {"candidate": chosen[0].name, "C": chosen[0].c,
                                     "old_weight": chosen[0].old_weight}
        log(f"  kept {kept[0].name} (C={kept[0].c}) as --keep-candidate asks")
        chosen = kept
    for entry, (cand, _tpr, _oof, _called) in zip(table, results, strict=True):
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


def ai_threshold(y: np.ndarray, kind: np.ndarray, p: np.ndarray) -> float:
    """The lowest ai_generated threshold (at least 0.5) that calls at most MAX_FPR of each
    real kind AI."""
    t_ai = 0.5
    for k, cap in MAX_FPR.items():
        s = np.sort(p[(y == 0) & (kind == k)])
        allowed = int(np.floor(cap * len(s)))
        t_ai = max(t_ai, float(s[len(s) - 1 - allowed]) + 1e-6)
    return t_ai


def thresholds(ts: TrainSet, p: np.ndarray) -> tuple[float, float, dict]:
    """ai_generated: the lowest threshold whose out-of-fold false positive rate is within
    MAX_FPR for each real kind; not_ai_generated: the highest whose out-of-fold false
    negative rate is within MAX_FNR, never above the AI threshold."""
    t_ai = ai_threshold(ts.y, ts.kind, p)
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


# --- the kind of image, and a threshold per kind ---------------------------------------

PHOTO_LIKE, OTHER = "photo_like", "other"
# Real images and AI images whose `kind` says photograph (or photoreal) are photo-like.
PHOTO_LIKE_KINDS = (KIND_PHOTO, KIND_AI_PHOTO)
KIND_CANDIDATE = Candidate("embedding (kind)", (), 0.1)


def kind_known(ts: TrainSet) -> np.ndarray:
    """The old set's AI images carry no kind column: they train and judge no kind head."""
    return ~(ts.old & (ts.y == 1))


def kind_out_of_fold(ts: TrainSet) -> np.ndarray:
    """Out-of-fold P(photo-like) for every train copy, from a logistic head on the final
    embedding fitted on the other folds' images of known kind."""
    x = design(ts.emb, ts.idx, KIND_CANDIDATE)
    yk = np.isin(ts.kind, PHOTO_LIKE_KINDS).astype(int)
    known = kind_known(ts)
    out = np.zeros(len(ts.idx))
    for k in range(N_FOLDS):
        tr, te = (ts.fold != k) & known, ts.fold == k
        out[te] = sigmoid(fit_head(x[tr], yk[tr], KIND_CANDIDATE, np.ones(tr.sum())).logit(x[te]))
    return out


def _above(s: np.ndarray, t: np.ndarray) -> np.ndarray:
    """For each threshold in t, how many of the scores s are >= it."""
    s = np.sort(s)
    return len(s) - np.searchsorted(s, t, side="left")


def thresholds_by_kind(ts: TrainSet, p: np.ndarray, photo_like: np.ndarray,
                       within: bool = True) -> dict[str, float]:
    """An ai_generated threshold per predicted kind (photo-like when P >= 0.5), the pair
    that calls the most AI copies AI while the real images stay within MAX_FPR: counted per
    true kind over all its images (each judged by the threshold of the kind predicted for
    it, so a misprediction counts) and, `within`, again within each predicted kind."""
    pred_pl = photo_like >= 0.5
    real = ts.y == 0
    groups = {PHOTO_LIKE: pred_pl, OTHER: ~pred_pl}
    grid = {}
    for g, m in groups.items():
        cand = np.unique(np.concatenate([p[real & m] + 1e-6, [0.5, 1.0 + 1e-6]]))
        grid[g] = cand[cand >= 0.5]
    a, b = np.meshgrid(grid[PHOTO_LIKE], grid[OTHER], indexing="ij")
    ok = np.ones(a.shape, bool)
    for kind, cap in MAX_FPR.items():
        n_kind = int((real & (ts.kind == kind)).sum())
        fp_total = np.zeros(a.shape, int)
        for g, t in ((PHOTO_LIKE, a), (OTHER, b)):
            sel = real & (ts.kind == kind) & groups[g]
            fp = _above(p[sel], t)
            fp_total += fp
            if within:
                ok &= fp <= int(np.floor(cap * sel.sum()))
        ok &= fp_total <= int(np.floor(cap * n_kind))
    ai = ts.y == 1
    tp = _above(p[ai & pred_pl], a) + _above(p[ai & ~pred_pl], b)
    tp = np.where(ok, tp, -1)
    i, j = np.unravel_index(int(np.argmax(tp)), tp.shape)
    return {PHOTO_LIKE: round(float(a[i, j]), 6), OTHER: round(float(b[i, j]), 6)}


def verdict_threshold(t: dict[str, float], photo_like: np.ndarray) -> np.ndarray:
    """The ai_generated threshold each image is held to, by its predicted kind."""
    return np.where(photo_like >= 0.5, t[PHOTO_LIKE], t[OTHER])


def _called(ts: TrainSet, p: np.ndarray, threshold: np.ndarray) -> dict[str, float]:
    """Share of the stored files called ai_generated, per kind and over all AI images."""
    called = p >= threshold
    out = {k: round(float(called[ts.orig & (ts.kind == k)].mean()), 4)
           for k in (KIND_AI_PHOTO, KIND_AI_OTHER, KIND_PHOTO, KIND_ART)}
    out["tpr"] = round(float(called[ts.orig & (ts.y == 1)].mean()), 4)
    return out


def kind_threshold_study(ts: TrainSet, p: np.ndarray, t_ai: float) -> dict:
    """What an ai_generated threshold per predicted kind would buy over the one threshold,
    on the same out-of-fold scores: the kind head's accuracy, and the share called AI per
    kind under one threshold, per-kind thresholds by the strict rule (caps also within each
    predicted kind), by the loose rule (caps over each true kind only), and with the true
    kind in place of the predicted one (the most any kind head could buy)."""
    photo_like = kind_out_of_fold(ts)
    known = kind_known(ts) & ts.orig
    true_pl = np.isin(ts.kind, PHOTO_LIKE_KINDS)
    rows = {"one threshold": (t_ai, _called(ts, p, np.full(len(p), t_ai)))}
    for name, k, within in (("per predicted kind, caps within each kind too", photo_like, True),
                            ("per predicted kind, caps over each true kind", photo_like, False),
                            ("per true kind (an oracle)", true_pl.astype(float), True)):
        t = thresholds_by_kind(ts, p, k, within)
        rows[name] = (t, _called(ts, p, verdict_threshold(t, k)))
    return {"kind_head": f"{KIND_CANDIDATE.name}, logistic, C={KIND_CANDIDATE.c}",
            "kind_oof_accuracy": round(float(((photo_like >= 0.5) == true_pl)[known].mean()), 4),
            "rules": [{"rule": name, "thresholds": t, "called_ai": called}
                      for name, (t, called) in rows.items()]}


# --- bagging over origin folds, and weight on hard real images -------------------------

BAGS = 5
HARD_SHARE = 0.10  # the real train images scoring highest out of fold ...
HARD_WEIGHT = 3.0  # ... get this sample weight


def _inner_folds(ts: TrainSet, sel: np.ndarray, seed: int) -> np.ndarray:
    """Folds grouped by origin inside the copies `sel` (-1 outside)."""
    files = [f for f, s in zip(ts.files, sel, strict=True) if s]
    fold_of = group_folds(sorted(set(files)), ts.rows, BAGS, seed)
    out = np.full(len(ts.files), -1)
    out[sel] = [fold_of[f] for f in files]
    return out


@dataclass(frozen=True)
class Ensemble:
    """How heads are fitted on a set of train copies: one head, or BAGS heads each without
    one origin fold (averaged logits; for a linear head, averaged weights), optionally
    after raising the weight of the real images the inner heads score highest."""

    bags: bool = False
    hard: bool = False

    @property
    def name(self) -> str:
        parts = ([f"{BAGS} heads over origin folds"] if self.bags else ["one head"])
        if self.hard:
            parts.append(f"hard real images x{HARD_WEIGHT:g}")
        return ", ".join(parts)

    def fit(self, ts: TrainSet, x: np.ndarray, sel: np.ndarray, cand: Candidate,
            seed: int) -> Head:
        weight = np.where(ts.old, cand.old_weight, 1.0)
        if not (self.bags or self.hard):
            return fit_head(x[sel], ts.y[sel], cand, weight[sel])
        inner = _inner_folds(ts, sel, seed)

        def bag(weight: np.ndarray) -> list[Head]:
            return [fit_head(x[sel & (inner != b)], ts.y[sel & (inner != b)], cand,
                             weight[sel & (inner != b)]) for b in range(BAGS)]

        heads = bag(weight)
        if self.hard:
            oof = np.zeros(len(ts.files))
            for b, h in enumerate(heads):
                oof[inner == b] = h.logit(x[inner == b])
            real = sel & (ts.y == 0) & ts.orig
            cut = np.quantile(oof[real], 1 - HARD_SHARE)
            hard_files = {f for f, r, o in zip(ts.files, real, oof, strict=True)
                          if r and o >= cut}
            weight = weight * np.where([f in hard_files for f in ts.files], HARD_WEIGHT, 1.0)
            if not self.bags:
                return fit_head(x[sel], ts.y[sel], cand, weight[sel])
            heads = bag(weight)
        return average_heads(heads)


def average_heads(heads: list[Head]) -> Head:
    """Linear heads: the head whose logit is the mean of theirs."""
    if any(len(h.layers) != 1 for h in heads):
        raise ValueError("only linear heads average into one")
    w = np.mean([h.layers[0][0] for h in heads], axis=0)
    b = np.mean([h.layers[0][1] for h in heads], axis=0)
    return Head([(w, b)])


# --- learning curve ------------------------------------------------------------------

CURVE_SHARES = (0.25, 0.5, 0.75, 1.0)
CURVE_REPEATS = 3


def learning_curve(ts: TrainSet, cand: Candidate, ens: Ensemble, seed: int) -> list[dict]:
    """Out-of-fold ROC-AUC and TPR at the verdict thresholds when each fold's head is fitted
    on a share of the other folds' origins (drawn at random, CURVE_REPEATS times): how the
    model grows with the number of origins it learns from. Calibration and thresholds are
    refitted on each curve point's own out-of-fold scores, as the build does."""
    x = design(ts.emb, ts.idx, cand)
    groups = np.array([ts.rows[f].group for f in ts.files])
    rng = np.random.default_rng(seed)
    out = []
    for share in CURVE_SHARES:
        aucs, tprs, n_origins = [], [], []
        for _rep in range(CURVE_REPEATS if share < 1 else 1):
            oof = np.zeros(len(ts.idx))
            sizes = []
            for k in range(N_FOLDS):
                tr_groups = np.unique(groups[ts.fold != k])
                keep = rng.choice(tr_groups, max(2, round(share * len(tr_groups))),
                                  replace=False)
                tr = (ts.fold != k) & np.isin(groups, keep)
                sizes.append(len(keep))
                oof[ts.fold == k] = ens.fit(ts, x, tr, cand, seed + k).logit(x[ts.fold == k])
            auc, tpr, _called = verdict_metrics(ts, oof)
            aucs.append(auc)
            tprs.append(tpr)
            n_origins.append(float(np.mean(sizes)))
        out.append({"share_of_origins": share, "train_origins": round(float(np.mean(n_origins))),
                    "oof_roc_auc": round(float(np.mean(aucs)), 4),
                    "oof_tpr_at_verdict": round(float(np.mean(tprs)), 4),
                    "repeats": len(aucs)})
    return out


ENSEMBLES = (Ensemble(), Ensemble(bags=True), Ensemble(hard=True), Ensemble(bags=True, hard=True))


def select_ensemble(ts: TrainSet, cand: Candidate, oof_single: np.ndarray, seed: int,
                    log: Callable[[str], None]) -> tuple[Ensemble, np.ndarray, list[dict]]:
    """One head, or bagging and/or hard-example weights, compared on the same folds (each
    variant calibrated and thresholded on its own out-of-fold scores): a variant is kept
    only if its out-of-fold ROC-AUC is no lower than one head's and its TPR at the verdict
    higher by more than one standard error of the paired difference (origins resampled);
    the best such TPR wins. A gain inside the noise does not pay for the extra fitting."""
    results = []
    # averaging heads into one is for linear heads
    for ens in (e for e in ENSEMBLES if not (e.bags and cand.hidden)):
        oof = oof_single if ens == Ensemble() else out_of_fold(ts, cand, ens, seed)
        auc, tpr, called = verdict_metrics(ts, oof)
        results.append([ens, oof, called, {"ensemble": ens.name, "oof_roc_auc": round(auc, 4),
                                           "oof_tpr_at_verdict": round(tpr, 4)}])
    base = results[0]
    for r in results:
        r[3]["tpr_gain"] = round(r[3]["oof_tpr_at_verdict"]
                                 - base[3]["oof_tpr_at_verdict"], 4)
        r[3]["tpr_gain_se"] = round(origin_bootstrap_se(ts, r[2], seed, base[2]), 4)
        log(f"  {r[0].name}: out-of-fold ROC-AUC {r[3]['oof_roc_auc']}, TPR at the verdict "
            f"{r[3]['oof_tpr_at_verdict']} ({r[3]['tpr_gain']:+} +- {r[3]['tpr_gain_se']})")
    better = [r for r in results[1:] if r[3]["oof_roc_auc"] >= base[3]["oof_roc_auc"]
              and r[3]["tpr_gain"] > r[3]["tpr_gain_se"]]
    chosen = max(better, key=lambda r: r[3]["oof_tpr_at_verdict"]) if better else base
    for r in results:
        r[3]["chosen"] = r[0] == chosen[0]
    return chosen[0], chosen[1], [r[3] for r in results]
