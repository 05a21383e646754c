"""Thin Celery tasks: parse the message, call the plain batch function, report.

Outages (Redis or S3 unreachable) are ridden out around the plain functions by
:func:`infra.outages.ride_out`, not inside them; at-least-once delivery and the
idempotent job store make a repeated or redelivered batch safe.

What a task returns says what happened, as a typed report
(:mod:`bucketvision.worker.reports`); the task hooks (:mod:`bucketvision.worker.hooks`)
turn it into metrics.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

from celery import Celery

from bucketvision.infra.jobs import JobNotFound
from bucketvision.infra.messages import JobMessage, parse_job_message
from bucketvision.infra.ownership import LEASE_SECONDS, BatchStart, Heartbeat, owner_token
from bucketvision.infra.vocabulary import BATCH_TASKS, CANCELLING, TASK_NAMES
from bucketvision.worker.delivery import (
    ended,
    ran_report,
    ride_out_or_requeue,
    run_delivery,
)
from bucketvision.worker.finishing import Delivery, hand_over_batch, may_finish_behind
from bucketvision.worker.recording import finalize_if_complete, finalize_now, record_outcome
from bucketvision.worker.reports import BatchReport
from bucketvision.worker.runtime import WorkerRuntime, get_runtime
from bucketvision.worker.training_task import handle_training

log = logging.getLogger("bucketvision.worker")

OWNER_POLL_SECONDS = 0.5  # how often a duplicate delivery looks at the owner's lease


def handle_inference_batch(body: dict[str, Any], *, finish_behind: bool = False) -> BatchReport:
    """Run one batch of a job (classify, detect, segment or generate) and record it once.

    A batch of a job that has ended (failed, finished, cancelled) is skipped: acked
    with no work and nothing recorded. A batch found recorded already only makes
    sure its job is finalised (the lost-batch audit sends one again for that when
    a job's finaliser died).

    An outage (S3 or Redis unreachable) is ridden out in process for
    ``BV_OUTAGE_SECONDS``. If S3 stays down, the batch is recorded with every item
    an error saying so, and the job still finishes. If Redis stays down, nothing
    can be recorded: the message is handed back unacknowledged, to come back after
    the broker's visibility timeout.

    ``finish_behind`` (the Celery task's way): the batch is run to its last forward
    pass here and completed, recorded and reported by the child's finisher
    (:mod:`worker.finishing`), where the lost-batch audit is on to guard it.
    """
    runtime = get_runtime()
    message = parse_job_message(body)
    where = f"batch {message.batch} of job {message.job_id}"
    report = BatchReport(message.job_id, message.batch, message.task, message.model)
    within = runtime.settings.outage_seconds
    owner = owner_token(runtime.identity)
    lease = Heartbeat(runtime.jobs.leases, message.job_id, message.batch, owner)
    try:
        start = _begin(runtime, message, owner, where, lease)
    except JobNotFound as error:
        log.warning("dropping %s: %s", where, error)
        return replace(report, dropped=True)
    if start.job_ended:
        # Failed (abandoned), finished, cancelled or cancelling: its batches do no more work;
        # a cancelling job is finalised by the first delivery that finds none of it running.
        log.info("skipping %s: the job is %s", where, start.job_state)
        finished = None
        if start.job_state == CANCELLING:
            job_id = message.job_id
            finished = ride_out_or_requeue(lambda: finalize_now(runtime, job_id), where, within)
        return ended(replace(report, dropped=True), finished)
    if start.owned_elsewhere:
        # A live worker runs it (its lease was renewed): it records the batch.
        log.info("%s is run by a live worker; this delivery stands down", where)
        return replace(report, dropped=True)
    report = replace(report, attempt=start.attempt)
    if start.already_recorded:
        # Redelivered after its results were recorded (e.g. the ack was lost): only make
        # sure the job gets finalised.
        log.info("%s was already recorded", where)
        finished = ride_out_or_requeue(
            lambda: finalize_if_complete(runtime, message.job_id), where, within
        )
        return ended(report, finished)
    lease.start()
    if finish_behind and may_finish_behind(runtime, message, start):
        return hand_over_batch(Delivery(runtime, message, start, where, lease, report))
    try:
        outcome, ledger = run_delivery(runtime, message, start, where, lease)

        first_time, finished = ride_out_or_requeue(
            lambda: record_outcome(runtime, message, outcome, ledger, lease), where, within, lease
        )
    except BaseException:
        lease.hand_back()  # this process lives on: its batch's next delivery is no death
        raise
    finally:
        lease.stop()
    return ended(ran_report(report, outcome, first_time), finished)


def _begin(
    runtime: WorkerRuntime, message: JobMessage, owner: str, where: str, lease: Heartbeat
) -> BatchStart:
    """Take the batch, or find it owned by a live worker (:mod:`infra.ownership`).

    A delivery that finds another owner watches its lease: renewed, the owner is
    alive and this delivery stands down; expired, the owner died and this delivery
    takes the batch over (one death). It waits at most a lease and a little more.
    """
    within = runtime.settings.outage_seconds

    def begin() -> BatchStart:
        return runtime.jobs.begin_batch(message.job_id, message.batch, owner=owner)

    start = ride_out_or_requeue(begin, where, within, lease)
    seen = start.owner_expiry_ms
    deadline = time.monotonic() + LEASE_SECONDS + 2 * OWNER_POLL_SECONDS
    while start.owned_elsewhere and start.owner_expiry_ms == seen:
        if time.monotonic() > deadline:
            break
        time.sleep(OWNER_POLL_SECONDS)
        start = ride_out_or_requeue(begin, where, within, lease)
    return start


def register_tasks(app: Celery) -> None:
    """Register the worker's tasks on ``app`` under their stable names."""
    for task in BATCH_TASKS:
        app.task(name=TASK_NAMES[task])(_inference_task)

    # Training is not retried on infrastructure errors: the run is recorded as failed.
    app.task(name=TASK_NAMES["train"])(_training_task)
    app.task(name=TASK_NAMES["scheduled_train"])(_scheduled_training_task)


def _inference_task(message: dict[str, Any]) -> dict[str, Any]:
    return handle_inference_batch(message, finish_behind=True).to_json()


def _training_task(body: dict[str, Any]) -> dict[str, Any]:
    return handle_training(body).to_json()


def _scheduled_training_task(body: dict[str, Any]) -> dict[str, Any]:
    from bucketvision.worker.scheduled import handle_scheduled_train

    return handle_scheduled_train(body).to_json()
