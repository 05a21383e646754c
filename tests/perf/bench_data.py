"""The bench's corpora: 28x28 grey digit PNGs and 640x480 JPEGs, uploaded in parallel.

Digits come from the project's own generator (``models.digits`` through
``tests.helpers.upload_digits``). The photos are made here with numpy and
Pillow: a smooth two-colour gradient, a few filled shapes and a little noise,
different for every image, saved as JPEG quality 90 (about 40-80 kB each, close
to a real 640x480 photo's decode cost). Nothing is downloaded.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from tests.helpers import upload_digits

PHOTO_SIZE = (640, 480)  # width, height
JPEG_QUALITY = 90


def photo_jpeg(seed: int, size: tuple[int, int] = PHOTO_SIZE) -> bytes:
    """One synthetic photo-like JPEG (gradient, shapes, texture), deterministic per seed."""
    rng = np.random.default_rng(seed)
    width, height = size
    top, bottom = rng.integers(0, 256, size=(2, 3))
    ramp = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    tilt = np.linspace(-0.2, 0.2, width, dtype=np.float32)[None, :, None] * rng.uniform(-1, 1)
    mix = np.clip(ramp + tilt, 0.0, 1.0)
    pixels = top[None, None, :] * (1.0 - mix) + bottom[None, None, :] * mix
    image = Image.fromarray(pixels.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(4, 12))):
        x0, y0 = int(rng.integers(-80, width)), int(rng.integers(-80, height))
        x1, y1 = x0 + int(rng.integers(30, 300)), y0 + int(rng.integers(30, 240))
        fill = tuple(int(v) for v in rng.integers(0, 256, size=3))
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        else:
            draw.rectangle((x0, y0, x1, y1), fill=fill)
    image = image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.5, 2.0))))
    noisy = np.asarray(image, dtype=np.int16) + rng.normal(0, 6, (height, width, 3)).astype(
        np.int16
    )
    buffer = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB").save(
        buffer, format="JPEG", quality=JPEG_QUALITY
    )
    return buffer.getvalue()


def upload_photos(
    client: Any, bucket: str, prefix: str, count: int, seed: int, threads: int = 16
) -> list[str]:
    """Put ``count`` synthetic 640x480 JPEGs under ``prefix`` (10 sub-folders); their keys."""
    keys = [f"{prefix}{index % 10}/{index:05d}.jpg" for index in range(count)]

    def put(index: int) -> None:
        body = photo_jpeg(seed * 1_000_003 + index)
        client.put_object(Bucket=bucket, Key=keys[index], Body=body, ContentType="image/jpeg")

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, range(count)))
    return sorted(keys)


def upload_digit_pngs(client: Any, bucket: str, prefix: str, count: int, seed: int) -> list[str]:
    """Put ``count`` digit PNGs under ``prefix`` (``<label>/<n>.png``); their keys, sorted."""
    return sorted(upload_digits(client, bucket, prefix, count, seed=seed))


def listed_keys(client: Any, bucket: str, prefix: str) -> list[str]:
    """Every key under ``prefix`` (what a producer would find), sorted."""
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return sorted(keys)
