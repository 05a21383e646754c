"""Thin Celery tasks: parse the message, call the plain batch function, report.

Retries on infrastructure errors (Redis or S3 unreachable) are task options,
not code in the business functions; at-least-once delivery and the idempotent
job store make a retried or redelivered batch safe.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery import Celery

from infra.jobs import JobNotFound
from infra.outages import OUTAGE_ERRORS
from infra.queue import TASK_NAMES
from worker.finalize import finalize_job
from worker.generation import GenerateMessage, run_generate_batch
from worker.pipeline import BatchMessage, BatchOutcome, dead_letter, gave_up, run_batch
from worker.runtime import WorkerRuntime, get_runtime
from worker.training_task import handle_training

log = logging.getLogger("bucketvision.worker")

INFRASTRUCTURE_ERRORS = OUTAGE_ERRORS
MAX_RETRIES = 12


def finalize_if_complete(runtime: WorkerRuntime, job_id: str) -> None:
    record = runtime.jobs.get(job_id)
    if record["done_batches"] >= record["batches"]:
        finalize_job(runtime.jobs, runtime.store, job_id, runtime.identity)


def _run(
    runtime: WorkerRuntime, message: BatchMessage | GenerateMessage, attempt: int
) -> BatchOutcome:
    if isinstance(message, GenerateMessage):
        return run_generate_batch(
            message,
            store=runtime.store,
            load_model=runtime.models.get,
            pool=runtime.pool,
            attempt=attempt,
        )
    return run_batch(
        message,
        store=runtime.store,
        load_model=runtime.models.get,
        pool=runtime.pool,
        limits=runtime.limits,
        attempt=attempt,
    )


def handle_inference_batch(body: dict[str, Any], *, final_try: bool = False) -> dict[str, Any]:
    """Run one batch of a job (classify, detect, segment or generate) and record it once.

    An outage (S3 or Redis unreachable) is raised for the task to retry the batch
    later; on the ``final_try`` the batch is recorded with every item an error
    instead, so the job still finishes and says what happened.
    """
    runtime = get_runtime()
    message: BatchMessage | GenerateMessage = (
        GenerateMessage.from_json(body)
        if body.get("task") == "generate"
        else BatchMessage.from_json(body)
    )
    try:
        start = runtime.jobs.begin_batch(message.job_id, message.batch)
    except JobNotFound as error:
        log.warning("dropping batch %s of job %s: %s", message.batch, message.job_id, error)
        return {"job_id": message.job_id, "batch": message.batch, "dropped": True}
    attempt = start.attempt
    if start.already_recorded:
        # Redelivered after its results were recorded (e.g. the ack was lost): only make
        # sure the job gets finalised.
        log.info("batch %s of job %s was already recorded", message.batch, message.job_id)
        finalize_if_complete(runtime, message.job_id)
        return {"job_id": message.job_id, "batch": message.batch, "recorded": False}
    if start.worker_deaths >= runtime.settings.max_attempts:
        outcome = dead_letter(message, attempt, start.worker_deaths, runtime.settings.max_attempts)
    else:
        try:
            outcome = _run(runtime, message, attempt)
        except INFRASTRUCTURE_ERRORS as error:
            if not final_try:
                _release(runtime, message)
                log.warning(
                    "batch %s of job %s: %s; retrying", message.batch, message.job_id, error
                )
                raise
            outcome = gave_up(message, attempt, error)
    record = runtime.jobs.record_batch(
        message.job_id, message.batch, outcome.lines, outcome.stage_seconds, outcome.failure
    )
    if record.job_complete:
        finalize_job(runtime.jobs, runtime.store, message.job_id, runtime.identity)
    return {"job_id": message.job_id, "batch": message.batch, "recorded": record.first_time}


def _release(runtime: WorkerRuntime, message: BatchMessage | GenerateMessage) -> None:
    """Best effort: an attempt handed back for a retry is not a worker death."""
    try:
        runtime.jobs.release_batch(message.job_id, message.batch)
    except redis.exceptions.RedisError as error:
        log.warning("could not note the retry of batch %s: %s", message.batch, error)


def register_tasks(app: Celery) -> None:
    """Register the worker's tasks on ``app`` under their stable names."""
    options: dict[str, Any] = {
        "autoretry_for": INFRASTRUCTURE_ERRORS,
        "retry_backoff": 2,
        "retry_backoff_max": 60,
        "retry_jitter": True,
        "max_retries": MAX_RETRIES,
    }

    for task in ("classify", "detect", "segment", "generate"):
        app.task(name=TASK_NAMES[task], bind=True, **options)(_inference_task)

    # Training is not retried on infrastructure errors: the run is recorded as failed.
    app.task(name=TASK_NAMES["train"])(_training_task)
    app.task(name=TASK_NAMES["scheduled_train"])(_scheduled_training_task)


def _inference_task(task: Any, message: dict[str, Any]) -> dict[str, Any]:
    return handle_inference_batch(message, final_try=task.request.retries >= task.max_retries)


def _training_task(body: dict[str, Any]) -> dict[str, Any]:
    return handle_training(body)


def _scheduled_training_task(body: dict[str, Any]) -> dict[str, Any]:
    from worker.scheduled import handle_scheduled_train

    return handle_scheduled_train(body)
