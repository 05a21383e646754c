"""Serving a generator: seeds (and class labels) in, uint8 images out.

A request names a seed per image; the latent vector is
``np.random.default_rng(seed).standard_normal(latent_dim)``, so the same seed
(and label) always gives the same image, on any worker. Inference runs through
one compiled fixed-batch ``tf.function`` (short chunks zero-padded to it), never
``model.predict`` per call. Unlike the image models' open batch dimension
(:mod:`models.forward`), the generator keeps one shape on purpose: another batch
size may run other kernels and round differently, and a seed's image must not depend
on how many seeds share its call.

There is no input image, so this class implements
:class:`models.family.ServedGenerativeModel`, not the decoder's side of
:class:`models.family.ServedModel`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bucketvision.models.generation.imaging import encode_png

__all__ = ["ServedGenerator", "encode_png", "latent_for_seed"]


def latent_for_seed(seed: int, latent_dim: int) -> np.ndarray:
    """The latent vector of ``seed``: ``default_rng(seed).standard_normal(latent_dim)``."""
    return np.random.default_rng(seed).standard_normal(latent_dim).astype(np.float32)


class ServedGenerator:
    """A loaded generator and its card: seeds in, images out (``ServedGenerativeModel``)."""

    task = "generate"

    def __init__(self, model: Any, card: dict[str, Any], forward_batch: int) -> None:
        import tensorflow as tf

        self.model = model
        self.card = card
        self.latent_dim = int(card["latent_dim"])
        # A registered generator's image shape is learnt from its first output.
        self.image_shape = tuple(int(v) for v in card.get("image_shape") or ())
        self.output_range = str(card.get("output_range") or "symmetric")
        if self.output_range not in ("symmetric", "unit"):
            raise ValueError(f"output_range must be symmetric or unit, not {self.output_range!r}")
        self.labels: list[str] = list(card.get("labels") or [])
        self.conditional = bool(card.get("conditional"))
        if self.conditional and not self.labels:
            raise ValueError("a conditional generator's card must list its labels")
        self.forward_batch = int(forward_batch)
        signature = [tf.TensorSpec((self.forward_batch, self.latent_dim), tf.float32)]
        if self.conditional:
            signature.append(tf.TensorSpec((self.forward_batch, 1), tf.int32))
        self._forward = tf.function(self._call, input_signature=signature, jit_compile=False)

    def _call(self, z: Any, labels: Any = None) -> Any:
        import tensorflow as tf

        inputs = [z, labels] if self.conditional else z
        images = tf.cast(self.model(inputs, training=False), tf.float32)
        pixels = images * 255.0 if self.output_range == "unit" else (images + 1.0) * 127.5
        return tf.cast(tf.clip_by_value(tf.round(pixels), 0.0, 255.0), tf.uint8)

    def _run(self, z: np.ndarray, labels: np.ndarray) -> np.ndarray:
        if self.conditional:
            return np.asarray(self._forward(z, labels))
        return np.asarray(self._forward(z))

    @staticmethod
    def encode_png(image: np.ndarray) -> bytes:
        """A generated image as PNG bytes (what the worker uploads)."""
        return encode_png(image)

    def warm_up(self) -> None:
        """Trace and run once so the first real request does not pay for it."""
        self._run(
            np.zeros((self.forward_batch, self.latent_dim), np.float32),
            np.zeros((self.forward_batch, 1), np.int32),
        )

    def check_output(self, image: np.ndarray) -> None:
        """One generated image must be [height, width, 1 or 3]."""
        shape = np.asarray(image).shape
        if len(shape) != 3 or shape[-1] not in (1, 3):
            raise ValueError(
                f"the generator's output per image is {shape}; expected [H, W, 1 or 3]"
            )

    def resolve_label(self, seed: int, label: int | None) -> int:
        """The class index for a request: ``label`` if given, else one drawn from the seed.

        An unconditional generator ignores labels and returns -1.
        """
        if not self.conditional:
            return -1
        if label is None:
            # After the latent draw, so the latent of a seed never depends on the label.
            rng = np.random.default_rng(seed)
            rng.standard_normal(self.latent_dim)
            return int(rng.integers(len(self.labels)))
        if not 0 <= int(label) < len(self.labels):
            raise ValueError(f"label {label} out of range: the model has {len(self.labels)}")
        return int(label)

    def generate(
        self, seeds: Sequence[int], labels: Sequence[int | None] | None = None
    ) -> list[np.ndarray]:
        """One uint8 image (H x W x C) per seed; ``labels[i]`` picks the class (None: from seed)."""
        labels = list(labels) if labels is not None else [None] * len(seeds)
        if len(labels) != len(seeds):
            raise ValueError(f"{len(seeds)} seeds but {len(labels)} labels")
        z = np.stack([latent_for_seed(int(s), self.latent_dim) for s in seeds]) if seeds else None
        classes = np.array(
            [self.resolve_label(int(s), lab) for s, lab in zip(seeds, labels, strict=True)],
            dtype=np.int32,
        )
        images: list[np.ndarray] = []
        for start in range(0, len(seeds), self.forward_batch):
            count = min(self.forward_batch, len(seeds) - start)
            z_chunk = np.zeros((self.forward_batch, self.latent_dim), np.float32)
            label_chunk = np.zeros((self.forward_batch, 1), np.int32)
            z_chunk[:count] = z[start : start + count]  # type: ignore[index]
            label_chunk[:count, 0] = np.maximum(classes[start : start + count], 0)
            images.extend(self._run(z_chunk, label_chunk)[:count])
        return images
