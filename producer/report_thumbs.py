"""Thumbnails for ``bucketvision report``: one tile per manifest line, results drawn on.

Images are untrusted bytes from the bucket, so they are decoded with the
worker's safe decoder (``worker.decode``: an allow-list of formats, a pixel
cap, EXIF orientation; it needs Pillow and numpy only, never TensorFlow).
What a tile shows follows the task: classify gets a label and score caption,
detect its boxes (original pixels scaled to the thumbnail) with labels,
segment its mask colour-overlaid at 50 % alpha, generate the generated image.
An error line becomes a red tile naming the error type, drawn by the HTML.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from bucketvision.models.decoding import DecodeError, decode_image
from bucketvision.models.detection.annotate import PALETTE, legible_font

TILE = 176  # the long side of a thumbnail, in pixels
MAX_BOXES = 25  # the highest-scoring detections drawn on a tile

Fetch = Callable[[str, str], bytes]
"""``fetch(bucket, key)`` -> the object's bytes (bounded by BV_MAX_OBJECT_BYTES)."""


@dataclass(frozen=True)
class Tile:
    """One item of the grid: its key, status, caption lines and the thumbnail PNG."""

    key: str
    status: str
    caption: str
    detail: str = ""
    image: bytes | None = None
    mime: str = "image/png"


def colour(index: int) -> tuple[int, int, int]:
    """The palette colour of a class index (cycling)."""
    return PALETTE[index % len(PALETTE)]


def label_colours(labels: list[str]) -> dict[str, tuple[int, int, int]]:
    """A stable colour per label, in order of first appearance."""
    return {label: colour(index) for index, label in enumerate(dict.fromkeys(labels))}


def _split(uri_or_key: str, bucket: str) -> tuple[str, str]:
    """``(bucket, key)`` of an ``s3://`` URI, or of a bare key in ``bucket``."""
    if uri_or_key.startswith("s3://"):
        found, _, key = uri_or_key[len("s3://") :].partition("/")
        return found, key
    return bucket, uri_or_key


def _thumbnail(data: bytes, max_pixels: int) -> tuple[Image.Image, int, int]:
    """An RGB thumbnail that fits TILE x TILE, and the original (oriented) size."""
    # A model-sized target lets a large JPEG decode at a reduced size (draft mode), so a
    # 48 MP photo is shown at the same pixel cap as the worker read it; only the preview is used.
    decoded = decode_image(
        data,
        mode="RGB",
        size=(TILE, TILE),
        max_pixels=max_pixels,
        resize="letterbox",
        preview_size=TILE,
    )
    preview = decoded.preview if decoded.preview is not None else decoded.pixels
    image = Image.fromarray(np.ascontiguousarray(preview[:, :, :3]), "RGB")
    scale = TILE / max(image.size)
    if scale > 1:  # small images (28x28 digits) are scaled up crisply
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.NEAREST)
    return image, decoded.original_width, decoded.original_height


