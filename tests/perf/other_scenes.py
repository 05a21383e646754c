"""Scenes in a style the project's own generator (models/scenes.py) never draws.

The benchmark of ``make bench-real`` trains the detector and the segmenter on these, so
their defaults are judged on data nobody tuned them on. What differs from
``models.scenes``:

- the images are 4:3 (160 x 120), so the loader letterboxes them (padding bands);
- backgrounds are textures: stripes at any angle, a checkerboard (possibly rotated),
  multi-octave value noise (Perlin-like), a radial or linear gradient, or a texture
  blended over a gradient; never flat colour with soft blotches;
- objects are four other shapes: ``ellipse`` (any aspect 0.45-1, rotated), ``rectangle``
  (aspect 0.4-1, rotated), ``triangle`` (irregular), ``star`` (five points); each is
  filled with a two-colour gradient, not one flat colour, and may carry an outline;
- an object's size (its longest extent) is 1/8 to 1/3 of the image's short side, one to
  five objects a scene, close together but never overlapping;
- pixel noise of a random strength (Gaussian sigma 4-18), sometimes a slight blur.

Every box is the tight box of the object's pixels and the mask matches the image pixel
for pixel (0 background, 1.. the classes in order). Only NumPy and Pillow.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from bucketvision.models.scenes import Scenes

OTHER_CLASSES = ("ellipse", "rectangle", "triangle", "star")
WIDTH, HEIGHT = 160, 120
SIZE_RANGE = (1 / 8, 1 / 3)  # longest extent of an object, as a fraction of the short side


def _colour_pair(rng: np.random.Generator, spread: float) -> tuple[np.ndarray, np.ndarray]:
    base = rng.uniform(0, 255, size=3)
    other = np.clip(base + rng.uniform(-spread, spread, size=3), 0, 255)
    return base, other


def _value_noise(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Perlin-like noise in [0, 1]: random grids of three sizes upsampled bicubically."""
    total = np.zeros((height, width), np.float32)
    weight = 0.0
    for cells, amplitude in ((3, 1.0), (7, 0.5), (15, 0.25)):
        grid = rng.uniform(0, 255, size=(cells, cells)).astype(np.uint8)
        smooth = Image.fromarray(grid, "L").resize((width, height), Image.Resampling.BICUBIC)
        total += amplitude * np.asarray(smooth, np.float32) / 255.0
        weight += amplitude
    total /= weight
    return (total - total.min()) / max(float(np.ptp(total)), 1e-6)


def _pattern(rng: np.random.Generator, kind: str, width: int, height: int) -> np.ndarray:
    """A [H, W] field in [0, 1] of the texture ``kind``."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, math.pi)
    u = xs * math.cos(angle) + ys * math.sin(angle)
    v = -xs * math.sin(angle) + ys * math.cos(angle)
    if kind == "stripes":
        period = rng.uniform(6, 24)
        return 0.5 + 0.5 * np.sin(2 * math.pi * u / period)
    if kind == "checker":
        cell = rng.uniform(8, 28)
        return ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float32)
    if kind == "noise":
        return _value_noise(rng, width, height)
    if kind == "radial":
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        distance = np.hypot(xs - cx, ys - cy)
        return distance / max(float(distance.max()), 1e-6)
    ramp = u - u.min()
    return ramp / max(float(ramp.max()), 1e-6)


def background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A textured or gradient background, float32 [H, W, 3] in 0-255."""
    kind = str(rng.choice(["stripes", "checker", "noise", "radial", "linear", "blend"]))
    if kind == "blend":  # a texture over a gradient
        low, high = _colour_pair(rng, 200)
        ramp = _pattern(rng, "linear", width, height)[..., None]
        texture = _pattern(rng, str(rng.choice(["stripes", "checker", "noise"])), width, height)
        pixels = low + ramp * (high - low)
        return pixels + (texture[..., None] - 0.5) * rng.uniform(20, 60)
    spread = 200 if kind in ("radial", "linear") else rng.uniform(50, 110)
    low, high = _colour_pair(rng, spread)
    field = _pattern(rng, kind, width, height)[..., None]
    return low + field * (high - low)


