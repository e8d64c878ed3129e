"""Turns a model's raw outputs for one image into the scores table's verdict columns."""

from __future__ import annotations

from typing import Any

import numpy as np

from synthsieve.inference.spec import ModelSpec
from synthsieve.schema import (
    SOURCE_INCONCLUSIVE,
    SOURCE_NONE,
    VERDICT_AI,
    VERDICT_INCONCLUSIVE,
    VERDICT_NOT_AI,
)

__all__ = [
    "NOT_GENERATORS", "OUT_OF_DISTRIBUTION", "check_probability", "interpret",
    "verdict_columns", "verdict_for",
]

# The warning a scores row carries when the model abstained because the image lies far from
# its training data.
OUT_OF_DISTRIBUTION = "out_of_distribution"

# Labels of the taxonomy that are answers about the image, not generators.
NOT_GENERATORS = frozenset({SOURCE_NONE, SOURCE_INCONCLUSIVE, "inconclusive_video"})


def verdict_for(score: float, threshold_ai: float, threshold_not_ai: float) -> str:
    if score >= threshold_ai:
        return VERDICT_AI
    if score <= threshold_not_ai:
        return VERDICT_NOT_AI
    return VERDICT_INCONCLUSIVE


def check_probability(value: float, name: str) -> float:
    if not np.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}={value!r} is not a probability")
    return value


def verdict_columns(ai: float, threshold_ai: float, threshold_not_ai: float,
                    source_scores: dict[str, float] | None) -> dict[str, Any]:
    """ai_generated, verdict, source, source_score, source_scores, for every backend.

    `source_scores` None means the backend has no source head: then all three source
    columns are null, so that nobody groups by a label no model gave. With a head, a
    generator is named only when the verdict is ai_generated, and only from labels that are
    generators; otherwise `source` is `none` (not AI) or `inconclusive`, the taxonomy's own
    meaning of those labels, and source_score stays null rather than being made up.
    """
    verdict = verdict_for(ai, threshold_ai, threshold_not_ai)
    if source_scores is None:
        return {"ai_generated": ai, "verdict": verdict, "source": None,
                "source_score": None, "source_scores": None}
    generators = {k: v for k, v in (source_scores or {}).items() if k not in NOT_GENERATORS}
    best = max(generators, key=generators.__getitem__) if generators else None
    if verdict == VERDICT_AI and best is not None:
        source, source_score = best, generators[best]
    else:
        source = SOURCE_NONE if verdict == VERDICT_NOT_AI else SOURCE_INCONCLUSIVE
        source_score = None
    return {"ai_generated": ai, "verdict": verdict, "source": source,
            "source_score": source_score, "source_scores": source_scores or None}


def interpret(outputs: dict[str, np.ndarray], spec: ModelSpec) -> dict[str, Any]:
    """A local model's raw outputs for one image -> the verdict columns (see above).

    When the model measures distance to its training data and this image is too far, the
    verdict is `inconclusive` (the score is kept) and `model_warnings` says why; the scores
    row carries it in `warnings`."""
    score = check_probability(
        float(np.asarray(outputs[spec.ai_output], dtype=np.float64).reshape(-1)[0]),
        f"model output {spec.ai_output}")
    scores = None
    if spec.source_output:
        probs = np.asarray(outputs[spec.source_output], dtype=np.float64).reshape(-1)
        if probs.shape[0] != len(spec.source_classes):
            raise ValueError(
                f"source head has {probs.shape[0]} values, model.json names "
                f"{len(spec.source_classes)} classes"
            )
        # P(generator | AI-generated) over the model's classes
        scores = dict(zip(spec.source_classes, (float(p) for p in probs), strict=True))
    columns = verdict_columns(score, spec.threshold_ai, spec.threshold_not_ai, scores)
    if spec.ood_output:
        distance = float(np.asarray(outputs[spec.ood_output], dtype=np.float64).reshape(-1)[0])
        if not np.isfinite(distance):
            raise ValueError(f"model output {spec.ood_output}={distance!r} is not finite")
        if distance > spec.threshold_ood:
            columns.update(verdict=VERDICT_INCONCLUSIVE, source_score=None)
            if columns["source"] is not None:
                columns["source"] = SOURCE_INCONCLUSIVE
            columns["model_warnings"] = [OUT_OF_DISTRIBUTION]
    return columns
