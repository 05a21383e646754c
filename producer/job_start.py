"""Starting a job: its record, its plan in S3 and the first window of its batches.

Shared by ``submit`` (and ``watch``, ``retry``) and ``generate``: whatever the
messages are, a job starts the same way (:mod:`bucketvision.infra.job_plans`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from celery import Celery

from bucketvision.infra.batches import send_batches
from bucketvision.infra.job_plans import write_plan
from bucketvision.infra.jobs import JOB_TTL_SECONDS, JobStore
from bucketvision.infra.messages import JobMessage
from bucketvision.infra.outages import OUTAGE_ERRORS
from bucketvision.infra.review import ReviewPolicy
from bucketvision.infra.s3 import S3Store, S3Uri
from bucketvision.infra.settings import Settings
from bucketvision.models.shadow import ShadowSlot

DEFAULT_WINDOW = Settings.job_window


@dataclass(frozen=True)
class SubmittedJob:
    job_id: str
    total: int
    batches: int
    model: str
    output: str
    existing: bool = False  # the job id was taken: this is that job, nothing was submitted


def submitted_view(record: dict[str, Any], *, existing: bool = False) -> SubmittedJob:
    """A job record seen as a submission."""
    return SubmittedJob(
        str(record["job_id"]),
        int(record.get("total", 0)),
        int(record.get("batches", 0)),
        str(record.get("model")),
        str(record.get("output")),
        existing,
    )


@dataclass(frozen=True)
class JobPlan:
    """What the job record says of a job before its first batch runs."""

    job_id: str
    task: str
    model: str
    input: str  # the input prefix, or what a generate job starts from ("seed N")
    output: S3Uri
    total: int
    batch_size: int
    retry_of: str | None = None
    window: int = DEFAULT_WINDOW
    review: ReviewPolicy | None = None  # --review-below: items routed to review at the end
    confidence_reference: Sequence[int] | None = None  # the card's histogram: drift
    shadow: ShadowSlot | None = None  # a candidate its batches also run (models.shadow)


def start_job(
    app: Celery,
    jobs: JobStore,
    store: S3Store,
    job: JobPlan,
    messages: Sequence[JobMessage],
    *,
    item_outputs: bool,
) -> SubmittedJob:
    """Record the job (state ``queued``), write its plan, send its first window of batches.

    When a job has this id already (a second ``submit --job-id``), that job comes back.
    A job whose plan could not be written is ended ``failed`` with the reason, and the
    error raised: no job is left waiting for batches nobody will send.
    """
    created = jobs.create(
        job.job_id,
        {
            "task": job.task,
            "model": job.model,
            "input": job.input,
            "output": str(job.output),
            "total": job.total,
            "batches": len(messages),
            "batch_size": job.batch_size,
            "window": job.window,
            "sent": 0,
            "planned": 0,
            "item_outputs": int(item_outputs),
            "retry_of": job.retry_of,
            "review": job.review.to_json() if job.review else None,
            "confidence_reference": (
                json.dumps(list(job.confidence_reference)) if job.confidence_reference else None
            ),
            "shadow": job.shadow.candidate if job.shadow else None,
            "shadow_models": job.shadow.models_uri if job.shadow else None,
        },
    )
    if not created:
        return submitted_view(jobs.get(job.job_id), existing=True)
    first = min(max(1, job.window), len(messages))
    try:
        write_plan(store, jobs.redis, job.job_id, job.output, messages, ttl_seconds=JOB_TTL_SECONDS)
        jobs.mark_planned(job.job_id, first)
    except BaseException as error:
        with contextlib.suppress(*OUTAGE_ERRORS):
            jobs.abandon(job.job_id, f"its plan could not be written: {error}")
        raise
    send_batches(app, messages[:first])
    return SubmittedJob(job.job_id, job.total, len(messages), job.model, str(job.output))
