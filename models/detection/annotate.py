"""Drawing detections on an image with Pillow, for the ``.annotated.png`` result file.

Why a separate module: the worker writes the annotated PNG beside each item's
JSON, and the tuning script saves one to look at; both draw the same way. A
canvas smaller than ``MIN_LONG_SIDE`` is enlarged by an integer factor (nearest
neighbour) first, so that labels stay legible on a 128 px image.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

MIN_LONG_SIDE = 384
PALETTE = (
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (0, 128, 128),
    (170, 110, 40),
)
"""Class colours (cycling by class index), shared with the job report's drawings."""


def legible_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def draw_detections(
    pixels: np.ndarray,
    boxes: np.ndarray,
    labels: Sequence[str],
    scores: Sequence[float],
    class_ids: Sequence[int],
) -> Image.Image:
    """An RGB image of ``pixels`` with ``boxes`` (in ``pixels`` coordinates) and captions."""
    image = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).convert("RGB")
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    factor = max(1, MIN_LONG_SIDE // max(image.size))
    if factor > 1:
        image = image.resize(
            (image.width * factor, image.height * factor), Image.Resampling.NEAREST
        )
        boxes = boxes * factor
    draw = ImageDraw.Draw(image)
    long_side = max(image.size)
    font = legible_font(max(10, long_side // 36))
    line = max(1, long_side // 200)
    for box, label, score, class_id in zip(boxes, labels, scores, class_ids, strict=True):
        colour = PALETTE[int(class_id) % len(PALETTE)]
        x0, y0, x1, y1 = (float(v) for v in box)
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=line)
        caption = f"{label} {score:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), caption, font=font)
        text_w, text_h = right - left, bottom - top
        text_y = y0 - text_h - 2 * line if y0 - text_h - 2 * line >= 0 else y0 + line
        text_x = min(max(0.0, x0), max(0.0, image.width - text_w - 2))
        draw.rectangle((text_x, text_y, text_x + text_w + 2, text_y + text_h + 2), fill=colour)
        draw.text((text_x + 1 - left, text_y + 1 - top), caption, fill=(255, 255, 255), font=font)
    return image


def png_bytes(image: Image.Image) -> bytes:
    """``image`` encoded as PNG."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
