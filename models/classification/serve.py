"""Serving a classifier in the worker: a compiled forward pass and top-k results.

The forward pass is one ``tf.function`` with a ``(None, H, W, C)`` uint8
signature, traced once at warm-up (:mod:`models.forward`), that runs chunks of
at most ``forward_batch`` images; a short chunk costs its own images and nothing
is retraced at run time. Scaling follows the card's ``preprocess``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bucketvision.models.classification.preprocess import as_probabilities
from bucketvision.models.family import ItemResult
from bucketvision.models.serving import ServedImageModel

TOP_K = 5


class ServedClassifier(ServedImageModel):
    """A loaded classification model and its card (implements ``ServedModel``)."""

    task = "classify"
    default_resize = "stretch"
    default_preprocess = "raw"
    output_kinds = ("probabilities", "logits")

    def check_input(self, channels: int, labels: list[str]) -> None:
        """1 (grey) or 3 (RGB) channels: the two modes the decoder makes."""
        if channels not in (1, 3):
            raise ValueError(f"a classifier takes 1 or 3 channels, the card says {channels}")

    def infer(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities (N x classes) for ``pixels`` (N x H x W x C uint8)."""
        outputs = self._forward(pixels)
        if not outputs:
            return np.zeros((0, len(self.labels)), dtype=np.float64)
        # A card without ``outputs`` (hand-registered before it existed): softmax what is no
        # distribution already.
        return as_probabilities(np.stack(outputs), self.card.get("outputs"))

    def check_output(self, output: Any) -> None:
        """One score per label."""
        size = np.asarray(output).size
        if size != len(self.labels):
            raise ValueError(
                f"the model has {size} outputs but {len(self.labels)} labels were given"
            )

    def result(self, output: Any, image: Any = None) -> ItemResult:
        """``{"label", "score", "top_k": [{"label", "score"}, ...]}`` for one image.

        ``image`` (the worker's DecodedImage) is not needed: a class does not depend on
        the original size. Scores are rounded to 6 decimals; top_k is best first.
        """
        probabilities = np.asarray(output, dtype=np.float64).reshape(-1)
        if probabilities.size != len(self.labels):
            raise ValueError(f"{probabilities.size} outputs for {len(self.labels)} labels")
        order = np.argsort(-probabilities, kind="stable")[: min(TOP_K, len(self.labels))]
        top = [{"label": self.labels[i], "score": round(float(probabilities[i]), 6)} for i in order]
        return ItemResult(result={"label": top[0]["label"], "score": top[0]["score"], "top_k": top})
