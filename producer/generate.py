"""Submitting a generate job: N samples from a pinned generator, in batches.

Items get consecutive seeds from ``--seed`` (random when not given), so a job
can be reproduced exactly; a class-conditional generator gets its classes in
turn (or only ``--label``).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from celery import Celery

from bucketvision.infra.jobs import JobStore
from bucketvision.infra.messages import GenerateItem, GenerateMessage
from bucketvision.infra.s3 import S3Store, parse_s3_uri
from bucketvision.infra.settings import DEFAULT_MODELS
from bucketvision.models.registry import ModelRegistry
from bucketvision.producer.job_start import DEFAULT_WINDOW, JobPlan, SubmittedJob, start_job
from bucketvision.producer.submit import SubmitError, check_bucket, chunk, new_job_id

MAX_COUNT = 1_000_000


@dataclass(frozen=True)
class GenerateRequest:
    """``bucketvision generate``: how many images, from which generator, where to."""

    count: int  # images to generate, 1 to MAX_COUNT
    output: str  # s3://BUCKET/PREFIX/: images go to <output>/generated/<job_id>/
    model: str | None = None  # NAME or NAME@VERSION; the default generator when None
    seed: int | None = None  # the first item's seed (item i gets seed + i); random when None
    label: str | None = None  # only this class of a class-conditional generator
    batch_size: int = 32  # items per task message
    window: int = DEFAULT_WINDOW  # batches on the queue at a time (BV_JOB_WINDOW)


def _labels_for(
    count: int, card_labels: list[str], conditional: bool, label: str | None
) -> list[int | None]:
    if not conditional:
        if label is not None:
            raise SubmitError("--label needs a class-conditional generator; this one is not")
        return [None] * count
    if label is None:
        return [index % len(card_labels) for index in range(count)]
    if label not in card_labels:
        raise SubmitError(
            f"--label {label!r} is not one of the model's classes: {', '.join(card_labels)}"
        )
    return [card_labels.index(label)] * count


def submit_generate(
    request: GenerateRequest,
    *,
    app: Celery,
    store: S3Store,
    jobs: JobStore,
    registry: ModelRegistry,
) -> SubmittedJob:
    """Validate, pin the generator, record the job and enqueue its batches."""
    if not 1 <= request.count <= MAX_COUNT:
        raise SubmitError(f"--count must be between 1 and {MAX_COUNT}, not {request.count}")
    output = parse_s3_uri(request.output)
    check_bucket(store, output.bucket)
    model = registry.resolve(request.model or DEFAULT_MODELS["generate"], task="generate")
    conditional = bool(model.card.get("conditional"))
    labels = _labels_for(
        request.count, list(model.card.get("labels") or []), conditional, request.label
    )
    first_seed = request.seed if request.seed is not None else secrets.randbelow(2**31)
    items = [
        GenerateItem(index, first_seed + index, labels[index]) for index in range(request.count)
    ]
    job_id = new_job_id()
    messages = [
        GenerateMessage(job_id, index, output, str(model), tuple(batch))
        for index, batch in enumerate(chunk(items, request.batch_size))
    ]
    job = JobPlan(
        job_id,
        "generate",
        str(model),
        f"seed {first_seed}",
        output,
        request.count,
        request.batch_size,
        window=request.window,
    )
    return start_job(app, jobs, store, job, messages, item_outputs=False)
