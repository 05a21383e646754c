"""Writing the project's synthetic data to S3 in the dataset layouts of docs/dataset-layouts.md.

Used by ``make demo``, the tests, the quality benchmark and
``bucketvision datasets make``: digits (for classify and generate) and shape
scenes (for detect and segment), uploaded as PNGs with their annotations.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from bucketvision.infra.errors import UserError
from bucketvision.infra.s3 import S3Store, S3Uri, parse_s3_uri
from bucketvision.infra.vocabulary import FAMILY_TASKS
from bucketvision.models.digits import make_digits
from bucketvision.models.scenes import Scenes, make_scenes


def png_bytes(pixels: np.ndarray) -> bytes:
    """A PNG of uint8 pixels (H x W, H x W x 1 or H x W x 3)."""
    array = pixels[..., 0] if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def _put_all(
    store: S3Store,
    bucket: str,
    objects: Iterable[tuple[str, Callable[[], bytes], str]],
    threads: int = 16,
) -> int:
    """PUT (key, make_body, content_type) objects in parallel; returns how many."""

    def put(item: tuple[str, Callable[[], bytes], str]) -> None:
        key, make_body, content_type = item
        store.put_bytes(bucket, key, make_body(), content_type)

    with ThreadPoolExecutor(threads, thread_name_prefix="bv-put") as pool:
        return sum(1 for _ in pool.map(put, objects))


def _split_prefix(uri: S3Uri, split: str) -> str:
    return uri.prefix if split == "train" else uri.key(split) + "/"


def write_digits(
    store: S3Store, uri: S3Uri, images: np.ndarray, labels: np.ndarray, task: str, split: str
) -> int:
    """classify: ``<split>/<digit>/<n>.png``; generate: ``[<split>/]images/<digit>/<n>.png``."""
    folder = uri.key(split) + "/" if task == "classify" else _split_prefix(uri, split) + "images/"
    objects = (
        (
            f"{folder}{int(label)}/{split}-{index:06d}.png",
            lambda i=index: png_bytes(images[i]),
            "image/png",
        )
        for index, label in enumerate(labels)
    )
    return _put_all(store, uri.bucket, objects)


def coco_annotation(
    number: int,
    image_id: int,
    category_id: int,
    box: Sequence[float],
    *,
    digits: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A COCO annotation of the box ``[x_min, y_min, x_max, y_max]`` (pixels).

    ``bbox`` is ``[x, y, width, height]``; with ``digits`` it and ``area`` are rounded.
    ``extra`` fields (a prediction's ``score``) are added as they are.
    """
    x_min, y_min, x_max, y_max = (float(v) for v in box)
    bbox = [x_min, y_min, x_max - x_min, y_max - y_min]
    if digits is not None:
        bbox = [round(v, digits) for v in bbox]
    area = bbox[2] * bbox[3]
    return {
        "id": number,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": bbox,
        "area": area if digits is None else round(area, digits),
        "iscrowd": 0,
        **extra,
    }


def write_detection(store: S3Store, uri: S3Uri, scenes: Scenes, split: str) -> int:
    """``[<split>/]images/<n>.png`` + COCO ``annotations.json``."""
    prefix = _split_prefix(uri, split)
    names = [f"{split}-{index:06d}.png" for index in range(len(scenes.images))]
    annotations = []
    for index, (boxes, classes) in enumerate(zip(scenes.boxes, scenes.classes, strict=True)):
        for box, category in zip(boxes, classes, strict=True):
            annotations.append(coco_annotation(len(annotations) + 1, index, int(category) + 1, box))
    height, width = scenes.images.shape[1:3]
    document = {
        "images": [
            {"id": i, "file_name": name, "width": width, "height": height}
            for i, name in enumerate(names)
        ],
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name} for i, name in enumerate(scenes.labels)],
    }
    objects = (
        (f"{prefix}images/{name}", lambda i=i: png_bytes(scenes.images[i]), "image/png")
        for i, name in enumerate(names)
    )
    count = _put_all(store, uri.bucket, objects)
    store.put_json(uri.bucket, prefix + "annotations.json", document)
    return count


def write_segmentation(store: S3Store, uri: S3Uri, scenes: Scenes, split: str) -> int:
    """``[<split>/]images/<n>.png`` + ``masks/<n>.png`` + ``classes.json``."""
    prefix = _split_prefix(uri, split)
    objects: list[tuple[str, Callable[[], bytes], str]] = []
    for index in range(len(scenes.images)):
        name = f"{split}-{index:06d}.png"
        objects.append(
            (f"{prefix}images/{name}", lambda i=index: png_bytes(scenes.images[i]), "image/png")
        )
        objects.append(
            (f"{prefix}masks/{name}", lambda i=index: png_bytes(scenes.masks[i]), "image/png")
        )
    count = _put_all(store, uri.bucket, objects) // 2
    store.put_json(uri.bucket, uri.key("classes.json"), scenes.mask_labels)
    return count


@dataclass(frozen=True)
class SynthesisPlan:
    """What to generate: ``count`` training items, plus an optional held-out test split."""

    task: str
    count: int
    seed: int = 1
    test_count: int = 0
    test_seed: int = 2026
    size: int = 128


def synthesize_dataset(store: S3Store, uri_text: str, plan: SynthesisPlan) -> dict[str, int]:
    """Generate and upload a dataset for ``plan.task``; returns items written per split."""
    if plan.task not in FAMILY_TASKS:
        raise UserError(f"--task must be one of {', '.join(FAMILY_TASKS)}")
    uri = parse_s3_uri(uri_text)
    store.ensure_bucket(uri.bucket)
    written = {}
    splits = [("train", plan.count, plan.seed)]
    if plan.test_count:
        splits.append(("test", plan.test_count, plan.test_seed))
    for split, count, seed in splits:
        if plan.task in ("classify", "generate"):
            images, labels = make_digits(count, seed)
            written[split] = write_digits(store, uri, images, labels, plan.task, split)
            continue
        scenes = make_scenes(count, seed, width=plan.size, height=plan.size)
        writer = write_detection if plan.task == "detect" else write_segmentation
        written[split] = writer(store, uri, scenes, split)
    return written
