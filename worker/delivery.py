"""One delivery of a batch: running it, riding out outages, and what it reports.

The plain functions behind the batch task (:mod:`worker.tasks`) and the child's
finisher (:mod:`worker.finishing`): run a message (whole, or one item at a time
after a worker death), ride out an outage around a step or hand the message back,
and turn an outcome into the delivery's :class:`BatchReport`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

from celery.exceptions import Reject

from bucketvision.infra.job_life import cancel_check
from bucketvision.infra.messages import GenerateMessage, JobMessage
from bucketvision.infra.outages import OUTAGE_ERRORS, ride_out
from bucketvision.infra.ownership import BatchStart, Heartbeat
from bucketvision.worker.generation import run_generate_batch
from bucketvision.worker.isolation import IsolationLedger, run_isolated
from bucketvision.worker.outcomes import BatchOutcome, gave_up
from bucketvision.worker.pipeline import BatchArguments, run_batch
from bucketvision.worker.reports import BatchReport
from bucketvision.worker.runtime import WorkerRuntime

log = logging.getLogger("bucketvision.worker")

T = TypeVar("T")


def run_message(runtime: WorkerRuntime, message: JobMessage, attempt: int) -> BatchOutcome:
    """Run the message's batch whole, in this thread: a generation or an inference batch."""
    if isinstance(message, GenerateMessage):
        return run_generate_batch(
            message,
            store=runtime.store,
            load_model=runtime.models.get,
            pool=runtime.pool,
            attempt=attempt,
        )
    return run_batch(message, **batch_arguments(runtime, message, attempt))


def batch_arguments(runtime: WorkerRuntime, message: JobMessage, attempt: int) -> BatchArguments:
    """What :func:`run_batch` and :func:`start_batch` take besides the message."""
    return {
        "store": runtime.store,
        "load_model": runtime.models.get,
        "pool": runtime.pool,
        "limits": runtime.limits,
        "attempt": attempt,
        "should_stop": cancel_check(runtime.jobs.redis, message.job_id),
        "cpu_threads": runtime.cpu_threads,
    }


def ran_report(report: BatchReport, outcome: BatchOutcome, recorded: bool) -> BatchReport:
    """The report of a delivery that ran its batch (``recorded``: and recorded it)."""
    return replace(
        report,
        recorded=recorded,
        items=len(outcome.lines),
        counts=outcome.counts(),
        stage_seconds=outcome.stage_seconds,
        dead_lettered_items=outcome.dead_lettered(),
    )


def ended(report: BatchReport, summary: dict[str, Any] | None) -> BatchReport:
    """The report of a delivery that finalised its job (``summary``), for the metrics hook."""
    if summary is None:
        return report
    psi = (summary.get("confidence") or {}).get("psi")
    wall = summary.get("wall_seconds")
    seconds = float(wall) if isinstance(wall, int | float) else None
    return replace(
        report, job_finished=str(summary["state"]), confidence_psi=psi, job_seconds=seconds
    )


def run_delivery(
    runtime: WorkerRuntime, message: JobMessage, start: BatchStart, where: str, lease: Heartbeat
) -> tuple[BatchOutcome, IsolationLedger | None]:
    """This delivery's outcome: whole, or one item at a time after a worker death.

    A delivery that took the batch over from a dead owner charges that death to the
    item then in flight, if it ran one at a time.
    """
    within = runtime.settings.outage_seconds
    ledger = None
    if start.worker_deaths:
        ledger = IsolationLedger(runtime.jobs.redis, message.job_id, message.batch)
        if start.death:
            ride_out_or_requeue(ledger.charge_death, where, within, lease)

    def run() -> BatchOutcome:
        if ledger is None:
            return run_message(runtime, message, start.attempt)
        log.warning(
            "%s: its worker died %d times; running it one item at a time",
            where,
            start.worker_deaths,
        )
        return run_isolated(
            message,
            attempt=start.attempt,
            deaths=start.worker_deaths,
            max_attempts=runtime.settings.max_attempts,
            ledger=ledger,
            run_one=lambda part: run_message(runtime, part, start.attempt),
        )

    try:
        return ride_out(run, where, within_seconds=within), ledger
    except OUTAGE_ERRORS as error:
        return gave_up(message, start.attempt, error, within), ledger


def ride_out_or_requeue(
    call: Callable[[], T], where: str, within: float, lease: Heartbeat | None = None
) -> T:
    """``call`` through an outage; past the bound, hand the message back unacknowledged.

    The batch's ``lease`` is released first, so its redelivery is not taken for a death.
    """
    try:
        return ride_out(call, where, within_seconds=within)
    except OUTAGE_ERRORS as error:
        if lease is not None:
            lease.hand_back()
        raise Reject(f"{where}: Redis unavailable ({error})", requeue=True) from error
