"""Synthetic scenes of shapes, with boxes and masks, so nothing is downloaded.

Each scene is 1-4 shapes (circle, square, triangle by default) of random size,
colour and rotation on a noisy background (a colour gradient, blotches and
pixel noise). Shapes do not overlap, so every box is the tight box of its
visible pixels and the class-id mask (0 = background, 1.. = the classes in
order) matches the image pixel for pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SHAPE_CLASSES = ("circle", "square", "triangle")


@dataclass(frozen=True)
class Scenes:
    """A batch of scenes: images, per-image boxes and classes, and class-id masks."""

    images: np.ndarray  # uint8 [N, H, W, 3]
    boxes: list[np.ndarray]  # per image float32 [n, 4]: x_min, y_min, x_max, y_max (pixels)
    classes: list[np.ndarray]  # per image int32 [n], indexes into ``labels``
    masks: np.ndarray  # uint8 [N, H, W]: 0 background, class index + 1 for a shape
    labels: tuple[str, ...]

    @property
    def mask_labels(self) -> list[str]:
        """Class names of the mask ids: background first."""
        return ["background", *self.labels]


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A gradient between two random colours, with soft blotches."""
    start, end = rng.uniform(0, 255, size=(2, 3))
    angle = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = (xs * math.cos(angle) + ys * math.sin(angle)) / max(width, height)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    pixels = start + ramp[..., None] * (end - start)
    image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 6))):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        radius = rng.uniform(0.05, 0.25) * max(width, height)
        colour = tuple(int(c) for c in rng.uniform(0, 255, size=3))
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour)
    return image.filter(ImageFilter.GaussianBlur(radius=max(width, height) / 24))


def _shape_polygon(
    kind: str, cx: float, cy: float, radius: float, angle: float
) -> list[tuple[float, float]]:
    corners = 4 if kind == "square" else 3
    offset = math.pi / 4 if kind == "square" else -math.pi / 2
    return [
        (
            cx + radius * math.cos(angle + offset + 2 * math.pi * i / corners),
            cy + radius * math.sin(angle + offset + 2 * math.pi * i / corners),
        )
        for i in range(corners)
    ]


def _contrasting_colour(rng: np.random.Generator, background: np.ndarray) -> tuple[int, ...]:
    """A colour at least 90 (Euclidean, 0-255 RGB) from the mean background under the shape."""
    for _ in range(50):
        colour = rng.uniform(0, 255, size=3)
        if np.linalg.norm(colour - background) >= 90:
            break
    return tuple(int(c) for c in colour)


def render_scene(
    rng: np.random.Generator,
    width: int,
    height: int,
    labels: tuple[str, ...] = SHAPE_CLASSES,
    shapes: tuple[int, int] = (1, 4),
    size_range: tuple[float, float] = (0.12, 0.4),
    noise: float = 12.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One scene: (image uint8 HxWx3, boxes float32 [n,4], classes int32 [n], mask uint8 HxW)."""
    image = _background(rng, width, height)
    mask = Image.new("L", (width, height), 0)
    draw, mask_draw = ImageDraw.Draw(image), ImageDraw.Draw(mask)
    wanted = int(rng.integers(shapes[0], shapes[1] + 1))
    boxes: list[list[float]] = []
    classes: list[int] = []
    side = min(width, height)
    for _ in range(wanted * 30):
        if len(classes) == wanted:
            break
        kind_index = int(rng.integers(len(labels)))
        kind = labels[kind_index]
        radius = rng.uniform(*size_range) * side / 2
        cx = rng.uniform(radius + 1, width - radius - 1)
        cy = rng.uniform(radius + 1, height - radius - 1)
        if kind == "circle":
            points = None
            bounds = (cx - radius, cy - radius, cx + radius, cy + radius)
        else:
            points = _shape_polygon(kind, cx, cy, radius, rng.uniform(0, 2 * math.pi))
            xs, ys = zip(*points, strict=True)
            bounds = (min(xs), min(ys), max(xs), max(ys))
        margin = 3
        if any(
            bounds[0] - margin < other[2]
            and other[0] < bounds[2] + margin
            and bounds[1] - margin < other[3]
            and other[1] < bounds[3] + margin
            for other in boxes
        ):
            continue
        region = np.asarray(image)[
            int(bounds[1]) : int(bounds[3]) + 1, int(bounds[0]) : int(bounds[2]) + 1
        ]
        colour = _contrasting_colour(rng, region.reshape(-1, 3).mean(axis=0))
        shape_mask = Image.new("L", (width, height), 0)
        shape_draw = ImageDraw.Draw(shape_mask)
        if points is None:
            shape_draw.ellipse(bounds, fill=1)
        else:
            shape_draw.polygon(points, fill=1)
        ys_on, xs_on = np.nonzero(np.asarray(shape_mask))
        if len(xs_on) == 0:
            continue  # too small to cover a pixel: not drawn at all
        if points is None:
            draw.ellipse(bounds, fill=colour)
        else:
            draw.polygon(points, fill=colour)
        mask_draw.bitmap((0, 0), shape_mask.point(lambda v: 255 if v else 0), fill=kind_index + 1)
        boxes.append(
            [float(xs_on.min()), float(ys_on.min()), float(xs_on.max() + 1), float(ys_on.max() + 1)]
        )
        classes.append(kind_index)
    pixels = np.asarray(image, dtype=np.float32)
    pixels = pixels + rng.normal(0.0, noise, size=pixels.shape)
    return (
        pixels.clip(0, 255).astype(np.uint8),
        np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        np.asarray(classes, dtype=np.int32),
        np.asarray(mask, dtype=np.uint8),
    )


def make_scenes(
    count: int,
    seed: int,
    *,
    width: int = 128,
    height: int = 128,
    labels: tuple[str, ...] = SHAPE_CLASSES,
    shapes: tuple[int, int] = (1, 4),
) -> Scenes:
    """``count`` scenes from ``seed`` (the same seed gives the same scenes)."""
    rng = np.random.default_rng(seed)
    rendered = [render_scene(rng, width, height, labels, shapes) for _ in range(count)]
    return Scenes(
        images=np.stack([scene[0] for scene in rendered]),
        boxes=[scene[1] for scene in rendered],
        classes=[scene[2] for scene in rendered],
        masks=np.stack([scene[3] for scene in rendered]),
        labels=tuple(labels),
    )