def _outline(
    rng: np.random.Generator, kind: str, cx: float, cy: float, size: float
) -> list[tuple[float, float]]:
    """The polygon of an object whose longest extent is about ``size`` pixels."""
    angle = rng.uniform(0, 2 * math.pi)
    radius = size / 2
    if kind == "ellipse":
        aspect = rng.uniform(0.45, 1.0)
        local = [
            (radius * math.cos(t), radius * aspect * math.sin(t))
            for t in np.linspace(0, 2 * math.pi, 48, endpoint=False)
        ]
    elif kind == "rectangle":
        aspect = rng.uniform(0.4, 1.0)
        half_w = radius / math.hypot(1.0, aspect)
        half_h = half_w * aspect
        local = [(-half_w, -half_h), (half_w, -half_h), (half_w, half_h), (-half_w, half_h)]
    elif kind == "triangle":
        turns = np.array([0.0, rng.uniform(1.6, 2.6), rng.uniform(3.7, 4.7)])
        local = [(radius * math.cos(t), radius * math.sin(t)) for t in turns]
    else:  # star: five points, inner radius 0.45
        local = [
            (
                (radius if i % 2 == 0 else 0.45 * radius) * math.cos(math.pi * i / 5),
                (radius if i % 2 == 0 else 0.45 * radius) * math.sin(math.pi * i / 5),
            )
            for i in range(10)
        ]
    cos, sin = math.cos(angle), math.sin(angle)
    return [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in local]


def _fill_colours(rng: np.random.Generator, under: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two fill colours whose mean stands at least 100 away from the background under it."""
    for _ in range(60):
        first = rng.uniform(0, 255, size=3)
        second = np.clip(first + rng.uniform(-50, 50, size=3), 0, 255)
        if np.linalg.norm((first + second) / 2 - under) >= 100:
            break
    return first, second


def render_other_scene(
    rng: np.random.Generator, width: int = WIDTH, height: int = HEIGHT
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One scene: (image uint8 HxWx3, boxes float32 [n, 4], classes int32 [n], mask uint8 HxW)."""
    pixels = background(rng, width, height)
    mask = np.zeros((height, width), np.uint8)
    boxes: list[list[float]] = []
    classes: list[int] = []
    wanted = int(rng.integers(1, 6))
    short = min(width, height)
    ys, xs = np.mgrid[0:height, 0:width]
    for _ in range(wanted * 40):
        if len(classes) == wanted:
            break
        kind_index = int(rng.integers(len(OTHER_CLASSES)))
        size = rng.uniform(*SIZE_RANGE) * short
        cx = rng.uniform(size / 2 + 1, width - size / 2 - 1)
        cy = rng.uniform(size / 2 + 1, height - size / 2 - 1)
        points = _outline(rng, OTHER_CLASSES[kind_index], cx, cy, size)
        shape = Image.new("L", (width, height), 0)
        ImageDraw.Draw(shape).polygon(points, fill=1)
        inside = np.asarray(shape, bool)
        if not inside.any():
            continue
        grown = np.asarray(
            Image.fromarray(inside.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(5))
        )
        if (grown.astype(bool) & (mask > 0)).any():
            continue  # touches or overlaps an object already drawn
        first, second = _fill_colours(rng, pixels[inside].mean(axis=0))
        direction = rng.uniform(0, 2 * math.pi)
        ramp = (xs - cx) * math.cos(direction) + (ys - cy) * math.sin(direction)
        ramp = np.clip(ramp / size + 0.5, 0, 1)[..., None]
        fill = first + ramp * (second - first)
        pixels = np.where(inside[..., None], fill, pixels)
        mask[inside] = kind_index + 1
        rows, columns = np.nonzero(inside)
        boxes.append(
            [
                float(columns.min()),
                float(rows.min()),
                float(columns.max() + 1),
                float(rows.max() + 1),
            ]
        )
        classes.append(kind_index)
    pixels = pixels + rng.normal(0.0, rng.uniform(4, 18), size=pixels.shape)
    image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB")
    if rng.uniform() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(radius=0.6))
    return (
        np.asarray(image, np.uint8),
        np.asarray(boxes, np.float32).reshape(-1, 4),
        np.asarray(classes, np.int32),
        mask,
    )


def make_other_scenes(count: int, seed: int, width: int = WIDTH, height: int = HEIGHT) -> Scenes:
    """``count`` other-style scenes from ``seed`` (the same seed gives the same scenes)."""
    rng = np.random.default_rng(seed)
    rendered = [render_other_scene(rng, width, height) for _ in range(count)]
    return Scenes(
        images=np.stack([scene[0] for scene in rendered]),
        boxes=[scene[1] for scene in rendered],
        classes=[scene[2] for scene in rendered],
        masks=np.stack([scene[3] for scene in rendered]),
        labels=OTHER_CLASSES,
    )
