"""One batch of an inference job: download, decode, infer, upload, manifest.

The Celery task only parses the message and calls :func:`run_batch`. A bad image never fails
its batch: it becomes an ``error`` line with the reason, as does a key with no output key of its
own (``UnmappableKey``, infra/outputs.py; never downloaded). S3 being unavailable says nothing
about an image: :class:`StorageUnavailable` is raised for the task to retry the batch whole.
A batch whose job is cancelled stops before its next forward pass: only items that ran get a line.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, as_completed, wait
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from bucketvision.infra.messages import BatchMessage
from bucketvision.infra.outputs import item_output_key, manifest_line, mapping_error
from bucketvision.infra.s3 import S3Store, StorageError, StorageUnavailable
from bucketvision.models.decoding import DecodedImage, DecodeError, decode_image
from bucketvision.models.family import ItemFile, ItemResult, ServedModel
from bucketvision.worker.outcomes import BatchOutcome, all_failed
from bucketvision.worker.shadow import ShadowRun, load_shadow


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


def _fetch_and_decode(
    store: S3Store, bucket: str, item: ItemState, model: ServedModel, limits: Limits
) -> ItemState:
    if item.error is not None:
        return item
    start = time.perf_counter()
    try:
        data = store.get_bytes(bucket, item.key, max_bytes=limits.max_bytes)
    except StorageUnavailable:
        raise
    except StorageError as error:
        item.error = (type(error).__name__, str(error))
        item.download_seconds = time.perf_counter() - start
        return item
    decoded_at = time.perf_counter()
    item.download_seconds = decoded_at - start
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
    item.decode_seconds = time.perf_counter() - decoded_at
    return item


def _upload_result(store: S3Store, message: BatchMessage, item: ItemState) -> ItemState:
    """Write the item's files (masks, annotated images), then its JSON result."""
    start = time.perf_counter()
    bucket = message.output.bucket
    result = dict(item.result or {})
    try:
        for file in item.files:
            key = item_output_key(message.input, message.output, item.key, file.suffix)
            store.put_bytes(bucket, key, file.data, file.content_type)
            if file.field:
                result[file.field] = key
        item.result = result
        if message.item_outputs:
            key = item_output_key(message.input, message.output, item.key, ".json")
            body = {"key": item.key, "model": message.model, "task": message.task, **result}
            store.put_bytes(bucket, key, json.dumps(body).encode(), "application/json")
            item.output = f"s3://{bucket}/{key}"
    except StorageUnavailable:
        raise
    except StorageError as error:
        item.error, item.result = ("UploadError", str(error)), None
    item.upload_seconds = time.perf_counter() - start
    return item


def _post_process(model: ServedModel, item: ItemState, output: Any) -> None:
    """The item's result and files from its raw output (encoding PNGs runs in threads)."""
    try:
        produced = model.result(output, item.decoded)
        decoded = item.decoded
        # The original's size as displayed (EXIF orientation applied): boxes and masks are in it.
        size = [decoded.original_width, decoded.original_height] if decoded is not None else None
        item.result = {**produced.result, "image_size": size} if size else produced.result
        item.files = list(produced.files)
    except Exception as error:
        item.error = ("PostprocessError", f"{type(error).__name__}: {error}")


def _stream(
    message: BatchMessage,
    items: list[ItemState],
    model: ServedModel,
    *,
    store: S3Store,
    pool: Executor,
    limits: Limits,
    should_stop: Callable[[], bool],
    shadow: ShadowRun | None = None,
) -> tuple[float, bool]:
    """Download, decode, infer and upload ``items`` as a stream; the infer seconds, and stopped?

    Downloads start at once (not for items already failed); the forward pass runs on each group
    of ``model.forward_batch`` decoded items once complete, and each item of that group is then
    finished in one thread task (its result, then its uploads) while the next group downloads,
    so CPU and S3 wait overlap. All is waited for, also on an error.
    ``should_stop()`` before a forward pass stops the stream: the items not through are left.
    """
    bucket = message.input.bucket
    forward_batch = max(1, model.forward_batch)
    fetches = [pool.submit(_fetch_and_decode, store, bucket, item, model, limits) for item in items]
    writes: list[Future[Any]] = []
    finish = partial(_finish, model, shadow, store, message)
    infer_seconds, stopped = 0.0, False
    try:
        ready: list[ItemState] = []
        for index, fetched in enumerate(as_completed(fetches), start=1):
            item = fetched.result()
            item.ran = item.decoded is None  # an error: it went as far as it could
            if item.decoded is not None:
                ready.append(item)
            if ready and (len(ready) == forward_batch or index == len(fetches)):
                if stopped := should_stop():
                    for pending in fetches:
                        pending.cancel()  # not started yet: never downloaded
                    break
                seconds, outputs, candidates = _forward(model, ready, shadow)
                infer_seconds += seconds
                for position, done_item in enumerate(ready):
                    done_item.ran = True
                    if outputs is not None:
                        candidate = candidates[position] if candidates is not None else None
                        writes.append(pool.submit(finish, done_item, outputs[position], candidate))
                ready = []
        for write in writes:
            write.result()
    finally:
        wait([*fetches, *writes])
    infer_seconds += sum(item.result_seconds for item in items)
    return infer_seconds, stopped


