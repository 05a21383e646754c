"""Recording a batch: its manifest part, its counts, the plan's next batch, the job's end.

What a delivery does once its batch ran, in this order: the part goes to S3
first (:mod:`worker.manifest_parts`), so a recorded batch always has one; the
record in Redis counts it once and hands back the next batch of the plan to
send (the feeding window, :mod:`infra.job_plans`); the delivery that records
the last batch finalises the job (:mod:`worker.finalize`).
"""

from __future__ import annotations

import logging
from typing import Any

from bucketvision.infra.batches import send_from_plan
from bucketvision.infra.messages import JobMessage
from bucketvision.infra.outages import OUTAGE_ERRORS
from bucketvision.infra.ownership import Heartbeat
from bucketvision.infra.s3 import StorageError, StorageUnavailable
from bucketvision.infra.vocabulary import CANCELLING
from bucketvision.worker.finalize import finalize_job
from bucketvision.worker.isolation import IsolationLedger
from bucketvision.worker.manifest_parts import write_part
from bucketvision.worker.outcomes import BatchOutcome
from bucketvision.worker.runtime import WorkerRuntime
from bucketvision.worker.shadow import write_shadow_part

log = logging.getLogger("bucketvision.worker")


def finalize_if_complete(runtime: WorkerRuntime, job_id: str) -> dict[str, Any] | None:
    """Finalise the job if all its batches are recorded; its summary if this call did."""
    record = runtime.jobs.get(job_id)
    if record["done_batches"] >= record["batches"]:
        return finalize_now(runtime, job_id)
    return None


def finalize_now(runtime: WorkerRuntime, job_id: str) -> dict[str, Any] | None:
    """Finalise the job now (:func:`worker.finalize.finalize_job`); its summary if this call did."""
    return finalize_job(runtime.jobs, runtime.store, job_id, runtime.identity)


def record_outcome(
    runtime: WorkerRuntime,
    message: JobMessage,
    outcome: BatchOutcome,
    ledger: IsolationLedger | None,
    lease: Heartbeat,
) -> tuple[bool, dict[str, Any] | None]:
    """Write the batch's part, record it, send the plan's next batch, finalise if last."""
    failure = _write_part(runtime, message, outcome)
    recorded = runtime.jobs.record_batch(
        message.job_id, message.batch, outcome.lines, outcome.stage_seconds, failure
    )
    lease.stop()  # recording ended the lease
    if ledger is not None:
        ledger.clear()
    if recorded.next_batch is not None:
        _feed(runtime, message, recorded.next_batch)
    last = recorded.job_complete or recorded.job_state == CANCELLING
    finished = finalize_now(runtime, message.job_id) if last else None
    return recorded.first_time, finished


def _write_part(runtime: WorkerRuntime, message: JobMessage, outcome: BatchOutcome) -> str | None:
    """Write the batch's manifest part; the failure to record with the batch.

    An outage is raised (ridden out by the caller). Any other refusal (access
    denied on the output prefix) cannot mend: the batch is recorded with that
    failure, and the job ends ``failed`` saying why.
    """
    try:
        if outcome.shadow is not None:  # before the part: a recorded batch has both
            write_shadow_part(
                runtime.store, message.output, message.job_id, message.batch, outcome.shadow
            )
        write_part(runtime.store, message.output, message.job_id, message.batch, outcome.lines)
    except StorageUnavailable:
        raise
    except StorageError as error:
        reason = f"could not write the manifest part of batch {message.batch}: {error}"
        log.error("job %s: %s", message.job_id, reason)
        return reason
    return outcome.failure


def _feed(runtime: WorkerRuntime, message: JobMessage, batch: int) -> None:
    """Send the job's next batch from its plan (the window moves on by one).

    Should this fail, the lost-batch audit sends it: it was taken from the plan
    (``sent`` counts it) and is neither recorded nor held by the broker.
    """
    try:
        job = (message.job_id, message.output)
        send_from_plan(runtime.sender, runtime.jobs, runtime.store, job, [batch])
    except (*OUTAGE_ERRORS, StorageError) as error:
        log.warning(
            "job %s: batch %d not sent (%s); the lost-batch audit will send it",
            message.job_id,
            batch,
            error,
        )
