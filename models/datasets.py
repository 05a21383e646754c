"""Loading a training dataset from S3 into ``tf.data`` (decode, fit, hold in memory).

The layout is read by :mod:`models.dataset_layouts`; here each record is
downloaded and decoded by a thread pool, fitted to the model input (stretched for
classify and generate, letterboxed with its boxes and mask for detect and
segment), and held in memory so epochs do not go back to S3. An item that cannot
be decoded is skipped and counted; one bad file never stops a training run.
"""

from __future__ import annotations

import io
import logging
import random
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from bucketvision.infra.s3 import S3Store, StorageError, parse_s3_uri
from bucketvision.models.dataset_layouts import DatasetLayout, Record, read_layout
from bucketvision.models.decoding import DecodeError, decode_image
from bucketvision.models.family import DatasetInfo
from bucketvision.models.imaging import fit_mask

log = logging.getLogger("bucketvision.training")

DEFAULT_SIDE = {"classify": 96, "detect": 128, "segment": 128, "generate": 64}
SMALL_GREY = 64  # grey images up to this size keep their size (digits stay 28x28)
MAX_PIXELS = 64_000_000
MAX_BYTES = 64 * 1024 * 1024


@dataclass
class LoadedDataset:
    """The splits as unbatched ``tf.data`` datasets, with what the loader learnt."""

    layout: DatasetLayout
    info: DatasetInfo
    resize: str
    train: Any
    val: Any
    evaluation: Any  # the test split when there is one, else val
    skipped: list[tuple[str, str]] = field(default_factory=list)


def plan_input(
    store: S3Store, layout: DatasetLayout, image_size: int | None
) -> tuple[tuple[int, int, int], str]:
    """(H, W, C) of the model input and the resize mode, from the task and the first image."""
    task = layout.task
    resize = "letterbox" if task in ("detect", "segment") else "stretch"
    first = layout.splits["train"][0]
    data = store.get_bytes(layout.uri.bucket, first.image_key, max_bytes=MAX_BYTES)
    with Image.open(io.BytesIO(data)) as image:
        grey = image.mode in ("L", "1", "I;16", "I") and task in ("classify", "generate")
        width, height = image.size
    if image_size is None and grey and max(width, height) <= SMALL_GREY:
        return (height, width, 1), resize
    side = image_size or DEFAULT_SIDE[task]
    return (side, side, 1 if grey else 3), resize


def _element(
    store: S3Store, bucket: str, record: Record, task: str, shape: tuple[int, int, int], resize: str
) -> tuple[Any, ...]:
    height, width, channels = shape
    data = store.get_bytes(bucket, record.image_key, max_bytes=MAX_BYTES)
    mode = "L" if channels == 1 else "RGB"
    image = decode_image(
        data, mode=mode, size=(width, height), max_pixels=MAX_PIXELS, resize=resize
    )
    if task in ("classify", "generate"):
        return image.pixels, np.int32(record.label)
    placement = image.placement
    if placement is None:
        raise DecodeError("CorruptImage", "the decoder returned no placement")
    if task == "detect":
        boxes = placement.boxes_to_target(np.asarray(record.boxes, np.float32).reshape(-1, 4))
        return image.pixels, boxes, np.asarray(record.classes, np.int32).reshape(-1)
    if record.mask_key is None:
        raise DecodeError("BadMask", f"{record.image_key} has no mask")
    mask_bytes = store.get_bytes(bucket, record.mask_key, max_bytes=MAX_BYTES)
    with Image.open(io.BytesIO(mask_bytes), formats=["PNG"]) as mask:
        if mask.mode not in ("L", "P"):
            raise DecodeError("BadMask", f"mask mode {mask.mode}; masks are 8-bit class ids")
        if mask.size != (placement.original_width, placement.original_height):
            raise DecodeError(
                "BadMask",
                f"mask is {mask.size}, image is {placement.original_width}x"
                f"{placement.original_height}",
            )
        fitted = np.asarray(fit_mask(mask.convert("L"), placement), dtype=np.uint8)
    return image.pixels, fitted


