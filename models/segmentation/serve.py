"""Serving a segmenter: a fixed-shape compiled forward pass and masks at the original size.

The worker letterboxes every image into the model input (``image.placement``
records how). :meth:`ServedSegmenter.result` crops the padding away, resizes the
class probabilities bilinearly to the original size and only then takes the
argmax, which gives smooth edges instead of the blocky ones of upsampling class
ids. For huge originals the bilinear step stops at ``MAX_SMOOTH_SIDE`` pixels and
the ids are enlarged by nearest neighbour, which bounds time and memory.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

from bucketvision.models.family import ItemFile, ItemResult
from bucketvision.models.serving import ServedImageModel

MAX_SMOOTH_SIDE = 1024  # longest side up to which probabilities are resized bilinearly


def _resize_channels(probabilities: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``[h, w, C]`` float32 to ``[height, width, C]`` (size = (width, height)), bilinear."""
    if (probabilities.shape[1], probabilities.shape[0]) == size:
        return probabilities
    channels = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(probabilities[..., c]), "F").resize(
                size, Image.Resampling.BILINEAR
            )
        )
        for c in range(probabilities.shape[-1])
    ]
    return np.stack(channels, axis=-1)


def mask_at_original(probabilities: np.ndarray, placement: Any) -> np.ndarray:
    """Class ids (uint8 [original_height, original_width]) from target-sized probabilities."""
    content = np.asarray(placement.crop_content(probabilities), dtype=np.float32)
    width, height = placement.original_width, placement.original_height
    shrink = min(1.0, MAX_SMOOTH_SIDE / max(width, height))
    smooth = (max(1, round(width * shrink)), max(1, round(height * shrink)))
    ids = np.argmax(_resize_channels(content, smooth), axis=-1).astype(np.uint8)
    if smooth != (width, height):
        ids = np.asarray(
            Image.fromarray(ids, "L").resize((width, height), Image.Resampling.NEAREST)
        )
    return ids


def encode_mask(ids: np.ndarray) -> bytes:
    """A one-channel 8-bit PNG whose pixel values are the class ids."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(ids, dtype=np.uint8), "L").save(
        buffer, "PNG", compress_level=3
    )
    return buffer.getvalue()


def softmax(logits: np.ndarray) -> np.ndarray:
    """Per-pixel class probabilities from logits ``[H, W, C]``."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)


class ServedSegmenter(ServedImageModel):
    """A loaded segmentation model with its card, ready for batches of uint8 pixels.

    The card's ``outputs`` says what the model gives per image: ``probabilities`` or
    ``logits`` [H, W, classes], or a ``class-map`` [H, W] of class ids.
    """

    task = "segment"
    default_resize = "letterbox"
    output_kinds = ("probabilities", "logits", "class-map")

    def check_input(self, channels: int, labels: list[str]) -> None:
        """At most 256 classes: the mask PNG holds one 8-bit class id per pixel."""
        if len(labels) > 256:
            raise ValueError("an 8-bit mask holds at most 256 classes")

    def infer(self, pixels: np.ndarray) -> list[np.ndarray]:
        """Per-pixel class probabilities (float32 [H, W, classes]) for each image of ``pixels``.

        Chunks of at most ``forward_batch`` images go through the compiled forward pass
        (:mod:`models.forward`).
        """
        outputs = self._forward(pixels)
        if self.outputs == "class-map":
            return [
                np.rint(
                    output[..., 0] if output.ndim == 3 and output.shape[-1] == 1 else output
                ).astype(np.int32)
                for output in outputs
            ]
        if self.outputs == "logits":
            return [softmax(output.astype(np.float32)) for output in outputs]
        return [output.astype(np.float32) for output in outputs]

    def check_output(self, output: Any) -> None:
        """[H, W, classes] scores (as many as labels) or an [H, W] class map at the input size."""
        shape = np.asarray(output).shape
        height, width = self.size[1], self.size[0]
        if self.outputs == "class-map":
            if shape != (height, width):
                raise ValueError(
                    f"the class map of one image is {shape}; expected [{height}, {width}]"
                )
            return
        if shape != (height, width, len(self.labels)):
            raise ValueError(
                f"the output of one image is {shape}; --outputs {self.outputs} expects"
                f" [{height}, {width}, {len(self.labels)}] (height, width, one per label)"
            )

    def result(self, output: np.ndarray, image: Any) -> ItemResult:
        """The mask PNG at the original size and the fraction of original pixels per class.

        ``confidence`` is the mean over the image's pixels (padding excluded) of the top
        class probability: what ``--review-below`` compares (none for a class map).
        """
        if image.placement is None:
            raise ValueError("a segmentation result needs the image's placement (letterbox)")
        confidence = None
        if self.outputs == "class-map":
            ids = image.placement.mask_to_original(np.clip(output, 0, len(self.labels) - 1))
        else:
            ids = mask_at_original(output, image.placement)
            content = np.asarray(image.placement.crop_content(output))
            confidence = round(float(content.max(axis=-1).mean()), 6)
        counts = np.bincount(ids.ravel(), minlength=len(self.labels))
        fractions = counts / max(1, ids.size)
        return ItemResult(
            result={
                "mask": None,
                "classes": list(self.labels),
                "pixel_fraction": {
                    label: float(fraction)
                    for label, fraction in zip(self.labels, fractions, strict=True)
                },
                **({"confidence": confidence} if confidence is not None else {}),
            },
            files=[ItemFile(".mask.png", encode_mask(ids), field="mask")],
        )