Forwarded = tuple[float, Sequence[Any] | None, Sequence[Any] | None]


def _forward(model: ServedModel, group: list[ItemState], shadow: ShadowRun | None) -> Forwarded:
    """One forward pass over ``group`` (and the shadow's): its seconds, CURRENT's outputs
    and the shadow candidate's (None without a shadow), one per item.

    The outputs are None when the pass failed: every item of the group then has the error.
    """
    started = time.perf_counter()
    try:
        pixels = np.stack([item.decoded.pixels for item in group])  # type: ignore[union-attr]
        outputs = model.infer(pixels)
        if len(outputs) != len(group):
            raise ValueError(f"the model returned {len(outputs)} outputs for {len(group)}")
        candidates = shadow.infer(pixels, len(group)) if shadow is not None else None
    except Exception as error:
        for item in group:
            item.error, item.decoded = ("InferenceError", f"{type(error).__name__}: {error}"), None
        return time.perf_counter() - started, None, None
    return time.perf_counter() - started, outputs, candidates


def _finish(
    model: ServedModel,
    shadow: ShadowRun | None,
    store: S3Store,
    message: BatchMessage,
    item: ItemState,
    output: Any,
    candidate: Any,
) -> ItemState:
    """An item after its forward pass, in one thread task: its result, then its uploads.

    A ``shadow`` candidate's output is compared once CURRENT's result is made (nothing of
    the candidate's is kept on the item).
    """
    started = time.perf_counter()
    _post_process(model, item, output)
    if shadow is not None and candidate is not None and item.result is not None:
        shadow.compare(model.task, ItemResult(item.result, item.files), candidate, item.decoded)
    item.decoded = None
    item.result_seconds = time.perf_counter() - started
    if item.result is not None and (message.item_outputs or item.files):
        _upload_result(store, message, item)
    return item


def run_batch(
    message: BatchMessage,
    *,
    store: S3Store,
    load_model: Callable[[str], ServedModel],
    pool: Executor,
    limits: Limits,
    attempt: int,
    should_stop: Callable[[], bool] = lambda: False,
) -> BatchOutcome:
    """Process every key of ``message``; each key that ran yields exactly one manifest line.

    Every key runs unless ``should_stop()`` (its job was cancelled) says true before a
    forward pass; the outcome is then ``stopped``.
    """
    started = time.perf_counter()
    items = [ItemState(key, error=mapping_error(message.input, key)) for key in message.keys]
    try:
        model = load_model(message.model)
    except StorageUnavailable:
        raise
    except Exception as error:
        reason = f"model {message.model} could not be loaded: {error}"
        return all_failed(
            message, message.keys, ("ModelLoadError", reason), attempt, started, reason
        )

    shadow = load_shadow(message.shadow, load_model, model, len(items))
    infer_seconds, stopped = _stream(
        message,
        items,
        model,
        store=store,
        pool=pool,
        limits=limits,
        should_stop=should_stop,
        shadow=shadow,
    )
    latency = (time.perf_counter() - started) * 1000.0
    lines = [
        manifest_line(
            item.key,
            status="ok" if ok else "error",
            output=item.output if ok else None,
            result=item.result if ok else None,
            error=None if ok else (item.error or ("Unknown", "no result")),
            model=message.model,
            latency_ms=latency,
            attempts=attempt,
        )
        for item in items
        if item.ran or not stopped
        for ok in [item.error is None and item.result is not None]
    ]
    return BatchOutcome(
        lines,
        {
            "download": sum(item.download_seconds for item in items),
            "decode": sum(item.decode_seconds for item in items),
            "infer": infer_seconds,
            "upload": sum(item.upload_seconds for item in items),
        },
        stopped=stopped,
        shadow=shadow.tally if shadow is not None else None,
    )
