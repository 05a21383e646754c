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
    prepare_upload,
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

    A wave is ``model.forward_batch`` items (at least ``MIN_WAVE``). Each turn has a CPU
    section with none of the batch's requests in flight (the last wave's results, then this
    wave's decoding), then an I/O section: the last wave's uploads and the next wave's
    downloads start together and run beside this wave's forward pass, which leaves the GIL
    to them. Python work beside requests in flight costs about three times the CPU (every
    completion takes the GIL from it: ``make bench``'s feed). The last wave's results are
    made after the loop and its uploads left in flight in ``pending.writes``; on an error
    all is waited for. ``should_stop()`` before a forward pass stops the stream: the items
    not through are left, those past their pass still get their results.
    """
    message, items = pending.message, pending.items
    forward_batch = max(1, model.forward_batch)
    size = max(forward_batch, MIN_WAVE)
    waves = [items[start : start + size] for start in range(0, len(items), size)]
    step = _Steps(pending, model, store, pool, cpu_threads)

    def download(wave: list[ItemState]) -> list[Future[bytes | None]]:
        fetches = [pool.submit(fetch, store, message.input.bucket, item, limits) for item in wave]
        pending.in_flight.extend(fetches)
        return fetches

    fetches = download(waves[0]) if waves else []
    ready: list[ItemState] = []
    try:
        for index, wave in enumerate(waves):
            fetched = [future.result() for future in fetches]
            made = step.results()
            decodes = zip(wave, fetched, strict=True)
            on_threads(pool, cpu_threads, [partial(decode, *got, model, limits) for got in decodes])
            for item in wave:
                item.ran = item.decoded is None  # an error: it went as far as it could
            step.start_uploads(made)
            last = index + 1 == len(waves)
            fetches = [] if last else download(waves[index + 1])
            ready.extend(item for item in wave if item.decoded is not None)
            while ready and (len(ready) >= forward_batch or last):
                if should_stop():
                    pending.stopped = True
                    for waiting in fetches:
                        waiting.cancel()  # not started yet: never downloaded
                    break
                group, ready = ready[:forward_batch], ready[forward_batch:]
                step.forward(group)
            if pending.stopped:
                break
        step.start_uploads(step.results())
    except BaseException:
        wait([*pending.in_flight, *pending.writes])
        raise


class _Steps:
    """A batch's forward passes, and its results made a turn later (see :func:`_stream`)."""

    def __init__(
        self, pending: PendingBatch, model: ServedModel, store: S3Store, pool: Executor, cpu: int
    ) -> None:
        self.pending, self.model, self.store, self.pool, self.cpu = pending, model, store, pool, cpu
        self.passed: list[tuple[ItemState, Any, Any]] = []  # (item, output, candidate)
        self.uploads: list[Future[Any]] = []  # started with the current downloads

    def forward(self, group: list[ItemState]) -> None:
        """One forward pass over ``group``; its results wait for the next CPU section."""
        seconds, outputs, candidates = _forward(self.model, group, self.pending.shadow)
        self.pending.infer_seconds += seconds
        for item in group:
            item.ran = True
        if outputs is not None:
            compared = candidates if candidates is not None else [None] * len(group)
            self.passed.extend(zip(group, outputs, compared, strict=True))

    def results(self) -> list[ItemState]:
        """The results of the items past their forward pass (here, or on the CPU share),
        once the uploads started with the downloads just in are through: none in flight."""
        wait(self.uploads)
        model, shadow, passed = self.model, self.pending.shadow, self.passed
        on_threads(self.pool, self.cpu, [partial(make_result, model, shadow, *p) for p in passed])
        self.passed = []
        return [item for item, _, _ in passed]

    def start_uploads(self, made: list[ItemState]) -> None:
        """Hand the uploads of the results ``made`` to the I/O threads (their bodies made here)."""
        message = self.pending.message
        self.uploads = [
            self.pool.submit(upload, self.store, message, item, prepare_upload(message, item))
            for item in made
            if needs_upload(message, item)
        ]
        self.pending.writes.extend(self.uploads)


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
