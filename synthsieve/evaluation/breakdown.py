"""Per-group results, the worst mistakes, and confounds, from an eval's labelled rows.

A single AUC over a mixed set hides the failures a data team cares about (every painting
called AI, say), so eval reports each group on its own. For an AI group the AUC is against
all real images; for a real group, all AI images against that group: each number answers
"can the model tell these apart from the other class".
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from synthsieve.evaluation import metrics
from synthsieve.schema import VERDICT_AI, VERDICT_INCONCLUSIVE, VERDICT_NOT_AI

__all__ = ["CONFOUND_AUC", "WORST_PER_CLASS", "Labelled", "by_group", "confounds", "worst"]

# A format or size that alone predicts the label this well makes the manifest's metrics
# measure the file, not the image (ROC-AUC of the attribute as a score, either direction).
CONFOUND_AUC = 0.75
WORST_PER_CLASS = 12


@dataclass(frozen=True)
class Labelled:
    """One scored, labelled image as the eval sees it."""

    y: int
    p: float
    verdict: str
    uri: str
    image_id: str
    group: str | None
    format: str | None
    megapixels: float


def _share(verdicts: list[str], which: str) -> float:
    return round(sum(v == which for v in verdicts) / len(verdicts), 4) if verdicts else 0.0


def by_group(items: Sequence[Labelled]) -> dict[str, dict[str, Any]]:
    """Per group value: n, AI/real counts, verdict shares and the AUC described above."""
    groups: dict[str, list[Labelled]] = defaultdict(list)
    for it in items:
        groups[it.group or "(none)"].append(it)
    ai_scores = [it.p for it in items if it.y == 1]
    real_scores = [it.p for it in items if it.y == 0]
    out = {}
    for name, members in sorted(groups.items()):
        verdicts = [m.verdict for m in members]
        n_ai = sum(m.y for m in members)
        n_real = len(members) - n_ai
        own = [m.p for m in members]
        auc = None
        if n_ai and not n_real and real_scores:
            auc = metrics.roc_auc([1] * len(own) + [0] * len(real_scores), own + real_scores)
        elif n_real and not n_ai and ai_scores:
            auc = metrics.roc_auc([1] * len(ai_scores) + [0] * len(own), ai_scores + own)
        elif n_ai and n_real:
            auc = metrics.roc_auc([m.y for m in members], own)
        out[name] = {
            "n": len(members), "n_ai": n_ai, "n_real": n_real,
            "ai_generated": _share(verdicts, VERDICT_AI),
            "inconclusive": _share(verdicts, VERDICT_INCONCLUSIVE),
            "not_ai_generated": _share(verdicts, VERDICT_NOT_AI),
            "roc_auc": None if auc is None else round(auc, 4),
            "auc_against": ("all real" if n_ai and not n_real else
                            "all AI" if n_real and not n_ai else "itself"),
        }
    return out


def worst(items: Sequence[Labelled], k: int = WORST_PER_CLASS) -> dict[str, list[dict]]:
    """The real images scored most AI-like and the AI images scored least AI-like."""
    def row(it: Labelled) -> dict[str, Any]:
        return {"image_id": it.image_id, "uri": it.uri, "label": it.y,
                "ai_generated": round(it.p, 5), "verdict": it.verdict, "group": it.group}
    real = sorted((it for it in items if it.y == 0), key=lambda it: -it.p)[:k]
    ai = sorted((it for it in items if it.y == 1), key=lambda it: it.p)[:k]
    return {"real_scored_highest": [row(it) for it in real],
            "ai_scored_lowest": [row(it) for it in ai]}


def confounds(items: Sequence[Labelled]) -> list[str]:
    """Warnings for file attributes that predict the label by themselves."""
    y = np.array([it.y for it in items])
    if y.min(initial=1) == y.max(initial=0):
        return []
    warnings = []
    formats = [it.format or "unknown" for it in items]
    ai_rate = {f: float(np.mean([yy for yy, ff in zip(y, formats, strict=True) if ff == f]))
               for f in set(formats)}
    fmt_auc = metrics.roc_auc(y, [ai_rate[f] for f in formats]) or 0.5
    if fmt_auc >= CONFOUND_AUC:
        split = ", ".join(f"{f}: {ai_rate[f]:.0%} AI" for f in sorted(ai_rate))
        warnings.append(
            f"file format predicts the label by itself (ROC-AUC {fmt_auc:.2f}; {split}): "
            "these metrics may measure the format, not the image. Re-encode every image the "
            "same way (the jpeg75_half condition does) before trusting them.")
    size_auc = metrics.roc_auc(y, [it.megapixels for it in items]) or 0.5
    size_auc = max(size_auc, 1 - size_auc)
    if size_auc >= CONFOUND_AUC:
        mp_ai = float(np.median([it.megapixels for it in items if it.y == 1]))
        mp_real = float(np.median([it.megapixels for it in items if it.y == 0]))
        warnings.append(
            f"image size predicts the label by itself (ROC-AUC {size_auc:.2f}; median "
            f"{mp_ai:.2f} MP AI vs {mp_real:.2f} MP real): these metrics may measure size. "
            "Resize every image the same way before trusting them.")
    return warnings
