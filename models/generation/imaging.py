"""Pixel conversions for generated images and the PNG sample grid (Pillow, no TensorFlow).

The generator emits tanh values in ``[-1, 1]`` (the card's ``"symmetric"``
preprocessing, ``x / 127.5 - 1``); these helpers map them back to uint8 the same
way everywhere (training samples, evaluation, serving), so what the judge scores
is exactly what a client receives.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def to_uint8(images: np.ndarray) -> np.ndarray:
    """``[-1, 1]`` floats to uint8 pixels (inverse of ``x / 127.5 - 1``), rounded and clipped."""
    return np.clip(np.rint((np.asarray(images, dtype=np.float32) + 1.0) * 127.5), 0, 255).astype(
        np.uint8
    )


def encode_png(image: np.ndarray) -> bytes:
    """One uint8 image (H x W, H x W x 1 or H x W x 3) as PNG bytes."""
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"encode_png expects uint8 pixels, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise ValueError(f"encode_png expects H x W, H x W x 1 or H x W x 3, got {array.shape}")
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def image_grid(images: np.ndarray, rows: int, cols: int, *, pad: int = 2, scale: int = 2) -> bytes:
    """A ``rows`` x ``cols`` PNG grid of uint8 images (N x H x W x C), filled row by row.

    Missing cells stay dark; each image is enlarged ``scale`` times (nearest) so
    small samples are legible.
    """
    images = np.asarray(images, dtype=np.uint8)
    if images.ndim == 3:
        images = images[..., np.newaxis]
    count, height, width, channels = images.shape
    canvas = np.full(
        (rows * (height + pad) + pad, cols * (width + pad) + pad, channels), 32, dtype=np.uint8
    )
    for index in range(min(count, rows * cols)):
        row, col = divmod(index, cols)
        top, left = pad + row * (height + pad), pad + col * (width + pad)
        canvas[top : top + height, left : left + width] = images[index]
    grid = canvas[:, :, 0] if channels == 1 else canvas
    picture = Image.fromarray(np.ascontiguousarray(grid))
    if scale > 1:
        picture = picture.resize(
            (picture.width * scale, picture.height * scale), Image.Resampling.NEAREST
        )
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    return buffer.getvalue()
