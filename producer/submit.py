"""Submitting a job: list the input prefix, pin the model, enqueue batches by task name.

The producer never imports TensorFlow or the worker's code; tasks are sent by
their names on the shared Celery app configuration. Each message carries
``enqueued_at`` (Unix seconds) for the worker's queue-wait metric; a worker
ignores fields it does not know, and a message without it is still accepted.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from celery import Celery

from bucketvision.infra.errors import UserError
from bucketvision.infra.jobs import JobStore
from bucketvision.infra.messages import BatchMessage
from bucketvision.infra.review import ReviewPolicy, refuse_review_task
from bucketvision.infra.s3 import S3Store, S3Uri, parse_s3_uri
from bucketvision.infra.settings import DEFAULT_MODELS
from bucketvision.infra.vocabulary import IMAGE_PATTERNS, INFERENCE_TASKS
from bucketvision.models.registry import ModelRegistry, model_filename
from bucketvision.models.shadow import ShadowSlot, claim_slot
from bucketvision.producer.job_start import (
    DEFAULT_WINDOW,
    JobPlan,
    SubmittedJob,
    start_job,
    submitted_view,
)
from bucketvision.producer.key_lists import check_listed_keys, select_keys
from bucketvision.producer.key_lists import matches as matches


class SubmitError(UserError):
    """The job cannot be submitted as asked; the message says what to change."""


@dataclass(frozen=True)
class JobRequest:
    """``bucketvision submit``: a task over the images under an input prefix."""

    task: str
    input: str
    output: str | None = None
    model: str | None = None
    batch_size: int = 32
    includes: Sequence[str] = ()
    item_outputs: bool = True
    excludes: Sequence[str] = ()
    keys: Sequence[str] | None = None  # a key list (--keys-from, retry) instead of a listing
    keys_source: str = "the key list"  # where ``keys`` came from, for messages
    job_id: str | None = None  # chosen by the caller: a second submit of it makes no job
    retry_of: str | None = None  # the job whose error lines these keys are (retry)
    window: int = DEFAULT_WINDOW  # batches on the queue at a time (BV_JOB_WINDOW)
    review: ReviewPolicy | None = None  # --review-below ...; else the card's review_below


@dataclass(frozen=True)
class PlannedJob:
    """What a request would run: the keys (and sizes, when listed), where, with what."""

    keys: list[str]
    input: S3Uri
    output: S3Uri
    model: str
    sizes: dict[str, int] | None = None  # key -> bytes, from the listing
    review: ReviewPolicy | None = None  # with the model's labels
    confidence_reference: list[int] | None = None  # the card's confidence_histogram


def chunk(keys: Sequence[str], size: int) -> list[list[str]]:
    """Split ``keys`` into batches of at most ``size``."""
    if size < 1:
        raise SubmitError(f"--batch-size must be at least 1, not {size}")
    return [list(keys[start : start + size]) for start in range(0, len(keys), size)]


def default_output(input_uri: S3Uri) -> S3Uri:
    """``s3://B/results/<input prefix>`` when no --output is given."""
    return S3Uri(input_uri.bucket, f"results/{input_uri.prefix}")


def new_job_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(4)


def check_target(store: S3Store, task: str, input: str, output: str | None) -> tuple[S3Uri, S3Uri]:
    """The input and output prefixes of an inference job (submit or watch), checked.

    The task must be an inference task, both URIs well formed, the output apart from
    the input (results would mix with inputs), and both buckets visible.
    """
    if task not in INFERENCE_TASKS:
        raise SubmitError(f"--task must be one of {', '.join(INFERENCE_TASKS)}")
    input_uri = parse_s3_uri(input)
    output_uri = parse_s3_uri(output) if output else default_output(input_uri)
    if (output_uri.bucket, output_uri.prefix) == (input_uri.bucket, input_uri.prefix):
        raise SubmitError(
            "--output must differ from --input (results would mix with inputs); "
            "use a sibling prefix such as s3://BUCKET/results/"
        )
    for bucket in sorted({input_uri.bucket, output_uri.bucket}):
        check_bucket(store, bucket)
    return input_uri, output_uri


def check_bucket(store: S3Store, bucket: str) -> None:
    if not store.bucket_exists(bucket):
        raise SubmitError(
            f"bucket {bucket!r} does not exist (or is not visible with these "
            "credentials); check the URI and BV_S3_ENDPOINT_URL"
        )


