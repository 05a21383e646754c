"""``bucketvision watch``: the drop folder. Every object that lands is processed once.

A cycle finds what is new: with ``--events`` (:mod:`producer.watch_events`) what they
announce; without, a listing of the whole prefix while it holds at most
``full_listing_max`` objects, else from the cursor. A full listing every
``rescan_seconds`` reconciles and prunes. Each object version is claimed in Redis as a
lease (:mod:`producer.watch_claims`), renewed while its job is enqueued and fenced right
before sending, so one cut off past its lease leaves them to whoever took them over; the
cursor moves, and events are acknowledged, only after that. Writes an outage interrupted
are applied first when Redis is back. Above ``max_in_flight`` unfinished items it waits.
With ``move_to``, an input is moved only after its result is recorded (failed ones to
``<move_to>failed/`` with an ``.error.json``); nothing is deleted before its copy exists.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from itertools import islice
from typing import Any

from celery import Celery

from bucketvision.infra.jobs import JobStore
from bucketvision.infra.outages import OUTAGE_ERRORS, Backoff
from bucketvision.infra.s3 import ObjectInfo, S3Store, S3Uri, parse_s3_uri
from bucketvision.infra.settings import DEFAULT_MODELS
from bucketvision.infra.vocabulary import FINAL_STATES
from bucketvision.models.registry import ModelRegistry
from bucketvision.models.shadow import claim_slot
from bucketvision.producer.health import touch_heartbeat
from bucketvision.producer.submit import (
    SubmitError,
    check_target,
    enqueue_job,
    new_job_id,
    review_for,
    select_keys,
)
from bucketvision.producer.watch_claims import Claims
from bucketvision.producer.watch_events import EventSource, acknowledge, current_versions
from bucketvision.producer.watch_moves import move_job_inputs
from bucketvision.producer.watch_state import ABANDONED, WatchRequest, WatchState, holds_its_objects

LISTING_PAGE = 1000  # keys claimed at a time while a listing goes on (S3's own page)


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
        events: EventSource | None = None,
    ) -> None:
        if request.interval <= 0:
            raise SubmitError("--interval must be above 0 seconds")
        self.input, self.output = check_target(store, request.task, request.input, request.output)
        self.move_to = parse_s3_uri(request.move_to) if request.move_to else None
        self.request = request
        self.app, self.store, self.jobs, self.registry = app, store, jobs, registry
        self.claims = Claims(jobs.redis, self.input)
        self.report, self.announce = report, announce  # announce: each job sent (--json)
        self.events = events  # bucket events (--events); listings then only reconcile
        self.state = WatchState()
        self.stopping = threading.Event()
        registry.resolve(self._model_name(), task=request.task)  # fail now, not per cycle

    def _model_name(self) -> str:
        return self.request.model or DEFAULT_MODELS[self.request.task]

    def _excluded(self) -> list[S3Uri]:
        return [uri for uri in (self.output, self.move_to) if uri is not None]

    def _selected(self, objects: Iterable[ObjectInfo]) -> list[ObjectInfo]:
        """The images under the prefix that the filters keep, outside the output and move-to."""
        prefix = self.input.prefix
        by_key = {info.key: info for info in objects if info.key.startswith(prefix)}
        request = self.request
        keys = set(select_keys(by_key, self.input, None, request.includes, request.excludes))
        for excluded in self._excluded():
            if excluded.bucket == self.input.bucket and excluded.prefix:
                keys = {key for key in keys if not key.startswith(excluded.prefix)}
        return [info for key, info in by_key.items() if key in keys]

    def _pages(self, whole: bool, prune: bool) -> Iterator[tuple[list[ObjectInfo], str]]:
        """The listing (the whole prefix, or after the cursor) a page at a time with its last
        key: a page is enqueued before the next is listed. ``prune`` (a rescan, read to its
        end): the claims of keys that are gone are dropped too (:meth:`Claims.prune`)."""
        start_after = None if whole else self.claims.cursor()
        found: set[str] = set()
        count = 0
        listing = iter(self.store.list_objects(self.input, start_after=start_after))
        while page := list(islice(listing, LISTING_PAGE)):
            count += len(page)
            found.update(info.key for info in page if prune)
            yield page, page[-1].key
        if whole:
            self.state.prefix_size = count
        if prune:
            with contextlib.suppress(*OUTAGE_ERRORS):  # housekeeping: the next rescan prunes
                self.claims.prune(found)

    def in_flight(self) -> int:
        """Items of this watcher's jobs that are not done yet."""
        records = [self.jobs.get(job_id) for job_id in self.state.jobs]
        unfinished = [record for record in records if record["state"] not in FINAL_STATES]
        return sum(int(r["total"]) - int(r["ok"]) - int(r["error"]) for r in unfinished)

    def cycle(self, *, full: bool = False) -> str | None:
        """Claim and enqueue what is new once (see the module docstring); the last job sent."""
        self._apply_unsettled()
        self.settle()
        if self._throttled():
            return None
        now = time.monotonic()
        rescan = full or now - self.state.last_rescan >= self.request.rescan_seconds
        if rescan:
            self.state.last_rescan = now
        self.state.cycles += 1
        whole = rescan or (self.state.prefix_size or 0) <= self.request.full_listing_max
        if self.events is not None and not self.request.once:
            job_id = self._take_events(self.events)
            if not rescan:
                return job_id
        job_id = None
        for page, last_key in self._pages(whole, prune=rescan):
            claimed = self._claim(self._selected(page))
            if self.events is not None:
                self.state.events.reconciled += len(claimed)
            job_id = (self._enqueue(claimed) if claimed else None) or job_id
            self._settle_later(partial(self.claims.advance, last_key))  # all before it is sent
            if claimed and self._throttled():  # the rest of the listing waits: list it again
                self.state.last_rescan = 0.0 if rescan else self.state.last_rescan
                break
        return job_id

    def _throttled(self) -> bool:
        """Above ``max_in_flight`` unfinished items (or Redis away): enqueue nothing more now."""
        try:
            pending = self.in_flight()
        except OUTAGE_ERRORS:
            return True  # mid-listing: stop; the next cycle waits for Redis
        self.state.throttled = pending >= self.request.max_in_flight
        if self.state.throttled:
            self.report(f"waiting: {pending} items in flight (--max-in-flight)")
        return self.state.throttled

    def _take_events(self, source: EventSource) -> str | None:
        """Claim and enqueue what the events announce; acknowledge them once that is done."""
        until_rescan = self.state.last_rescan + self.request.rescan_seconds - time.monotonic()
        received = source.receive(max(0.05, min(self.request.interval, until_rescan)))
        ours = [e for e in received.events if e.bucket == self.input.bucket]
        wanted = {info.key for info in self._selected(ObjectInfo(e.key, 0, "") for e in ours)}
        announced = [event for event in ours if event.key in wanted]
        fresh = current_versions(self.store, self.claims, announced)
        objects = {event.key: ObjectInfo(event.key, event.size, event.etag) for event in fresh}
        claimed = self._claim(list(objects.values()))
        self.state.events.count(announced, claimed)
        job_id = self._enqueue(claimed) if claimed else None
        if claimed:
            self._throttled()  # the in-flight count with this job in it (and its gauge)
        acknowledge(source, received)
        return job_id

    def _claim(self, objects: list[ObjectInfo]) -> list[ObjectInfo]:
        claimed = self.claims.claim(objects, lambda job_id: holds_its_objects(self.jobs, job_id))
        for job_id in self.claims.adopted:  # a dead watcher's job: move its inputs for it
            self.report(f"{job_id}: confirmed the claims of a watcher that stopped")
            if self.move_to is not None and job_id not in self.state.jobs:
                self.state.jobs.append(job_id)
        self.claims.adopted.clear()
        return claimed

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
                where = (self.input, self.output, self.move_to)
                self.claims.forget(move_job_inputs(self.store, where, job_id, self.report))
            self.state.jobs.remove(job_id)

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
            if self.events is None or self.state.throttled:
                waited = time.monotonic() - began  # events: receiving waited already
                self.stopping.wait(max(0.0, self.request.interval - waited))
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
