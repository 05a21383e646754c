"""Synthetic handwritten-style digits, made here so nothing is downloaded.

Each digit 0-9 is a few pen strokes (polylines through control points in a unit
box). Every sample jitters the control points, the slant, scale, position and
pen width, draws at 4x resolution and downsamples, then centres the ink in a
28x28 frame the way MNIST does: white ink on black, 8-bit grey.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# Strokes in a unit box (x right, y down); each stroke is a list of points.
_STROKES: dict[int, list[list[tuple[float, float]]]] = {
    0: [
        [
            (0.5, 0.05),
            (0.2, 0.2),
            (0.12, 0.5),
            (0.2, 0.82),
            (0.5, 0.95),
            (0.8, 0.82),
            (0.88, 0.5),
            (0.8, 0.18),
            (0.5, 0.05),
        ]
    ],
    1: [[(0.3, 0.25), (0.55, 0.05), (0.55, 0.95)]],
    2: [
        [
            (0.15, 0.25),
            (0.35, 0.07),
            (0.65, 0.07),
            (0.82, 0.28),
            (0.7, 0.52),
            (0.15, 0.93),
            (0.88, 0.93),
        ]
    ],
    3: [
        [(0.15, 0.12), (0.5, 0.04), (0.8, 0.2), (0.65, 0.45), (0.4, 0.48)],
        [(0.4, 0.48), (0.8, 0.6), (0.82, 0.82), (0.5, 0.96), (0.15, 0.87)],
    ],
    4: [[(0.62, 0.95), (0.62, 0.05), (0.12, 0.66), (0.9, 0.66)]],
    5: [
        [
            (0.82, 0.06),
            (0.25, 0.06),
            (0.2, 0.45),
            (0.55, 0.38),
            (0.82, 0.55),
            (0.8, 0.82),
            (0.5, 0.96),
            (0.15, 0.86),
        ]
    ],
    6: [
        [
            (0.75, 0.06),
            (0.4, 0.2),
            (0.2, 0.55),
            (0.25, 0.85),
            (0.5, 0.96),
            (0.78, 0.82),
            (0.78, 0.6),
            (0.5, 0.48),
            (0.22, 0.62),
        ]
    ],
    7: [[(0.12, 0.07), (0.88, 0.07), (0.45, 0.95)], [(0.3, 0.5), (0.75, 0.5)]],
    8: [
        [
            (0.5, 0.48),
            (0.2, 0.3),
            (0.3, 0.08),
            (0.7, 0.08),
            (0.8, 0.3),
            (0.5, 0.48),
            (0.17, 0.7),
            (0.3, 0.94),
            (0.7, 0.94),
            (0.83, 0.7),
            (0.5, 0.48),
        ]
    ],
    9: [
        [
            (0.78, 0.42),
            (0.5, 0.55),
            (0.22, 0.38),
            (0.3, 0.1),
            (0.6, 0.05),
            (0.8, 0.25),
            (0.78, 0.42),
            (0.7, 0.95),
        ]
    ],
}

_SCALE = 4
_CANVAS = 28 * _SCALE


def _smooth(points: np.ndarray, steps: int = 8) -> np.ndarray:
    """Catmull-Rom spline through ``points`` so strokes curve like a pen."""
    if len(points) < 3:
        return points
    padded = np.vstack([points[0], points, points[-1]])
    out = []
    for i in range(1, len(padded) - 2):
        p0, p1, p2, p3 = padded[i - 1], padded[i], padded[i + 1], padded[i + 2]
        for t in np.linspace(0, 1, steps, endpoint=False):
            t2, t3 = t * t, t * t * t
            out.append(
                0.5
                * (
                    2 * p1
                    + (-p0 + p2) * t
                    + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2
                    + (-p0 + 3 * p1 - 3 * p2 + p3) * t3
                )
            )
    out.append(points[-1])
    return np.asarray(out)


def render_digit(digit: int, rng: np.random.Generator) -> np.ndarray:
    """One 28x28 uint8 image of ``digit`` with random handwriting variation."""
    slant = rng.normal(0.0, 0.18)
    angle = rng.normal(0.0, 0.12)
    scale_x = rng.uniform(0.75, 1.15)
    scale_y = rng.uniform(0.85, 1.15)
    jitter = rng.uniform(0.02, 0.055)
    width = round(rng.uniform(1.6, 3.4) * _SCALE)
    cos_a, sin_a = math.cos(angle), math.sin(angle)
    image = Image.new("L", (_CANVAS, _CANVAS), 0)
    draw = ImageDraw.Draw(image)
    for stroke in _STROKES[digit]:
        points = np.asarray(stroke, dtype=np.float64)
        points = points + rng.normal(0.0, jitter, size=points.shape)
        centred = points - 0.5
        centred[:, 0] = (centred[:, 0] + slant * -centred[:, 1]) * scale_x
        centred[:, 1] *= scale_y
        rotated = np.column_stack(
            [
                cos_a * centred[:, 0] - sin_a * centred[:, 1],
                sin_a * centred[:, 0] + cos_a * centred[:, 1],
            ]
        )
        path = (_smooth(rotated) * 0.7 + 0.5) * _CANVAS
        draw.line([tuple(p) for p in path], fill=255, width=width, joint="curve")
        radius = width / 2
        for x, y in (path[0], path[-1]):
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=255)
    return _centre_like_mnist(image)


def _centre_like_mnist(image: Image.Image) -> np.ndarray:
    """Fit the ink into 20x20 and centre it by mass in 28x28, as MNIST does."""
    box = image.getbbox()
    if box is None:
        return np.zeros((28, 28), dtype=np.uint8)
    ink = image.crop(box)
    ratio = 20.0 / max(ink.size)
    size = (max(1, round(ink.size[0] * ratio)), max(1, round(ink.size[1] * ratio)))
    small = ink.resize(size, Image.Resampling.LANCZOS).filter(ImageFilter.GaussianBlur(0.3))
    array = np.asarray(small, dtype=np.float64)
    total = array.sum() or 1.0
    rows, cols = np.indices(array.shape)
    centre_y, centre_x = (rows * array).sum() / total, (cols * array).sum() / total
    frame = Image.new("L", (28, 28), 0)
    frame.paste(small, (round(14 - centre_x), round(14 - centre_y)))
    return np.asarray(frame, dtype=np.uint8)


def make_digits(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` digits with balanced labels: (images N x 28 x 28 uint8, labels N int)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 10
    rng.shuffle(labels)
    images = np.stack([render_digit(int(label), rng) for label in labels])
    return images, labels.astype(np.int64)
