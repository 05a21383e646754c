"""Fitting an image into a model's input and mapping results back.

Three ways to fit: ``stretch`` (resize to the input, ignoring aspect; classifiers),
``letterbox`` (scale to fit, keep the aspect, pad the rest; detectors and
segmenters, whose boxes and masks must map back exactly) and ``center-crop``
(scale to cover, keep the aspect, cut the overflow; classifiers trained the
keras.applications way). A :class:`Placement` records the transform so boxes
and masks go back to original pixels (a center-crop's pad is negative).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

RESIZE_MODES = ("stretch", "letterbox", "center-crop")


@dataclass(frozen=True)
class Placement:
    """Where an original image sits inside the model input.

    A point ``(x, y)`` of the original maps to ``(x * scale_x + pad_x, y * scale_y + pad_y)``.
    """

    original_width: int
    original_height: int
    target_width: int
    target_height: int
    scale_x: float
    scale_y: float
    pad_x: int
    pad_y: int

    @classmethod
    def identity(cls, width: int, height: int) -> Placement:
        return cls(width, height, width, height, 1.0, 1.0, 0, 0)

    @classmethod
    def plan(cls, width: int, height: int, target: tuple[int, int], resize: str) -> Placement:
        """The placement of a ``width`` x ``height`` image in ``target`` = (width, height)."""
        target_width, target_height = target
        if resize == "stretch":
            return cls(
                width,
                height,
                target_width,
                target_height,
                target_width / width,
                target_height / height,
                0,
                0,
            )
        if resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, not {resize!r}")
        if resize == "center-crop":
            scale = max(target_width / width, target_height / height)
            content_width = max(target_width, round(width * scale))
            content_height = max(target_height, round(height * scale))
        else:
            scale = min(target_width / width, target_height / height)
            content_width = max(1, min(target_width, round(width * scale)))
            content_height = max(1, min(target_height, round(height * scale)))
        return cls(
            width,
            height,
            target_width,
            target_height,
            content_width / width,
            content_height / height,
            (target_width - content_width) // 2,
            (target_height - content_height) // 2,
        )

    @property
    def content_size(self) -> tuple[int, int]:
        """(width, height) of the image inside the target, without padding."""
        return (
            max(1, round(self.original_width * self.scale_x)),
            max(1, round(self.original_height * self.scale_y)),
        )

    def boxes_to_target(self, boxes: np.ndarray) -> np.ndarray:
        """``[N, 4]`` x_min, y_min, x_max, y_max from original to target pixels."""
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        scale = np.array([self.scale_x, self.scale_y, self.scale_x, self.scale_y], np.float32)
        shift = np.array([self.pad_x, self.pad_y, self.pad_x, self.pad_y], np.float32)
        return boxes * scale + shift

    def boxes_to_original(self, boxes: np.ndarray) -> np.ndarray:
        """``[N, 4]`` boxes from target to original pixels, clipped to the original image."""
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        scale = np.array([self.scale_x, self.scale_y, self.scale_x, self.scale_y], np.float32)
        shift = np.array([self.pad_x, self.pad_y, self.pad_x, self.pad_y], np.float32)
        mapped = (boxes - shift) / scale
        limits = np.array([self.original_width, self.original_height] * 2, dtype=np.float32)
        return np.clip(mapped, 0.0, limits)

    def crop_content(self, array: np.ndarray) -> np.ndarray:
        """The part of a target-sized ``H x W [x C]`` array that covers the image (no padding)."""
        width, height = self.content_size
        return array[self.pad_y : self.pad_y + height, self.pad_x : self.pad_x + width]

    def mask_to_original(self, mask: np.ndarray) -> np.ndarray:
        """A target-sized class-id mask (uint8) at the original size (nearest neighbour)."""
        content = np.ascontiguousarray(self.crop_content(mask).astype(np.uint8))
        image = Image.fromarray(content, "L")
        size = (self.original_width, self.original_height)
        if image.size != size:
            image = image.resize(size, Image.Resampling.NEAREST)
        return np.asarray(image, dtype=np.uint8)


def fit_image(
    image: Image.Image, target: tuple[int, int], resize: str, *, fill: int = 0
) -> tuple[Image.Image, Placement]:
    """Resize ``image`` into ``target`` = (width, height) by ``resize``; returns the placement."""
    placement = Placement.plan(image.width, image.height, target, resize)
    if resize == "stretch" or placement.content_size == target:
        if image.size != target:
            image = image.resize(target, Image.Resampling.BILINEAR, reducing_gap=2.0)
        return image, placement
    content = image.resize(placement.content_size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    if resize == "center-crop":
        left, top = -placement.pad_x, -placement.pad_y
        return content.crop((left, top, left + target[0], top + target[1])), placement
    canvas = Image.new(image.mode, target, fill if image.mode == "L" else (fill,) * len(image.mode))
    canvas.paste(content, (placement.pad_x, placement.pad_y))
    return canvas, placement


def fit_mask(mask: Image.Image, placement: Placement) -> Image.Image:
    """Put a class-id mask through the same placement as its image (nearest, pad = 0)."""
    target = (placement.target_width, placement.target_height)
    content = mask.resize(placement.content_size, Image.Resampling.NEAREST)
    canvas = Image.new("L", target, 0)
    canvas.paste(content, (placement.pad_x, placement.pad_y))
    return canvas


def draft_size(
    stored: tuple[int, int], target: tuple[int, int], preview_size: int | None
) -> tuple[int, int]:
    """The least (width, height) a JPEG of size ``stored`` may be draft-decoded to.

    It covers the model's ``target`` and, with ``preview_size``, a preview whose long
    side is that many pixels (or the whole image, when it is smaller), so keeping a
    preview does not make a large photo decode at full size.
    """
    if not preview_size:
        return target
    width, height = stored
    shrink = min(1.0, preview_size / max(width, height))
    preview = (math.ceil(width * shrink), math.ceil(height * shrink))
    return max(target[0], preview[0]), max(target[1], preview[1])