def _signature(task: str, shape: tuple[int, int, int]) -> tuple[Any, ...]:
    import tensorflow as tf

    height, width, channels = shape
    image = tf.TensorSpec((height, width, channels), tf.uint8)
    if task in ("classify", "generate"):
        return image, tf.TensorSpec((), tf.int32)
    if task == "detect":
        return image, tf.TensorSpec((None, 4), tf.float32), tf.TensorSpec((None,), tf.int32)
    return image, tf.TensorSpec((height, width), tf.uint8)


def stream_split(
    store: S3Store,
    layout: DatasetLayout,
    records: list[Record],
    shape: tuple[int, int, int],
    resize: str,
    *,
    threads: int = 16,
    skipped: list[tuple[str, str]] | None = None,
    on_item: Callable[[], None] | None = None,
) -> Any:
    """An unbatched ``tf.data.Dataset`` of ``records``, downloaded and decoded from S3 once.

    Fixed-shape elements (classify, generate, segment) are filled into preallocated arrays
    as the thread pool decodes them and served by ``from_tensor_slices``: a cached
    ``from_generator`` dataset made every training step of a U-Net twice as slow on two
    cores (the kernel time of page faults rose tenfold), so it is kept only for detection,
    whose elements have a varying number of boxes.
    """
    import tensorflow as tf

    skipped = skipped if skipped is not None else []
    bucket = layout.uri.bucket

    def load(record: Record) -> tuple[Any, ...] | None:
        try:
            return _element(store, bucket, record, layout.task, shape, resize)
        except (DecodeError, StorageError, OSError, ValueError) as error:
            skipped.append((record.image_key, f"{type(error).__name__}: {error}"))
            log.warning("skipping %s: %s", record.image_key, error)
            return None

    def generate() -> Iterator[tuple[Any, ...]]:
        with ThreadPoolExecutor(threads, thread_name_prefix="bv-data") as pool:
            for element in pool.map(load, records):
                if on_item is not None:
                    on_item()
                if element is not None:
                    yield element

    signature = _signature(layout.task, shape)
    if layout.task == "detect":
        return tf.data.Dataset.from_generator(generate, output_signature=signature).cache()
    arrays = [
        np.empty((len(records), *spec.shape), spec.dtype.as_numpy_dtype) for spec in signature
    ]
    count = 0
    for element in generate():
        for array, part in zip(arrays, element, strict=True):
            array[count] = part
        count += 1
    return tf.data.Dataset.from_tensor_slices(tuple(array[:count] for array in arrays))


def load_dataset(
    store: S3Store,
    uri: str,
    task: str,
    *,
    image_size: int | None = None,
    threads: int = 16,
) -> LoadedDataset:
    """Read the layout at ``uri`` and stream its splits (see the module docstring)."""
    layout = read_layout(store, parse_s3_uri(uri), task)
    shape, resize = plan_input(store, layout, image_size)
    skipped: list[tuple[str, str]] = []

    def split(name: str) -> Any:
        records = list(layout.splits.get(name, []))
        if name == "train":  # listings come sorted, often by class: mix them, reproducibly
            # Ordering, not security (bandit B311).
            random.Random(0).shuffle(records)  # nosec B311
        return stream_split(store, layout, records, shape, resize, threads=threads, skipped=skipped)

    info = DatasetInfo(
        task=task,
        labels=list(layout.labels),
        input_shape=shape,
        train_count=len(layout.splits["train"]),
        val_count=len(layout.splits.get("val", [])),
        uri=str(layout.uri),
    )
    train, val = split("train"), split("val")
    evaluation = split("test") if layout.evaluation_split == "test" else val
    return LoadedDataset(layout, info, resize, train, val, evaluation, skipped)
