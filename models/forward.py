"""A model's forward pass compiled once: ``forward_batch`` uint8 images in, outputs out.

Every served image model (classify, detect, segment) runs ``model(scale(x))``
through one ``tf.function``, traced at warm-up, and never pays ``model.predict()``'s
per-call overhead. Its batch dimension is open, so a chunk shorter than
``forward_batch`` (a batch's last wave, a job's last batch, a lone image from the
drop folder) costs its own images rather than a padded full chunk. Measured here
(``python -m tests.perf.forward_chunks``, MobileNetV2, one CPU thread), a full chunk of
16 costs the same per image either way (13.9 ms), and a lone image 13.9 ms instead of
the 217 ms of a padded chunk. A model
that insists on one batch size (a SavedModel signature such as the TF Object
Detection API's, which takes one image) is traced for that size, and short chunks
are zero-padded to it. A model may answer one tensor or a dict of them (a SavedModel
signature read in the TF Object Detection API's format); each image then gets the
dict of its own rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bucketvision.models.pixels import check_preprocess, scale_pixels


def declared_batch(model: Any) -> int | None:
    """The one batch size ``model`` accepts, or None when any batch size will do.

    A SavedModel signature says so in ``fixed_batch``; a Keras model built with a
    batch size (``keras.Input(batch_size=...)``) in its ``input_shape``.
    """
    fixed = getattr(model, "fixed_batch", None)
    if fixed:
        return int(fixed)
    shape = getattr(model, "input_shape", None)
    if isinstance(shape, tuple) and shape and isinstance(shape[0], int):
        return shape[0]
    return None


class CompiledForward:
    """``model(scale_pixels(x, preprocess))`` over chunks of at most ``forward_batch`` images.

    ``fixed_batch`` (see :func:`declared_batch`) replaces ``forward_batch`` and closes
    the batch dimension: every chunk is then padded to it.
    """

    def __init__(
        self,
        model: Any,
        input_shape: tuple[int, int, int],
        forward_batch: int,
        preprocess: str,
        *,
        fixed_batch: int | None = None,
    ) -> None:
        import tensorflow as tf

        if forward_batch < 1:
            raise ValueError(f"forward_batch must be >= 1, got {forward_batch}")
        self.model = model
        self.preprocess = check_preprocess(preprocess)
        self.fixed = fixed_batch is not None
        self.forward_batch = int(fixed_batch or forward_batch)
        self.shape = (self.forward_batch, *(int(v) for v in input_shape))
        batch_dimension = self.forward_batch if self.fixed else None
        self._forward = tf.function(
            self._call,
            input_signature=[tf.TensorSpec((batch_dimension, *self.shape[1:]), tf.uint8)],
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
            count = len(chunk)
            if self.fixed and count < self.forward_batch:
                padded = np.zeros(self.shape, dtype=np.uint8)
                padded[:count] = chunk
                chunk = padded
            outputs.extend(_per_image(self._forward(chunk), count))
        return outputs


def _per_image(answer: Any, count: int) -> list[Any]:
    """The first ``count`` rows of a batch answer: arrays, or dicts of arrays per image."""
    if isinstance(answer, dict):
        arrays = {name: np.asarray(value) for name, value in answer.items()}
        return [{name: array[i] for name, array in arrays.items()} for i in range(count)]
    return list(np.asarray(answer)[:count])
