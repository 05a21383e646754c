"""One batch of an inference job: download, decode, infer, upload, manifest.

The Celery task only parses the message and calls :func:`start_batch`, which returns once the
last forward pass is done; its :meth:`PendingBatch.complete` waits for the items' uploads
(:mod:`worker.finishing` does that behind the task; :func:`run_batch` does both in turn).
An item's own steps are in :mod:`worker.item_steps`. A bad image never fails
its batch: it becomes an ``error`` line with the reason, as does a key with no output key of its
own (``UnmappableKey``, infra/outputs.py; never downloaded). S3 being unavailable says nothing
about an image: :class:`StorageUnavailable` is raised for the task to retry the batch whole.
A batch whose job is cancelled stops before its next forward pass: only items that ran get a line.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, wait
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NotRequired, TypedDict, Unpack

import numpy as np

from bucketvision.infra.messages import BatchMessage
from bucketvision.infra.outputs import manifest_line, mapping_error
from bucketvision.infra.s3 import S3Store, StorageUnavailable
from bucketvision.models.family import ServedModel
from bucketvision.worker.item_steps import (
    ItemState,
    Limits,
    decode,
    fetch,
    make_result,
    needs_upload,
    on_threads,
    upload,
)
from bucketvision.worker.outcomes import BatchOutcome, all_failed
from bucketvision.worker.shadow import ShadowRun, load_shadow

MIN_WAVE = 8  # items downloaded together at least, whatever the forward batch


@dataclass
class PendingBatch:
    """A batch past its last forward pass, its items' results and uploads still in flight.

    :meth:`complete` waits for them and makes the outcome. Until then the pool child can
    take its next batch and start that one's downloads (:mod:`worker.finishing`).
    """

    message: BatchMessage
    items: list[ItemState]
    attempt: int
    started: float
    infer_seconds: float = 0.0
    stopped: bool = False
    in_flight: list[Future[Any]] = field(default_factory=list)
    writes: list[Future[Any]] = field(default_factory=list)
    shadow: ShadowRun | None = None
    outcome: BatchOutcome | None = None  # made already: nothing was in flight

    def complete(self) -> BatchOutcome:
        """The batch's outcome once every item's result and uploads are through."""
        if self.outcome is not None:
            return self.outcome
        try:
            for write in self.writes:
                write.result()
        finally:
            wait([*self.in_flight, *self.writes])
        self.outcome = _outcome(self)
        return self.outcome


def _stream(
    pending: PendingBatch,
    model: ServedModel,
    *,
    store: S3Store,
    pool: Executor,
    limits: Limits,
    should_stop: Callable[[], bool],
    cpu_threads: int,
) -> None:
    """Download, decode and infer the items in waves, up to the last forward pass.

    A wave is ``model.forward_batch`` items (at least ``MIN_WAVE``). Its downloads run on
    the I/O threads; once all are in, this thread decodes the wave and only then starts the
    next wave's downloads, which go on while the forward pass runs. Decoding beside requests
    in flight costs each image about three times the CPU (every completion takes the GIL
    from the decoder: ``make bench``'s feed), so the CPU steps never share the wave's time
    with its I/O. Results are made here too, and only the uploads go to the I/O threads;
    they are left in flight in ``pending.writes``. On an error all is waited for.
    ``should_stop()`` before a forward pass stops the stream: the items not through are left.
    """
    message, items = pending.message, pending.items
    forward_batch = max(1, model.forward_batch)
    size = max(forward_batch, MIN_WAVE)
    waves = [items[start : start + size] for start in range(0, len(items), size)]

    def download(wave: list[ItemState]) -> list[Future[bytes | None]]:
        fetches = [pool.submit(fetch, store, message.input.bucket, item, limits) for item in wave]
        pending.in_flight.extend(fetches)
        return fetches

    fetches = download(waves[0]) if waves else []
    ready: list[ItemState] = []
    try:
        for index, wave in enumerate(waves):
            decodes = [
                partial(decode, item, fetched.result(), model, limits)
                for item, fetched in zip(wave, fetches, strict=True)
            ]
            on_threads(pool, cpu_threads, decodes)
            for item in wave:
                item.ran = item.decoded is None  # an error: it went as far as it could
            last = index + 1 == len(waves)
            fetches = [] if last else download(waves[index + 1])
            ready.extend(item for item in wave if item.decoded is not None)
            while ready and (len(ready) >= forward_batch or last):
                if should_stop():
                    pending.stopped = True
                    for waiting in fetches:
                        waiting.cancel()  # not started yet: never downloaded
                    return
                group, ready = ready[:forward_batch], ready[forward_batch:]
                _run_group(pending, model, group, store=store, pool=pool, cpu_threads=cpu_threads)
    except BaseException:
        wait([*pending.in_flight, *pending.writes])
        raise


def _run_group(
    pending: PendingBatch,
    model: ServedModel,
    group: list[ItemState],
    *,
    store: S3Store,
    pool: Executor,
    cpu_threads: int,
) -> None:
    """One forward pass over ``group``, its items' results, and their uploads started."""
    seconds, outputs, candidates = _forward(model, group, pending.shadow)
    pending.infer_seconds += seconds
    for item in group:
        item.ran = True
    if outputs is None:
        return
    shadow, message = pending.shadow, pending.message
    compared = candidates if candidates is not None else [None] * len(group)
    results = [
        partial(make_result, model, shadow, item, output, candidate)
        for item, output, candidate in zip(group, outputs, compared, strict=True)
    ]
    on_threads(pool, cpu_threads, results)
    for item in group:
        if needs_upload(message, item):
            pending.writes.append(pool.submit(upload, store, message, item))


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


class BatchArguments(TypedDict):
    """What a batch runs with besides its message (from the worker's runtime)."""

    store: S3Store
    load_model: Callable[[str], ServedModel]
    pool: Executor
    limits: Limits
    attempt: int
    should_stop: NotRequired[Callable[[], bool]]  # its job was cancelled; never, if left out
    cpu_threads: NotRequired[int]  # threads for decoding and results (the child's CPU share); 1


def run_batch(message: BatchMessage, **arguments: Unpack[BatchArguments]) -> BatchOutcome:
    """Process every key of ``message``; each key that ran yields exactly one manifest line.

    Every key runs unless ``should_stop()`` (its job was cancelled) says true before a
    forward pass; the outcome is then ``stopped``.
    """
    return start_batch(message, **arguments).complete()


def start_batch(message: BatchMessage, **arguments: Unpack[BatchArguments]) -> PendingBatch:
    """:func:`run_batch` up to its last forward pass; the rest is the result's ``complete()``."""
    attempt, load_model = arguments["attempt"], arguments["load_model"]
    started = time.perf_counter()
    items = [ItemState(key, error=mapping_error(message.input, key)) for key in message.keys]
    pending = PendingBatch(message, items, attempt, started)
    try:
        model = load_model(message.model)
    except StorageUnavailable:
        raise
    except Exception as error:
        reason = f"model {message.model} could not be loaded: {error}"
        failure = ("ModelLoadError", reason)
        pending.outcome = all_failed(message, message.keys, failure, attempt, started, reason)
        return pending
    pending.shadow = load_shadow(message.shadow, load_model, model, len(items))
    _stream(
        pending,
        model,
        store=arguments["store"],
        pool=arguments["pool"],
        limits=arguments["limits"],
        should_stop=arguments.get("should_stop", lambda: False),
        cpu_threads=arguments.get("cpu_threads", 1),
    )
    return pending


def _outcome(pending: PendingBatch) -> BatchOutcome:
    """The batch's manifest lines (one per item that ran) and stage seconds."""
    message, items, stopped, shadow = (
        pending.message,
        pending.items,
        pending.stopped,
        pending.shadow,
    )
    latency = (time.perf_counter() - pending.started) * 1000.0
    lines = [
        manifest_line(
            item.key,
            status="ok" if ok else "error",
            output=item.output if ok else None,
            result=item.result if ok else None,
            error=None if ok else (item.error or ("Unknown", "no result")),
            model=message.model,
            latency_ms=latency,
            attempts=pending.attempt,
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
            "infer": pending.infer_seconds + sum(item.result_seconds for item in items),
            "upload": sum(item.upload_seconds for item in items),
        },
        stopped=stopped,
        shadow=shadow.tally if shadow is not None else None,
    )
