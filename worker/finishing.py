"""Finishing a batch behind its task, so a pool child never idles at a batch boundary.

With ``task_acks_late`` a prefork child receives its next message only once its
task returns. A task that returned only after its record kept the child waiting on
S3 and Redis at every batch boundary: its last group's uploads, the manifest part,
the record, the next batch of the plan sent. So, with the lost-batch audit on, the
task returns after its last forward pass and hands the rest to this child's
:class:`Finisher`: a thread that completes the batch, records it and reports it to
the task hooks (:data:`worker.reports.batch_finished`), while the child takes its
next batch and starts that one's downloads.

The batch's message is acknowledged by then; what guards the batch is its owner
lease, which its heartbeat renews until the batch is recorded. Should the child
die first, the lease expires and the lost-batch audit (:mod:`infra.batches`) sends
the batch again, a delivery that takes it over from its dead owner. One batch at
most is finishing per child: handing over the next waits for the one before. A
child's exit (warm shutdown, ``max_tasks_per_child``) waits for it too
(:func:`drain_finisher`, on ``worker_process_shutdown``).
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

from bucketvision.infra.messages import GenerateMessage, JobMessage
from bucketvision.infra.outages import OUTAGE_ERRORS, ride_out
from bucketvision.infra.ownership import BatchStart, Heartbeat
from bucketvision.worker.delivery import batch_arguments, ended, ran_report, run_delivery
from bucketvision.worker.outcomes import gave_up
from bucketvision.worker.pipeline import PendingBatch, start_batch
from bucketvision.worker.recording import record_outcome
from bucketvision.worker.reports import BatchReport, batch_finished
from bucketvision.worker.runtime import WorkerRuntime

log = logging.getLogger("bucketvision.worker")

DRAIN_SECONDS = 600.0  # a child's exit waits this long at most for its finishing batch


class Finisher:
    """Runs one piece of finishing work at a time in a thread of this process."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def hand_over(self, work: Callable[[], None], name: str) -> None:
        """Run ``work`` in a new thread once the one before has ended; returns at once after.

        The thread runs in a copy of the caller's context, so its log lines carry the
        batch's job, batch and task.
        """
        with self._lock:
            self.wait()
            context = contextvars.copy_context()
            thread = threading.Thread(
                target=context.run, args=(self._guarded, work, name), name=name, daemon=True
            )
            self._thread = thread
            thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the work in flight; False if it is still running after ``timeout``."""
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    @staticmethod
    def _guarded(work: Callable[[], None], name: str) -> None:
        try:
            work()
        except BaseException:  # the work guards its batch itself; a bug must still be heard
            log.exception("%s failed", name)


_finisher: Finisher | None = None
_finisher_pid = 0
_finisher_lock = threading.Lock()


def get_finisher() -> Finisher:
    """This process's finisher (a forked child gets its own)."""
    global _finisher, _finisher_pid
    with _finisher_lock:
        if _finisher is None or _finisher_pid != os.getpid():
            _finisher, _finisher_pid = Finisher(), os.getpid()
        return _finisher


def drain_finisher(**_: object) -> None:
    """``worker_process_shutdown``: the child's finishing batch is recorded before it exits."""
    if _finisher is None or _finisher_pid != os.getpid():
        return
    if not _finisher.wait(DRAIN_SECONDS):
        log.error(
            "a batch was still finishing after %.0f s as this process exits; the lost-batch"
            " audit sends it again once its owner lease expires",
            DRAIN_SECONDS,
        )


def may_finish_behind(runtime: WorkerRuntime, message: JobMessage, start: BatchStart) -> bool:
    """A plain first run of an inference batch, with the lost-batch audit on to guard it."""
    plain = not isinstance(message, GenerateMessage) and not start.worker_deaths
    return plain and runtime.settings.lost_batch_seconds > 0


@dataclass(frozen=True)
class Delivery:
    """One delivery of a batch that owns it: what the task and its finisher share."""

    runtime: WorkerRuntime
    message: JobMessage
    start: BatchStart
    where: str  # "batch B of job J", for log lines
    lease: Heartbeat
    report: BatchReport


def hand_over_batch(delivery: Delivery) -> BatchReport:
    """Run the batch to its last forward pass; the child's finisher does the rest."""
    message, attempt = delivery.message, delivery.start.attempt
    within = delivery.runtime.settings.outage_seconds
    arguments = batch_arguments(delivery.runtime, message, attempt)
    started = time.perf_counter()
    try:
        pending = ride_out(
            lambda: start_batch(message, **arguments), delivery.where, within_seconds=within
        )
    except OUTAGE_ERRORS as error:
        outcome = gave_up(message, attempt, error, within)
        pending = PendingBatch(message, [], attempt, started, outcome=outcome)
    except BaseException:
        delivery.lease.hand_back()
        raise
    finish = partial(_finish_behind, delivery, pending)
    get_finisher().hand_over(finish, f"bv-finish-{message.job_id}:{message.batch}")
    return replace(delivery.report, finishing=True)


def _finish_behind(delivery: Delivery, pending: PendingBatch) -> None:
    """In the finisher: complete the batch, record it and report it.

    An outage is ridden out as in the task: S3 gone mid-upload runs the batch again
    whole. Past the bound, or on a bug, the lease is left to expire: the lost-batch
    audit then sends the batch again, for a delivery that takes it over.
    """
    runtime, message, where, lease = (
        delivery.runtime,
        delivery.message,
        delivery.where,
        delivery.lease,
    )
    within = runtime.settings.outage_seconds
    try:
        try:
            outcome = pending.complete()
        except OUTAGE_ERRORS:
            outcome, _ = run_delivery(runtime, message, delivery.start, where, lease)
        first_time, finished = ride_out(
            lambda: record_outcome(runtime, message, outcome, None, lease),
            where,
            within_seconds=within,
        )
    except BaseException as error:
        log.error(
            "%s not recorded (%s: %s); the lost-batch audit sends it again once its owner"
            " lease expires",
            where,
            type(error).__name__,
            error,
        )
        batch_finished.send(sender=None, report=delivery.report)
        return
    finally:
        lease.stop()
    final = ended(ran_report(delivery.report, outcome, first_time), finished)
    log.info("%s recorded behind its task: %s", where, final.counts if first_time else "again")
    batch_finished.send(sender=None, report=final)