def plan_job(request: JobRequest, *, store: S3Store, registry: ModelRegistry) -> PlannedJob:
    """Validate the request, pin the model and find its keys (listing, or the key list)."""
    input_uri, output_uri = check_target(store, request.task, request.input, request.output)
    model = registry.resolve(request.model or DEFAULT_MODELS[request.task], task=request.task)
    review = review_for(request.task, request.review, model.card)
    reference = model.card.get("confidence_histogram")
    if not store.exists(*registry.model_key(model.name, model.version, model.card)):
        raise SubmitError(
            f"model {model} has a card but no {model_filename(model.card)} in the registry;"
            " register it again "
            "or promote another version (`bucketvision models list`)"
        )
    if request.keys is not None:  # every listed key unless globs were given
        check_listed_keys(request.keys, input_uri, request.keys_source)
        patterns = tuple(request.includes) or ("*",)
        chosen = select_keys(request.keys, input_uri, output_uri, patterns, request.excludes)
        keys = list(dict.fromkeys(chosen))  # each key once
        if not keys:
            raise SubmitError(f"no key of {request.keys_source} is left by --include/--exclude")
        return PlannedJob(keys, input_uri, output_uri, str(model), None, review, reference)
    patterns = tuple(request.includes) or IMAGE_PATTERNS
    listed = {info.key: info.size for info in store.list_objects(input_uri)}
    chosen = select_keys(listed, input_uri, output_uri, patterns, request.excludes)
    sizes = {key: listed[key] for key in chosen}
    if not sizes:
        excluded = f" and not {' '.join(request.excludes)}" if request.excludes else ""
        raise SubmitError(
            f"no objects under {input_uri} match {' '.join(patterns)}{excluded}; "
            "check the prefix, or pass --include '*' to take every object"
        )
    return PlannedJob(list(sizes), input_uri, output_uri, str(model), sizes, review, reference)


def submit_job(
    request: JobRequest, *, app: Celery, store: S3Store, jobs: JobStore, registry: ModelRegistry
) -> SubmittedJob:
    """Validate, find the keys, pin the model, record the job and enqueue its batches.

    With ``request.job_id`` taken by a job of the same task, input and output, that job
    comes back (``existing``) and nothing is submitted.
    """
    if request.job_id is not None and (found := existing_job(jobs, request)) is not None:
        return found
    planned = plan_job(request, store=store, registry=registry)
    return enqueue_job(
        app,
        jobs,
        store,
        request.task,
        planned.keys,
        planned.input,
        planned.output,
        planned.model,
        batch_size=request.batch_size,
        item_outputs=request.item_outputs,
        job_id=request.job_id,
        retry_of=request.retry_of,
        window=request.window,
        review=planned.review,
        confidence_reference=planned.confidence_reference,
        shadow=claim_slot(registry, jobs.redis, planned.model),
    )


def review_for(
    task: str, requested: ReviewPolicy | None, card: dict[str, Any]
) -> ReviewPolicy | None:
    """The job's review policy: the request's, else the card's ``review_below``; with labels."""
    if requested is None and card.get("review_below") is not None:
        requested = ReviewPolicy(below=float(card["review_below"]))
    if requested is None:
        return None
    refuse_review_task(task)
    return replace(requested, labels=tuple(str(label) for label in card.get("labels", ())))


def existing_job(jobs: JobStore, request: JobRequest) -> SubmittedJob | None:
    """The job ``request.job_id`` names, if any; refused when it is another request's."""
    record = jobs.get_many([str(request.job_id)])[0]
    if record is None:
        return None
    input_uri = parse_s3_uri(request.input)
    output = str(parse_s3_uri(request.output) if request.output else default_output(input_uri))
    if (record.get("task"), record.get("input"), record.get("output")) != (
        request.task,
        str(input_uri),
        output,
    ):
        raise SubmitError(
            f"job id {request.job_id!r} is taken by a job of {record.get('task')} over "
            f"{record.get('input')} -> {record.get('output')}; choose another --job-id"
        )
    return submitted_view(record, existing=True)


def enqueue_job(
    app: Celery,
    jobs: JobStore,
    store: S3Store,
    task: str,
    keys: Sequence[str],
    input_uri: S3Uri,
    output_uri: S3Uri,
    model: str,
    *,
    batch_size: int,
    item_outputs: bool = True,
    job_id: str | None = None,
    retry_of: str | None = None,
    window: int = DEFAULT_WINDOW,
    review: ReviewPolicy | None = None,
    confidence_reference: Sequence[int] | None = None,
    shadow: ShadowSlot | None = None,
) -> SubmittedJob:
    """Record a job over ``keys`` with a pinned ``model``, write its plan, send its first batches.

    A caller that must clean up after a failed send (the watcher), or that chose the id
    (``--job-id``), passes its own ``job_id``; ``retry_of`` links a retry to its job.
    ``window`` batches are sent now, and each recorded batch sends the next.
    """
    job_id = job_id or new_job_id()
    candidate = shadow.candidate if shadow else None
    messages = [
        BatchMessage(
            job_id, index, task, tuple(batch), input_uri, output_uri, model, item_outputs,
            shadow=candidate,
        )
        for index, batch in enumerate(chunk(keys, batch_size))
    ]  # fmt: skip
    job = JobPlan(
        job_id,
        task,
        model,
        str(input_uri),
        output_uri,
        len(keys),
        batch_size,
        retry_of,
        window,
        review,
        confidence_reference,
        shadow,
    )
    return start_job(app, jobs, store, job, messages, item_outputs=item_outputs)