def encode_tile(image: Image.Image) -> tuple[bytes, str]:
    """PNG, or JPEG when that is much smaller (noisy photos); returns ``(bytes, mime)``."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    png = buffer.getvalue()
    if len(png) < 12_000:
        return png, "image/png"
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    jpeg = buffer.getvalue()
    return (jpeg, "image/jpeg") if len(jpeg) < len(png) * 0.7 else (png, "image/png")


def draw_detections(
    image: Image.Image,
    detections: list[dict[str, Any]],
    width: int,
    height: int,
    colours: dict[str, tuple[int, int, int]] | None = None,
) -> Image.Image:
    """Boxes in original pixels (``width`` x ``height``) drawn, scaled, on ``image``."""
    sx, sy = image.width / max(width, 1), image.height / max(height, 1)
    drawn = image.copy()
    draw = ImageDraw.Draw(drawn)
    font = legible_font(11)
    ranked = sorted(detections, key=lambda d: -float(d.get("score", 0.0)))[:MAX_BOXES]
    colours = {**label_colours(sorted(str(d.get("label")) for d in detections)), **(colours or {})}
    for detection in ranked:
        x0, y0, x1, y1 = (float(v) for v in detection["box"])
        box = (x0 * sx, y0 * sy, max(x0 * sx, x1 * sx - 1), max(y0 * sy, y1 * sy - 1))
        rgb = colours[str(detection.get("label"))]
        draw.rectangle(box, outline=rgb, width=2)
        text = f"{detection.get('label')} {float(detection.get('score', 0.0)):.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        ty = box[1] - (bottom - top) - 4 if box[1] > bottom - top + 4 else box[1]
        tx = max(0.0, min(box[0], drawn.width - (right - left) - 4))  # keep the label inside
        draw.rectangle((tx, ty, tx + right - left + 4, ty + bottom - top + 4), fill=rgb)
        draw.text((tx + 2, ty + 2 - top), text, fill=(255, 255, 255), font=font)
    return drawn


def overlay_mask(image: Image.Image, mask: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """Class ids (0 = background, left clear) colour-blended onto ``image``."""
    ids = np.asarray(
        Image.fromarray(mask.astype(np.uint8), "L").resize(image.size, Image.Resampling.NEAREST)
    )
    table = np.array([(0, 0, 0), *(colour(i) for i in range(255))], dtype=np.float32)
    pixels = np.asarray(image, dtype=np.float32)
    blended = pixels * (1 - alpha) + table[ids] * alpha
    out = np.where((ids > 0)[:, :, np.newaxis], blended, pixels)
    return Image.fromarray(out.round().astype(np.uint8), "RGB")


def _caption(task: str, result: dict[str, Any]) -> tuple[str, str]:
    """The two caption lines under an ok tile."""
    if task == "classify":
        return str(result.get("label")), f"score {float(result.get('score', 0.0)):.3f}"
    if task == "detect":
        found = result.get("detections") or []
        labels = sorted({str(d.get("label")) for d in found})
        return f"{len(found)} detection{'s' * (len(found) != 1)}", ", ".join(labels)
    if task == "segment":
        fractions = {k: v for k, v in (result.get("pixel_fraction") or {}).items() if v}
        background = (list(result.get("classes") or []) or ["background"])[0]
        shown = [k for k in sorted(fractions, key=lambda k: -fractions[k]) if k != background]
        return "mask", " · ".join(f"{k} {fractions[k]:.0%}" for k in shown[:3]) or "background"
    if task == "generate":
        label = result.get("label")
        return f"seed {result.get('seed')}", f"class {label}" if label is not None else ""
    return "ok", ""


def make_tile(
    line: dict[str, Any],
    *,
    task: str,
    input_bucket: str,
    output_bucket: str,
    fetch: Fetch,
    max_pixels: int,
    colours: dict[str, tuple[int, int, int]] | None = None,
) -> Tile:
    """The tile of one manifest line; reading or decoding problems become the caption."""
    key, status = str(line.get("key")), str(line.get("status"))
    if status == "error":
        error = line.get("error") or {}
        return Tile(key, status, str(error.get("type") or "error"), str(error.get("message", "")))
    result = line.get("result") or {}
    caption, detail = _caption(task, result) if status == "ok" else ("skipped", "")
    if task == "generate":
        source = _split(str(result.get("image") or key), output_bucket)
    else:
        source = (input_bucket, key)
    try:
        image, width, height = _thumbnail(fetch(*source), max_pixels)
        if status == "ok" and task == "detect":
            found = result.get("detections") or []
            image = draw_detections(image, found, width, height, colours)
        if status == "ok" and task == "segment" and result.get("mask"):
            mask_bytes = fetch(*_split(str(result["mask"]), output_bucket))
            # The mask is at the original's size, which the cap may only have allowed drafted.
            mask_cap = max(max_pixels, width * height)
            mask = decode_image(mask_bytes, mode="L", size=None, max_pixels=mask_cap)
            image = overlay_mask(image, mask.pixels[:, :, 0])
    except DecodeError as error:
        return Tile(key, status, caption, f"cannot show the image: {error.kind}")
    except Exception as error:  # a missing or unreadable object must not fail the report
        return Tile(key, status, caption, f"cannot read the image: {type(error).__name__}")
    return Tile(key, status, caption, detail, *encode_tile(image))
