"""One item's steps in a batch: download and decode it, then make and upload its result.

:mod:`worker.pipeline` runs the I/O steps (:func:`fetch`, :func:`upload`) on its I/O
threads and the CPU steps (:func:`decode`, :func:`make_result`, :func:`prepare_upload`) on
the batch's own; each step records its seconds on the item and turns what can go wrong
with one image into that item's error, never the batch's. S3 being unavailable says
nothing about an image: :class:`StorageUnavailable` goes up for the batch to be run again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, wait
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from bucketvision.infra.messages import BatchMessage
from bucketvision.infra.outputs import item_output_key
from bucketvision.infra.s3 import S3Store, StorageError, StorageUnavailable
from bucketvision.models.decoding import DecodedImage, DecodeError, decode_image
from bucketvision.models.family import ItemFile, ItemResult, ServedModel
from bucketvision.worker.shadow import ShadowRun


@dataclass
class Limits:
    max_pixels: int
    max_bytes: int


@dataclass
class ItemState:
    """One key's progress through the batch."""

    key: str
    decoded: DecodedImage | None = None
    error: tuple[str, str] | None = None
    result: dict[str, Any] | None = None
    files: list[ItemFile] = field(default_factory=list)
    output: str | None = None
    download_seconds: float = 0.0
    decode_seconds: float = 0.0
    upload_seconds: float = 0.0
    result_seconds: float = 0.0  # post-processing: the result and files from the raw output
    ran: bool = False  # went through to its result or its error (all do unless stopped)


def fetch(store: S3Store, bucket: str, item: ItemState, limits: Limits) -> bytes | None:
    """The item's bytes (an I/O thread's only work); None once it is an error."""
    if item.error is not None:
        return None
    start = time.perf_counter()
    try:
        return store.get_bytes(bucket, item.key, max_bytes=limits.max_bytes)
    except StorageUnavailable:
        raise
    except StorageError as error:
        item.error = (type(error).__name__, str(error))
        return None
    finally:
        item.download_seconds = time.perf_counter() - start


def decode(item: ItemState, data: bytes | None, model: ServedModel, limits: Limits) -> None:
    """Decode the fetched bytes to the model's input; a bad image becomes the item's error."""
    if data is None:
        return
    start = time.perf_counter()
    try:
        item.decoded = decode_image(
            data,
            mode=model.mode,
            size=model.size,
            max_pixels=limits.max_pixels,
            resize=model.resize,
            preview_size=model.preview_size,
        )
    except DecodeError as error:
        item.error = (error.kind, str(error))
    except Exception as error:  # a decoder bug must not fail the batch
        item.error = ("DecodeError", f"{type(error).__name__}: {error}")
    item.decode_seconds = time.perf_counter() - start


Write = tuple[str, bytes, str]  # an output's key, bytes and content type


class Uploads(NamedTuple):
    """An item's writes in the order they are sent, and which of them is its JSON result."""

    writes: list[Write]
    result_key: str | None  # None when the job writes no per-item outputs


def prepare_upload(message: BatchMessage, item: ItemState) -> Uploads:
    """The item's writes: its files (masks, annotated images), then its JSON result.

    Made on the batch's own thread, in a CPU section with no request in flight, so the
    I/O threads only send them (:mod:`worker.pipeline`); the result gains each file's key.
    """
    start = time.perf_counter()
    result = dict(item.result or {})
    writes: list[Write] = []
    result_key = None
    for file in item.files:
        key = item_output_key(message.input, message.output, item.key, file.suffix)
        writes.append((key, file.data, file.content_type))
        if file.field:
            result[file.field] = key
    item.result = result
    if message.item_outputs:
        result_key = item_output_key(message.input, message.output, item.key, ".json")
        body = {"key": item.key, "model": message.model, "task": message.task, **result}
        writes.append((result_key, json.dumps(body).encode(), "application/json"))
    item.result_seconds += time.perf_counter() - start
    return Uploads(writes, result_key)


def upload(store: S3Store, message: BatchMessage, item: ItemState, uploads: Uploads) -> None:
    """Send the item's :func:`prepare_upload` writes in order (an I/O thread's only work)."""
    start = time.perf_counter()
    bucket = message.output.bucket
    try:
        for key, data, content_type in uploads.writes:
            store.put_bytes(bucket, key, data, content_type)
        if uploads.result_key is not None:
            item.output = f"s3://{bucket}/{uploads.result_key}"
    except StorageUnavailable:
        raise
    except StorageError as error:
        item.error, item.result = ("UploadError", str(error)), None
    item.upload_seconds = time.perf_counter() - start


def _post_process(model: ServedModel, item: ItemState, output: Any) -> None:
    """The item's result and files from its raw output."""
    try:
        produced = model.result(output, item.decoded)
        decoded = item.decoded
        # The original's size as displayed (EXIF orientation applied): boxes and masks are in it.
        size = [decoded.original_width, decoded.original_height] if decoded is not None else None
        item.result = {**produced.result, "image_size": size} if size else produced.result
        item.files = list(produced.files)
    except Exception as error:
        item.error = ("PostprocessError", f"{type(error).__name__}: {error}")


def make_result(
    model: ServedModel,
    shadow: ShadowRun | None,
    item: ItemState,
    output: Any,
    candidate: Any,
) -> None:
    """The item's result from its forward pass output; then its pixels are let go.

    A ``shadow`` candidate's output is compared once CURRENT's result is made (nothing of
    the candidate's is kept on the item).
    """
    started = time.perf_counter()
    _post_process(model, item, output)
    if shadow is not None and candidate is not None and item.result is not None:
        shadow.compare(model.task, ItemResult(item.result, item.files), candidate, item.decoded)
    item.decoded = None
    item.result_seconds = time.perf_counter() - started


def needs_upload(message: BatchMessage, item: ItemState) -> bool:
    """Whether the item has anything to write: its JSON result or files of its own."""
    return item.result is not None and (message.item_outputs or bool(item.files))


def on_threads(pool: Executor, threads: int, steps: Sequence[Callable[[], None]]) -> None:
    """Run ``steps`` in ``threads`` slices: the first here, the rest on ``pool``.

    A child with one CPU thread (``threads`` 1) runs them all here, with no hand-off at all.
    """
    size = -(-len(steps) // max(1, threads)) or 1
    slices = [steps[start : start + size] for start in range(0, len(steps), size)]

    def run(part: Sequence[Callable[[], None]]) -> None:
        for step in part:
            step()

    helpers = [pool.submit(run, part) for part in slices[1:]]
    try:
        if slices:
            run(slices[0])
    finally:
        wait(helpers)
    for helper in helpers:
        helper.result()
