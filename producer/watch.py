"""``bucketvision watch``: the drop folder. Every object that lands is processed once.

Each cycle lists what is new (from the listing cursor; the whole prefix every
``rescan_seconds`` to catch overwrites and keys that sort before the cursor),
claims each object version in Redis as a lease (:mod:`producer.watch_claims`),
and enqueues what it claimed as one job at once — no waiting for a full batch.
It renews the leases while it enqueues, and enqueues only the objects it still
holds right before sending (a fencing check), so a watcher that stalls keeps
its objects and one cut off past its lease leaves them to whoever took them
over. The cursor moves only after that. When Redis goes away mid-cycle, the
writes that settle the cycle (confirm or release the claims, mark a half-sent
job failed) are kept and applied first when it is back, so an outage delays an
object by the outage, not by the lease.
Above ``max_in_flight`` unfinished items it waits instead of flooding Redis.
With ``move_to``, an input is moved only after its job recorded its result;
failed inputs go to ``<move_to>failed/`` with an ``.error.json`` beside them.
Nothing is ever deleted without its copy written first.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from celery import Celery

from bucketvision.infra.jobs import JobNotFound, JobStore
from bucketvision.infra.outages import OUTAGE_ERRORS, Backoff
from bucketvision.infra.review import ReviewPolicy
from bucketvision.infra.s3 import ObjectInfo, S3Store, S3Uri, parse_s3_uri
from bucketvision.infra.settings import DEFAULT_MODELS
from bucketvision.infra.vocabulary import FINAL_STATES, IMAGE_PATTERNS
from bucketvision.models.registry import ModelRegistry
from bucketvision.models.shadow import claim_slot
from bucketvision.producer.health import touch_heartbeat
from bucketvision.producer.job_start import DEFAULT_WINDOW
from bucketvision.producer.submit import (
    SubmitError,
    check_target,
    enqueue_job,
    new_job_id,
    review_for,
    select_keys,
)
from bucketvision.producer.watch_claims import Claims
from bucketvision.producer.watch_moves import move_job_inputs

log = logging.getLogger("bucketvision.watch")

ABANDONED = "the watcher could not send all its batches; its objects are enqueued again"


@dataclass(frozen=True)
class WatchRequest:
    input: str
    task: str
    output: str
    model: str | None = None
    interval: float = 5.0
    move_to: str | None = None
    once: bool = False
    batch_size: int = 32
    window: int = DEFAULT_WINDOW  # batches of a job on the queue at a time (BV_JOB_WINDOW)
    max_in_flight: int = 5000
    rescan_seconds: float = 60.0
    includes: tuple[str, ...] = IMAGE_PATTERNS  # globs on the key relative to the input
    excludes: tuple[str, ...] = ()
    review: ReviewPolicy | None = None  # --review-below ...; else the card's review_below


@dataclass
class WatchState:
    """What this watcher started and has not settled yet."""

    jobs: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # jobs that ended failed or cancelled
    cycles: int = 0
    enqueued: int = 0
    last_rescan: float = 0.0
    # Writes to Redis that an outage interrupted (confirming or releasing claims,
    # abandoning a half-sent job), applied in order before anything new is claimed.
    unsettled: list[Callable[[], object]] = field(default_factory=list)


class Watcher:
    """One watcher process; several may watch the same prefix."""

    def __init__(
        self,
        request: WatchRequest,
        *,
        app: Celery,
        store: S3Store,
        jobs: JobStore,
        registry: ModelRegistry,
        report: Callable[[str], None] = print,
        announce: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        if request.interval <= 0:
            raise SubmitError("--interval must be above 0 seconds")
        self.input, self.output = check_target(store, request.task, request.input, request.output)
        self.move_to = parse_s3_uri(request.move_to) if request.move_to else None
        self.request = request
        self.app, self.store, self.jobs, self.registry = app, store, jobs, registry
        self.claims = Claims(jobs.redis, self.input)
        self.report, self.announce = report, announce  # announce: each job sent (--json)
        self.state = WatchState()
        self.stopping = threading.Event()
        registry.resolve(self._model_name(), task=request.task)  # fail now, not per cycle

    def _model_name(self) -> str:
        return self.request.model or DEFAULT_MODELS[self.request.task]

    def _excluded(self) -> list[S3Uri]:
        return [uri for uri in (self.output, self.move_to) if uri is not None]

    def _list(self, full: bool) -> tuple[list[ObjectInfo], str | None]:
        """The listed images to claim, and the last key listed (the next cursor)."""
        start_after = None if full else self.claims.cursor()
        listed = list(self.store.list_objects(self.input, start_after=start_after))
        found = (info.key for info in listed)
        request = self.request
        keys = set(select_keys(found, self.input, None, request.includes, request.excludes))
        for excluded in self._excluded():
            if excluded.bucket == self.input.bucket and excluded.prefix:
                keys = {key for key in keys if not key.startswith(excluded.prefix)}
        last_key = listed[-1].key if listed else None
        return [info for info in listed if info.key in keys], last_key

    def in_flight(self) -> int:
        """Items of this watcher's jobs that are not done yet."""
        pending = 0
        for job_id in self.state.jobs:
            record = self.jobs.get(job_id)
            if record["state"] not in FINAL_STATES:
                pending += int(record["total"]) - int(record["ok"]) - int(record["error"])
        return pending

    def cycle(self, *, full: bool = False) -> str | None:
        """List, claim and enqueue once; returns the job id when something was enqueued."""
        self._apply_unsettled()
        self.settle()
        pending = self.in_flight()
        if pending >= self.request.max_in_flight:
            self.report(f"waiting: {pending} items in flight (--max-in-flight)")
            return None
        now = time.monotonic()
        full = full or now - self.state.last_rescan >= self.request.rescan_seconds
        if full:
            self.state.last_rescan = now
        listed, last_key = self._list(full)
        claimed = self.claims.claim(listed, self._enqueued)
        for job_id in self.claims.adopted:  # a dead watcher's job: move its inputs for it
            self.report(f"{job_id}: confirmed the claims of a watcher that stopped")
            if self.move_to is not None and job_id not in self.state.jobs:
                self.state.jobs.append(job_id)
        self.claims.adopted.clear()
        self.state.cycles += 1
        job_id = self._enqueue(claimed) if claimed else None
        if last_key is not None:  # only once what was listed is claimed and enqueued
            self._settle_later(lambda: self.claims.advance(last_key))
        return job_id

    def _enqueued(self, job_id: str) -> bool:
        """Whether ``job_id``, bound to a lapsed claim, holds its objects: its whole plan
        was written (the lost-batch audit sends what was not sent) or it finished, and
        its watcher did not abandon it."""
        try:
            record = self.jobs.get(job_id)
        except JobNotFound:
            return False
        if record["state"] in FINAL_STATES:
            return record.get("failure") != ABANDONED
        return bool(record.get("planned"))

    def _enqueue(self, claimed: list[ObjectInfo]) -> str | None:
        """One job over the claimed objects we still hold; if sending fails, none stays claimed.

        The leases are renewed until the job is sent, and bound to it right before
        (:meth:`Claims.fence`): objects whose lease lapsed and was taken over are not sent.
        """
        job_id = new_job_id()
        held: list[ObjectInfo] = []
        try:
            with self.claims.holding(claimed):
                model = self.registry.resolve(self._model_name(), task=self.request.task)
                held = self.claims.fence(claimed, job_id)
                if not held:
                    self.report(f"{len(claimed)} claims were taken over; nothing to enqueue")
                    return None
                job = enqueue_job(
                    self.app,
                    self.jobs,
                    self.store,
                    self.request.task,
                    [info.key for info in held],
                    self.input,
                    self.output,
                    str(model),
                    batch_size=self.request.batch_size,
                    job_id=job_id,
                    window=self.request.window,
                    review=review_for(self.request.task, self.request.review, model.card),
                    confidence_reference=model.card.get("confidence_histogram"),
                    shadow=claim_slot(self.registry, self.jobs.redis, str(model)),
                )
        except BaseException:
            self._settle_later(lambda: self.jobs.abandon(job_id, ABANDONED))
            self._settle_later(lambda: self.claims.release(claimed))  # only ours change
            raise
        self._settle_later(lambda: self.claims.confirm(held))
        self.state.jobs.append(job.job_id)
        self.state.enqueued += job.total
        self.report(f"{job.job_id}: {job.total} new objects with {job.model}")
        if self.announce is not None:
            self.announce({"job_id": job.job_id, "total": job.total, "model": job.model})
        return job.job_id

    def _settle_later(self, write: Callable[[], object]) -> None:
        """Apply ``write`` now if Redis answers, else before the next cycle claims anything.

        Without this a claim left pending by an outage would hold its object until its
        lease lapses, and would then be settled by the next watcher's look at its job.
        """
        self.state.unsettled.append(write)
        with contextlib.suppress(*OUTAGE_ERRORS):
            self._apply_unsettled()

    def _apply_unsettled(self) -> None:
        while self.state.unsettled:
            self.state.unsettled[0]()
            self.state.unsettled.pop(0)

    def settle(self) -> None:
        """Forget finished jobs; with --move-to, move their inputs first."""
        for job_id in list(self.state.jobs):
            record = self.jobs.get(job_id)
            if record["state"] not in FINAL_STATES:
                continue
            if record["state"] != "finished":
                self.state.failed.append(job_id)
            if self.move_to is not None:
                self._move_inputs(job_id)
            self.state.jobs.remove(job_id)

    def _move_inputs(self, job_id: str) -> None:
        if self.move_to is not None:
            where = (self.input, self.output, self.move_to)
            self.claims.forget(move_job_inputs(self.store, where, job_id, self.report))

    def wait_for_jobs(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.state.jobs and not (deadline and time.monotonic() > deadline):
            self.settle()
            if self.state.jobs:
                time.sleep(0.2)

    def run(self) -> WatchState:
        """Cycle every ``interval`` until stopped (or once, with --once)."""
        if self.request.once:
            self.cycle(full=True)
            self.wait_for_jobs()
            return self.state
        backoff = Backoff()
        while not self.stopping.is_set():
            began = time.monotonic()
            touch_heartbeat()  # alive and looping: what its health check reads
            try:
                self.cycle()
            except OUTAGE_ERRORS as error:
                delay = backoff.next_delay()
                self.report(f"{type(error).__name__}: {error}; retrying in {delay:.0f} s")
                self.stopping.wait(delay)
                continue
            backoff.reset()
            self.stopping.wait(max(0.0, self.request.interval - (time.monotonic() - began)))
        with contextlib.suppress(*OUTAGE_ERRORS):
            self._apply_unsettled()
            self.settle()
        return self.state

    def stop_on_signals(self) -> None:
        """SIGTERM / SIGINT finish the current cycle and stop."""

        def handler(signum: int, _frame: Any) -> None:
            self.report(f"stopping after this cycle ({signal.Signals(signum).name})")
            self.stopping.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
