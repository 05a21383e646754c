"""A model's forward pass compiled once for a fixed uint8 shape of ``forward_batch`` images.

Every served image model (classify, detect, segment) runs ``model(scale(x))``
through a ``tf.function`` with one input signature, so a partial chunk is
padded instead of triggering a retrace, and ``model.predict()``'s per-call
overhead is never paid. A model may answer one tensor or a dict of them (a
SavedModel signature read in the TF Object Detection API's format); each
image then gets the dict of its own rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bucketvision.models.pixels import check_preprocess, scale_pixels


class FixedBatchForward:
    """``model(scale_pixels(x, preprocess))`` over chunks of exactly ``forward_batch`` images."""

    def __init__(
        self, model: Any, input_shape: tuple[int, int, int], forward_batch: int, preprocess: str
    ) -> None:
        import tensorflow as tf

        if forward_batch < 1:
            raise ValueError(f"forward_batch must be >= 1, got {forward_batch}")
        self.model = model
        self.preprocess = check_preprocess(preprocess)
        self.forward_batch = int(forward_batch)
        self.shape = (self.forward_batch, *(int(v) for v in input_shape))
        self._forward = tf.function(
            self._call,
            input_signature=[tf.TensorSpec(self.shape, tf.uint8)],
            jit_compile=False,
        )

    def _call(self, pixels: Any) -> Any:
        return self.model(scale_pixels(pixels, self.preprocess), training=False)

    def warm_up(self) -> None:
        """Trace and run once so the first real images do not pay for it."""
        self._forward(np.zeros(self.shape, dtype=np.uint8))

    def __call__(self, pixels: np.ndarray) -> list[np.ndarray]:
        """One output per image of ``pixels`` (N x H x W x C uint8), in order."""
        pixels = np.asarray(pixels)
        if pixels.ndim != 4 or pixels.shape[1:] != self.shape[1:]:
            raise ValueError(f"expected N x {self.shape[1:]} pixels, got {pixels.shape}")
        outputs: list[np.ndarray] = []
        for start in range(0, len(pixels), self.forward_batch):
            chunk = pixels[start : start + self.forward_batch]
            padded = np.zeros(self.shape, dtype=np.uint8)
            padded[: len(chunk)] = chunk
            outputs.extend(_per_image(self._forward(padded), len(chunk)))
        return outputs


def _per_image(answer: Any, count: int) -> list[Any]:
    """The first ``count`` rows of a batch answer: arrays, or dicts of arrays per image."""
    if isinstance(answer, dict):
        arrays = {name: np.asarray(value) for name, value in answer.items()}
        return [{name: array[i] for name, array in arrays.items()} for i in range(count)]
    return list(np.asarray(answer)[:count])
