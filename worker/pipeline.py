"""One batch of an inference job: download, decode, infer, upload, manifest.

The Celery task only parses the message and calls :func:`start_batch`, which returns once the
last forward pass is done; its :meth:`PendingBatch.complete` waits for the items' results and
uploads (:mod:`worker.finishing` does that behind the task; :func:`run_batch` does both in
turn). An item's own steps are in :mod:`worker.item_steps`. A bad image never fails
its batch: it becomes an ``error`` line with the reason, as does a key with no output key of its
own (``UnmappableKey``, infra/outputs.py; never downloaded). S3 being unavailable says nothing
about an image: :class:`StorageUnavailable` is raised for the task to retry the batch whole.
A batch whose job is cancelled stops before its next forward pass: only items that ran get a line.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, as_completed, wait
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NotRequired, TypedDict, Unpack

import numpy as np

from bucketvision.infra.messages import BatchMessage
from bucketvision.infra.outputs import manifest_line, mapping_error
from bucketvision.infra.s3 import S3Store, StorageUnavailable
from bucketvision.models.family import ServedModel
from bucketvision.worker.item_steps import ItemState, Limits, fetch_and_decode, finish_item
from bucketvision.worker.outcomes import BatchOutcome, all_failed
from bucketvision.worker.shadow import ShadowRun, load_shadow


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
) -> None:
    """Download, decode and infer the items as a stream, up to the last forward pass.

    Downloads start at once (not for items already failed); the forward pass runs on each group
    of ``model.forward_batch`` decoded items once complete, and each item of that group is then
    finished in one thread task (its result, then its uploads) while the next group downloads,
    so CPU and S3 wait overlap. Those tasks are left in flight in ``pending.writes``; on an
    error all is waited for. ``should_stop()`` before a forward pass stops the stream: the
    items not through are left.
    """
    message, items, shadow = pending.message, pending.items, pending.shadow
    bucket = message.input.bucket
    forward_batch = max(1, model.forward_batch)
    fetches = [pool.submit(fetch_and_decode, store, bucket, item, model, limits) for item in items]
    pending.in_flight = fetches
    finish = partial(finish_item, model, shadow, store, message)
    try:
        ready: list[ItemState] = []
        for index, fetched in enumerate(as_completed(fetches), start=1):
            item = fetched.result()
            item.ran = item.decoded is None  # an error: it went as far as it could
            if item.decoded is not None:
                ready.append(item)
            if ready and (len(ready) == forward_batch or index == len(fetches)):
                if should_stop():
                    pending.stopped = True
                    for waiting in fetches:
                        waiting.cancel()  # not started yet: never downloaded
                    break
                seconds, outputs, candidates = _forward(model, ready, shadow)
                pending.infer_seconds += seconds
                for position, done_item in enumerate(ready):
                    done_item.ran = True
                    if outputs is not None:
                        candidate = candidates[position] if candidates is not None else None
                        write = pool.submit(finish, done_item, outputs[position], candidate)
                        pending.writes.append(write)
                ready = []
    except BaseException:
        wait([*fetches, *pending.writes])
        raise


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
