"""A job's life beyond submit: list recent jobs, cancel one, retry its errors, dry runs.

Plain functions over the job store and S3; ``producer/cli_jobs.py`` is their thin CLI.

- ``jobs`` reads a page of the index of recent jobs (``bv:jobs``, :mod:`infra.job_life`)
  and their records in one round trip per page; never the keyspace.
- ``cancel`` marks the job ``cancelling`` (one Lua script); when none of its batches
  runs it finalises the job as ``cancelled`` here and now, else the last running batch
  does once it stops (or the lost-batch audit, should that worker die).
- ``retry`` is a new job over the keys of the first job's ``error`` lines, read from its
  ``manifest.jsonl``, with the same model unless another is given, linked by ``retry_of``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bucketvision.infra.errors import UserError
from bucketvision.infra.job_life import INDEX_LIMIT, request_cancel
from bucketvision.infra.jobs import JobNotFound, JobStore
from bucketvision.infra.outputs import MANIFEST_FILE, job_file_key, job_file_uri, parse_jsonl
from bucketvision.infra.review import ReviewPolicy
from bucketvision.infra.s3 import S3Store, parse_s3_uri
from bucketvision.infra.vocabulary import FINAL_STATES, INFERENCE_TASKS
from bucketvision.models.registry import ModelRegistry
from bucketvision.producer.submit import JobRequest, plan_job
from bucketvision.worker.finalize import finalize_job


class JobRefused(UserError):
    """The job is in no state for what was asked (cancel a finished job, retry no errors)."""


def list_jobs(
    jobs: JobStore, *, state: str | None = None, limit: int = 20, now: float | None = None
) -> list[dict[str, Any]]:
    """The newest ``limit`` jobs (only those in ``state`` if given), newest first, as rows."""
    if not 1 <= limit <= INDEX_LIMIT:
        raise UserError(f"--limit must be between 1 and {INDEX_LIMIT}, not {limit}")
    now = time.time() if now is None else now
    rows: list[dict[str, Any]] = []
    page, offset = (max(limit, 200) if state else limit), 0
    while len(rows) < limit:
        ids = jobs.recent_jobs(page, offset)
        offset += len(ids)
        for record in jobs.get_many(ids):
            if record is not None and state in (None, record.get("state")):
                rows.append(job_row(record, now))
        if len(ids) < page:
            break
    return rows[:limit]


def job_row(record: dict[str, Any], now: float) -> dict[str, Any]:
    """One job as ``jobs --json`` prints it."""
    row = {name: record.get(name) for name in ("job_id", "state", "task", "model")}
    row.update({name: int(record.get(name, 0)) for name in ("ok", "error", "skipped", "total")})
    row["age_seconds"] = round(max(0.0, now - float(record.get("submitted_at", now))), 1)
    if record.get("retry_of"):
        row["retry_of"] = record["retry_of"]
    return row


def format_jobs(rows: list[dict[str, Any]]) -> str:
    """A table: id, state, ok/error/skipped of total, model, age."""
    if not rows:
        return "no jobs"
    header = ("JOB", "STATE", "OK/ERROR/SKIPPED OF TOTAL", "MODEL", "AGE")
    table = [header] + [
        (
            str(row["job_id"]),
            str(row["state"]),
            f"{row['ok']}/{row['error']}/{row['skipped']} of {row['total']}",
            str(row["model"]),
            age(row["age_seconds"]),
        )
        for row in rows
    ]
    widths = [max(len(line[column]) for line in table) for column in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in table
    )


def age(seconds: float) -> str:
    """``42s``, ``5m``, ``3h``, ``2d``."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def cancel_job(jobs: JobStore, store: S3Store, job_id: str) -> str:
    """Cancel a job that has not ended; what happened, for the user."""
    found = request_cancel(jobs.redis, job_id, time.time())
    if found.previous_state == "":
        jobs.get(job_id)  # raises JobNotFound with its advice
        raise JobNotFound(f"no job {job_id!r}")
    if not found.accepted:
        raise JobRefused(
            f"job {job_id} has already ended ({found.previous_state}); nothing to cancel"
        )
    if found.running_batches:
        return (
            f"cancelling job {job_id}: {found.running_batches} running batches stop after their"
            f" current forward pass; `bucketvision status {job_id} --wait` follows it to the end"
        )
    owner = f"cancel:{os.uname().nodename}:{os.getpid()}"
    summary = finalize_job(jobs, store, job_id, owner)
    record = jobs.get(job_id)
    output = parse_s3_uri(str(record["output"]))
    ran = int(record.get("ok", 0)) + int(record.get("error", 0)) + int(record.get("skipped", 0))
    how = "cancelled" if summary else f"{record['state']} (finalised by a worker)"
    return (
        f"job {job_id} {how}: {ran} of {record['total']} items ran; manifest "
        f"{job_file_uri(output, job_id, MANIFEST_FILE)}"
    )


def retry_request(
    jobs: JobStore,
    store: S3Store,
    job_id: str,
    *,
    errors: Sequence[str] = (),
    model: str | None = None,
) -> JobRequest:
    """A request for a new job over the keys of ``job_id``'s error lines (of ``errors`` types)."""
    record = jobs.get(job_id)
    if record.get("task") not in INFERENCE_TASKS:
        raise JobRefused(f"job {job_id} is a {record.get('task')} job; only submit jobs retry")
    if record.get("state") not in FINAL_STATES:
        raise JobRefused(
            f"job {job_id} is still {record.get('state')}: wait for it "
            f"(`bucketvision status {job_id} --wait`) or cancel it, then retry"
        )
    output = parse_s3_uri(str(record["output"]))
    text = store.get_text(output.bucket, job_file_key(output, job_id, MANIFEST_FILE))
    keys = [
        str(line["key"])
        for line in parse_jsonl(text)
        if line["status"] == "error" and (not errors or line["error"]["type"] in errors)
    ]
    if not keys:
        kinds = f" of type {', '.join(errors)}" if errors else ""
        raise JobRefused(f"job {job_id} has no error lines{kinds}; nothing to retry")
    return JobRequest(
        task=str(record["task"]),
        input=str(record["input"]),
        output=str(record["output"]),
        model=model or str(record["model"]),
        batch_size=int(record.get("batch_size") or 32),
        item_outputs=bool(int(record.get("item_outputs", 1))),
        keys=keys,
        keys_source=f"the error lines of job {job_id}",
        retry_of=job_id,
        review=ReviewPolicy.from_json(record.get("review")),
    )


@dataclass(frozen=True)
class DryRun:
    """What ``submit --dry-run`` found: objects, their bytes, and listed keys not found."""

    objects: int
    bytes: int
    missing: int
    model: str
    output: str

    def describe(self) -> str:
        gone = f" ({self.missing} listed keys not found: 0 bytes)" if self.missing else ""
        return (
            f"would process {self.objects} objects, {self.bytes} bytes{gone}, with "
            f"{self.model}; results under {self.output}"
        )


def dry_run(request: JobRequest, *, store: S3Store, registry: ModelRegistry) -> DryRun:
    """Everything ``submit`` checks and finds, without creating a job.

    The bytes of a key list come from one listing of the input prefix (not a HEAD per key).
    """
    planned = plan_job(request, store=store, registry=registry)
    sizes = planned.sizes
    if sizes is None:
        wanted = set(planned.keys)
        sizes = {i.key: i.size for i in store.list_objects(planned.input) if i.key in wanted}
    missing = sum(1 for key in planned.keys if key not in sizes)
    total = sum(sizes.get(key, 0) for key in planned.keys)
    return DryRun(len(planned.keys), total, missing, planned.model, str(planned.output))
