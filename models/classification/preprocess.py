"""The card's ``preprocess`` modes, shared by training, evaluation and serving.

The worker casts uint8 pixels to float and applies the card's mode before the
model sees them, so every place that feeds a classifier must scale the same
way. Models built by this package scale inside the model (a ``Rescaling`` or
normalisation layer) and record ``"raw"``; ``"unit"`` and ``"symmetric"`` are
kept for cards of older models (the seed demo used ``"unit"``).
"""

from __future__ import annotations

import numpy as np

from bucketvision.models.pixels import PREPROCESS_MODES, check_preprocess, scale_pixels

__all__ = ["PREPROCESS_MODES", "as_probabilities", "check_preprocess", "scale_pixels"]


def as_probabilities(outputs: np.ndarray, kind: str | None = None) -> np.ndarray:
    """Rows of class probabilities from model outputs.

    ``kind`` is the card's ``"outputs"`` field: ``"probabilities"`` is returned as is,
    ``"logits"`` is softmaxed; without it, rows that are already distributions are
    kept and anything else is softmaxed.
    """
    outputs = np.asarray(outputs, dtype=np.float64)
    if kind == "probabilities":
        return outputs
    if kind != "logits":
        sums = outputs.sum(axis=1)
        if np.all(outputs >= 0) and np.allclose(sums, 1.0, atol=1e-3):
            return outputs
    shifted = outputs - outputs.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)
