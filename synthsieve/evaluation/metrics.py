"""Binary-detector metrics in plain numpy, so `synthsieve eval` needs no ML framework.

Labels are 1 for AI-generated, 0 for real; scores are P(AI). Definitions follow
scikit-learn's (ties in the ROC count half, AP is the step-wise area under the PR curve),
and the tests check them against known answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "average_precision", "expected_calibration_error", "reliability", "roc_auc", "roc_curve",
    "summary", "tpr_at_fpr", "verdict_counts",
]


def _arrays(y, p) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.int64).reshape(-1)
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    if y.shape != p.shape:
        raise ValueError(f"{y.shape[0]} labels but {p.shape[0]} scores")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (real) or 1 (AI)")
    return y, p


def roc_curve(y, p) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) with one point per distinct score, starting at (0, 0)."""
    y, p = _arrays(y, p)
    order = np.argsort(-p, kind="mergesort")
    y, p = y[order], p[order]
    distinct = np.r_[np.nonzero(np.diff(p))[0], len(p) - 1]
    tps = np.cumsum(y)[distinct]
    fps = (distinct + 1) - tps
    pos, neg = max(int(y.sum()), 1), max(int((1 - y).sum()), 1)
    return (np.r_[0.0, fps / neg], np.r_[0.0, tps / pos], np.r_[np.inf, p[distinct]])


def roc_auc(y, p) -> float | None:
    """Area under the ROC curve (Mann-Whitney); None when only one class is present."""
    y, p = _arrays(y, p)
    if y.min(initial=1) == y.max(initial=0):
        return None
    fpr, tpr, _ = roc_curve(y, p)
    return float(np.trapezoid(tpr, fpr))


def average_precision(y, p) -> float | None:
    y, p = _arrays(y, p)
    if not y.any():
        return None
    order = np.argsort(-p, kind="mergesort")
    y, p = y[order], p[order]
    distinct = np.r_[np.nonzero(np.diff(p))[0], len(p) - 1]
    tps = np.cumsum(y)[distinct]
    precision = tps / (distinct + 1)
    recall = tps / y.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def tpr_at_fpr(y, p, max_fpr: float) -> float | None:
    y, p = _arrays(y, p)
    if y.min(initial=1) == y.max(initial=0):
        return None
    fpr, tpr, _ = roc_curve(y, p)
    return float(tpr[fpr <= max_fpr + 1e-12].max())


def reliability(y, p, bins: int = 10) -> list[dict[str, float]]:
    """Per equal-width bin: count, mean score, observed AI rate."""
    y, p = _arrays(y, p)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1], right=False), 0, bins - 1)
    out = []
    for b in range(bins):
        m = idx == b
        out.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": int(m.sum()),
                    "mean_score": float(p[m].mean()) if m.any() else None,
                    "ai_rate": float(y[m].mean()) if m.any() else None})
    return out


def expected_calibration_error(y, p, bins: int = 10) -> float | None:
    y, p = _arrays(y, p)
    if not len(y):
        return None
    total = 0.0
    for b in reliability(y, p, bins):
        if b["n"]:
            total += b["n"] * abs(b["mean_score"] - b["ai_rate"])
    return float(total / len(y))


def verdict_counts(y, p, t_not: float, t_ai: float,
                   verdicts: Sequence[str] | None = None) -> dict[str, int]:
    """Confusion matrix of true class x three-way verdict.

    The verdicts are the thresholds applied to the scores unless given: a model that abstains
    on images far from its training data writes `inconclusive` whatever the score, and the
    written verdict is the one to count."""
    y, p = _arrays(y, p)
    if verdicts is None:
        ai, not_ai = p >= t_ai, p <= t_not
    else:
        v = np.asarray(verdicts, dtype=object)
        if v.shape != y.shape:
            raise ValueError(f"{y.shape[0]} labels but {v.shape[0]} verdicts")
        ai, not_ai = v == "ai_generated", v == "not_ai_generated"
    inc = ~(ai | not_ai)
    return {
        "ai_as_ai": int((ai & (y == 1)).sum()), "ai_as_not_ai": int((not_ai & (y == 1)).sum()),
        "ai_as_inconclusive": int((inc & (y == 1)).sum()),
        "real_as_ai": int((ai & (y == 0)).sum()), "real_as_not_ai": int((not_ai & (y == 0)).sum()),
        "real_as_inconclusive": int((inc & (y == 0)).sum()),
    }


def _round(v: float | None, nd: int = 4) -> float | None:
    return None if v is None else round(float(v), nd)


def summary(y, p, t_not: float, t_ai: float,
            verdicts: Sequence[str] | None = None) -> dict[str, Any]:
    """Everything the eval report and the model card quote for one set of images."""
    y, p = _arrays(y, p)
    c = verdict_counts(y, p, t_not, t_ai, verdicts)
    decided = len(y) - c["ai_as_inconclusive"] - c["real_as_inconclusive"]
    flagged = c["ai_as_ai"] + c["real_as_ai"]
    correct = c["ai_as_ai"] + c["real_as_not_ai"]
    return {
        "n": int(len(y)), "n_ai": int(y.sum()), "n_real": int((y == 0).sum()),
        "roc_auc": _round(roc_auc(y, p)),
        "average_precision": _round(average_precision(y, p)),
        "tpr_at_1pct_fpr": _round(tpr_at_fpr(y, p, 0.01)),
        "tpr_at_5pct_fpr": _round(tpr_at_fpr(y, p, 0.05)),
        "ece": _round(expected_calibration_error(y, p)),
        "accuracy": _round(correct / len(y)) if len(y) else None,
        "accuracy_decided": _round(correct / decided) if decided else None,
        "precision": _round(c["ai_as_ai"] / flagged) if flagged else None,
        "recall": _round(c["ai_as_ai"] / y.sum()) if y.sum() else None,
        "false_positive_rate": _round(c["real_as_ai"] / (y == 0).sum()) if (y == 0).any() else None,
        "coverage": _round(decided / len(y)) if len(y) else None,
        "confusion": c,
    }
