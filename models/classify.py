"""Serving a classifier: scaling, a compiled fixed-shape forward pass, top-k results."""

from __future__ import annotations

from typing import Any

import numpy as np

TOP_K = 5


def scale_pixels(pixels: Any, preprocess: str) -> Any:
    """uint8 pixels to the model's input range: unit = x/255, symmetric = x/127.5-1, raw."""
    import tensorflow as tf

    x = tf.cast(pixels, tf.float32)
    if preprocess == "unit":
        return x / 255.0
    if preprocess == "symmetric":
        return x / 127.5 - 1.0
    return x


def as_probabilities(outputs: np.ndarray) -> np.ndarray:
    """Softmax the rows unless they already are probability distributions."""
    sums = outputs.sum(axis=1)
    if np.all(outputs >= 0) and np.allclose(sums, 1.0, atol=1e-3):
        return outputs
    shifted = outputs - outputs.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


class Classifier:
    """A loaded classification model with its card, ready for batches of uint8 pixels."""

    task = "classify"

    def __init__(self, model: Any, card: dict[str, Any], batch_size: int) -> None:
        import tensorflow as tf

        height, width, channels = card["input_shape"]
        self.model = model
        self.labels: list[str] = list(card["labels"])
        self.preprocess: str = card.get("preprocess", "unit")
        self.size = (int(width), int(height))
        self.mode = "L" if int(channels) == 1 else "RGB"
        self.batch_size = batch_size
        self._input_shape = (batch_size, int(height), int(width), int(channels))
        self._forward = tf.function(
            self._call,
            input_signature=[tf.TensorSpec(self._input_shape, tf.uint8)],
            jit_compile=False,
        )

    def _call(self, pixels: Any) -> Any:
        return self.model(scale_pixels(pixels, self.preprocess), training=False)

    def warm_up(self) -> None:
        """Trace and run once so the first real batch does not pay for it."""
        self._forward(np.zeros(self._input_shape, dtype=np.uint8))

    def infer(self, pixels: np.ndarray) -> np.ndarray:
        """Probabilities for ``pixels`` (N x H x W x C uint8), padded to the fixed batch shape."""
        count = len(pixels)
        outputs = []
        for start in range(0, count, self.batch_size):
            chunk = pixels[start : start + self.batch_size]
            padded = np.zeros(self._input_shape, dtype=np.uint8)
            padded[: len(chunk)] = chunk
            outputs.append(np.asarray(self._forward(padded))[: len(chunk)])
        return as_probabilities(np.concatenate(outputs).astype(np.float64))

    def result(self, probabilities: np.ndarray) -> dict[str, Any]:
        """The item result of DESIGN: label, score and the top-k."""
        order = np.argsort(-probabilities)[: min(TOP_K, len(self.labels))]
        top = [{"label": self.labels[i], "score": round(float(probabilities[i]), 6)} for i in order]
        return {"label": top[0]["label"], "score": top[0]["score"], "top_k": top}
