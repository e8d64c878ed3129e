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


def verdict_for(score: float, spec: ModelSpec) -> str:
    if score >= spec.threshold_ai:
        return VERDICT_AI
    if score <= spec.threshold_not_ai:
        return VERDICT_NOT_AI
    return VERDICT_INCONCLUSIVE


def interpret(outputs: dict[str, np.ndarray], spec: ModelSpec) -> dict[str, Any]:
    """Columns ai_generated, verdict, source, source_score, source_scores for one image.

    Without a source head the model says nothing about the generator: `source` is `none`
    for a not-AI verdict and `inconclusive` otherwise (the taxonomy's own meaning of those
    labels), and source_score/source_scores stay null rather than being made up.
    """
    score = float(np.asarray(outputs[spec.ai_output], dtype=np.float64).reshape(-1)[0])
    if not np.isfinite(score) or not 0.0 <= score <= 1.0:
        raise ValueError(f"model output {spec.ai_output}={score!r} is not a probability")
    verdict = verdict_for(score, spec)
    row: dict[str, Any] = {"ai_generated": score, "verdict": verdict}
    if spec.source_output:
        probs = np.asarray(outputs[spec.source_output], dtype=np.float64).reshape(-1)
        if probs.shape[0] != len(spec.source_classes):
            raise ValueError(
                f"source head has {probs.shape[0]} values, model.json names "
                f"{len(spec.source_classes)} classes"
            )
        scores = dict(zip(spec.source_classes, (float(p) for p in probs), strict=True))
        best = max(scores, key=scores.__getitem__)
        # source_scores is P(generator | AI-generated); the generator is named only when the
        # verdict says the image is AI-generated.
        named = verdict == VERDICT_AI
        row.update(
            source=best if named else (
                SOURCE_NONE if verdict == VERDICT_NOT_AI else SOURCE_INCONCLUSIVE),
            source_score=scores[best] if named else None,
            source_scores=scores,
        )
    else:
        row.update(
            source=SOURCE_NONE if verdict == VERDICT_NOT_AI else SOURCE_INCONCLUSIVE,
            source_score=None,
            source_scores=None,
        )
    return row
