"""Submitting a job: list the input prefix, pin the model, enqueue batches by task name.

The producer never imports TensorFlow or the worker's code; tasks are sent by
their names on the shared Celery app configuration. Each message carries
``enqueued_at`` (Unix seconds) for the worker's queue-wait metric; a worker
ignores fields it does not know, and a message without it is still accepted.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from celery import Celery

from bucketvision.infra.batches import send_batches
from bucketvision.infra.errors import UserError
from bucketvision.infra.jobs import JobStore
from bucketvision.infra.messages import BatchMessage, JobMessage
from bucketvision.infra.s3 import S3Store, S3Uri, parse_s3_uri
from bucketvision.infra.settings import DEFAULT_MODELS
from bucketvision.infra.vocabulary import IMAGE_PATTERNS, INFERENCE_TASKS
from bucketvision.models.registry import ModelRegistry, model_filename


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


@dataclass(frozen=True)
class SubmittedJob:
    job_id: str
    total: int
    batches: int
    model: str
    output: str


def matches(relative_key: str, patterns: Sequence[str]) -> bool:
    """Case-insensitive glob match of a key (relative to the input prefix)."""
    lowered = relative_key.lower()
    return any(fnmatchcase(lowered, pattern.lower()) for pattern in patterns)


def select_keys(
    keys: Iterable[str], input_uri: S3Uri, exclude: S3Uri | None, patterns: Sequence[str]
) -> Iterator[str]:
    """Keys under the input that match ``patterns``, skipping folders and our own outputs."""
    for key in keys:
        if key.endswith("/"):
            continue
        if (
            exclude is not None
            and exclude.bucket == input_uri.bucket
            and exclude.prefix
            and key.startswith(exclude.prefix)
        ):
            continue
        if matches(key[len(input_uri.prefix) :], patterns):
            yield key


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


def submit_job(
    request: JobRequest, *, app: Celery, store: S3Store, jobs: JobStore, registry: ModelRegistry
) -> SubmittedJob:
    """Validate, list, pin the model, record the job and enqueue its batches."""
    input_uri, output_uri = check_target(store, request.task, request.input, request.output)
    model = registry.resolve(request.model or DEFAULT_MODELS[request.task], task=request.task)
    if not store.exists(*registry.model_key(model.name, model.version, model.card)):
        raise SubmitError(
            f"model {model} has a card but no {model_filename(model.card)} in the registry;"
            " register it again "
            "or promote another version (`bucketvision models list`)"
        )
    patterns = tuple(request.includes) or IMAGE_PATTERNS
    listed = (info.key for info in store.list_objects(input_uri))
    keys = list(select_keys(listed, input_uri, output_uri, patterns))
    if not keys:
        raise SubmitError(
            f"no objects under {input_uri} match {' '.join(patterns)}; "
            "check the prefix, or pass --include '*' to take every object"
        )
    return enqueue_job(
        app,
        jobs,
        request.task,
        keys,
        input_uri,
        output_uri,
        str(model),
        batch_size=request.batch_size,
        item_outputs=request.item_outputs,
    )


def enqueue_job(
    app: Celery,
    jobs: JobStore,
    task: str,
    keys: Sequence[str],
    input_uri: S3Uri,
    output_uri: S3Uri,
    model: str,
    *,
    batch_size: int,
    item_outputs: bool = True,
    job_id: str | None = None,
) -> SubmittedJob:
    """Record a job over ``keys`` with a pinned ``model`` and send its batches by task name.

    A caller that must clean up after a failed send (the watcher) passes its own ``job_id``.
    """
    job_id = job_id or new_job_id()
    messages = [
        BatchMessage(job_id, index, task, tuple(batch), input_uri, output_uri, model, item_outputs)
        for index, batch in enumerate(chunk(keys, batch_size))
    ]
    job = JobPlan(job_id, task, model, str(input_uri), output_uri, len(keys), batch_size)
    return start_job(app, jobs, job, messages, item_outputs=item_outputs)


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


def start_job(
    app: Celery,
    jobs: JobStore,
    job: JobPlan,
    messages: Sequence[JobMessage],
    *,
    item_outputs: bool,
) -> SubmittedJob:
    """Record the job (state ``queued``), then send its batch messages (submit and generate)."""
    jobs.create(
        job.job_id,
        {
            "task": job.task,
            "model": job.model,
            "input": job.input,
            "output": str(job.output),
            "total": job.total,
            "batches": len(messages),
            "batch_size": job.batch_size,
            "item_outputs": int(item_outputs),
        },
    )
    send_batches(app, jobs, messages)
    return SubmittedJob(job.job_id, job.total, len(messages), job.model, str(job.output))
