"""Completing a job: ``manifest.jsonl`` and ``summary.json``, written once.

The worker whose batch completes the job takes the job's finalisation lease in
Redis (``FINALIZE_LEASE_SECONDS``), renews it from a heartbeat thread while it
writes both files to ``<output>/_jobs/<job_id>/``, and marks the job ended,
which releases it. A finaliser that dies (OOM, kill -9) stops renewing: the
lease expires and the lost-batch audit (:mod:`infra.batches`) has the job
finalised again. The files are whole-object PUTs, so a second finaliser replaces
rather than appends, and only the lease holder can mark the job ended.

An outage while writing (S3 or Redis unreachable) releases the lease and is
raised, for the task to ride out or hand back. Any other S3 error (access
denied, a bucket policy, a missing bucket) will not mend by retrying: the job
ends ``failed`` with that error as its failure.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np

from bucketvision.infra.job_life import live_owners
from bucketvision.infra.jobs import FINALIZE_LEASE_SECONDS, JobStore
from bucketvision.infra.outages import OUTAGE_ERRORS
from bucketvision.infra.outputs import MANIFEST_FILE, SUMMARY_FILE, job_file_key, jsonl
from bucketvision.infra.s3 import S3Store, StorageError, parse_s3_uri
from bucketvision.infra.vocabulary import CANCELLING, FINAL_STATES

log = logging.getLogger("bucketvision.worker")


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    p50, p95, p99 = np.percentile(np.asarray(values, dtype=np.float64), [50, 95, 99])
    return {"p50": round(float(p50), 3), "p95": round(float(p95), 3), "p99": round(float(p99), 3)}


def build_summary(
    record: dict[str, Any], lines: list[dict[str, Any]], finished_at: float
) -> dict[str, Any]:
    """The job's summary (docs/schemas/summary.schema.json) from its record and manifest lines."""
    counts = {"ok": 0, "error": 0, "skipped": 0}
    errors_by_type: dict[str, int] = {}
    for line in lines:
        counts[line["status"]] += 1
        if line.get("error"):
            kind = line["error"]["type"]
            errors_by_type[kind] = errors_by_type.get(kind, 0) + 1
    submitted = float(record["submitted_at"])
    wall = max(finished_at - submitted, 1e-9)
    state = "failed" if record.get("failure") else "finished"
    if record.get("state") == CANCELLING:  # the manifest holds what ran before it stopped
        state = "cancelled"
    return {
        "job_id": record["job_id"],
        "task": record["task"],
        "model": record["model"],
        "input": record["input"],
        "output": record["output"],
        "state": state,
        "total": int(record["total"]),
        **counts,
        "submitted_at": iso(submitted),
        "started_at": iso(record.get("started_at")),
        "finished_at": iso(finished_at),
        "wall_seconds": round(wall, 3),
        "images_per_second": round(len(lines) / wall, 2),
        "latency_ms": percentiles([line["latency_ms"] for line in lines]),
        "stage_seconds": {
            stage: round(float(record.get(f"stage_{stage}", 0.0)), 3)
            for stage in ("download", "decode", "infer", "upload")
        },
        # What happened, beyond the counts: why items failed, and how many items ran
        # more than once because their worker died (redelivered batches).
        "errors_by_type": dict(sorted(errors_by_type.items())),
        "redelivered_items": sum(1 for line in lines if line.get("attempts", 1) > 1),
        **({"failure": record["failure"]} if record.get("failure") else {}),
        **({"retry_of": record["retry_of"]} if record.get("retry_of") else {}),
        **({"not_run": int(record["total"]) - len(lines)} if state == "cancelled" else {}),
    }


def finalize_job(
    jobs: JobStore,
    store: S3Store,
    job_id: str,
    owner: str,
    *,
    lease_seconds: float = FINALIZE_LEASE_SECONDS,
) -> dict[str, Any] | None:
    """Write the job files if this caller takes the lease; the job's summary if it ended it.

    None when the job has ended already, another finaliser holds the lease, or this
    one lost it while writing. A summary whose ``state`` is ``failed`` and that has
    a ``failure`` naming an S3 error was not written (see the module docstring).
    A cancelling job is finalised (as ``cancelled``) only once none of its batches runs.
    """
    state = jobs.get(job_id).get("state")
    if state in FINAL_STATES or (state == CANCELLING and live_owners(jobs.redis, job_id)):
        return None
    if not jobs.claim_finalization(job_id, owner, lease_seconds):
        return None
    with _Heartbeat(jobs, job_id, owner, lease_seconds):
        try:
            record = jobs.get(job_id)  # read under the lease: ended since the first look?
            if record.get("state") in FINAL_STATES:
                jobs.release_finalization(job_id, owner)
                return None
            finished_at = float(record.get("updated_at") or time.time())
            summary = _write_job_files(jobs, store, record, job_id, finished_at)
        except OUTAGE_ERRORS:
            _release_quietly(jobs, job_id, owner)
            raise
        except StorageError as error:  # not an outage: retrying will not help
            summary = _failed_summary(record, error)
        except BaseException:
            _release_quietly(jobs, job_id, owner)
            raise
        ended = jobs.mark_finished(
            job_id, summary["state"], finished_at, owner=owner, failure=summary.get("failure")
        )
        if not ended:
            log.warning("job %s: lost the finalisation lease while writing; not ending it", job_id)
            return None
        return summary


def _write_job_files(
    jobs: JobStore, store: S3Store, record: dict[str, Any], job_id: str, finished_at: float
) -> dict[str, Any]:
    """PUT the manifest and the summary; returns the summary."""
    lines = jobs.manifest_lines(job_id)
    summary = build_summary(record, lines, finished_at)
    output = parse_s3_uri(record["output"])
    manifest = jsonl(lines)
    store.put_bytes(
        output.bucket,
        job_file_key(output, job_id, MANIFEST_FILE),
        manifest.encode(),
        "application/x-ndjson",
    )
    store.put_json(output.bucket, job_file_key(output, job_id, SUMMARY_FILE), summary)
    return summary


def _failed_summary(record: dict[str, Any], error: StorageError) -> dict[str, Any]:
    """What ends a job whose files S3 refused to take (not an outage: retrying will not help)."""
    reason = f"could not write the job files: {error}"
    if record.get("failure"):
        reason = f"{record['failure']}; {reason}"
    log.error("job %s failed: %s", record["job_id"], reason)
    return {"job_id": record["job_id"], "state": "failed", "failure": reason}


def _release_quietly(jobs: JobStore, job_id: str, owner: str) -> None:
    """Release the lease for a prompt retry; in a Redis outage it expires on its own."""
    try:
        jobs.release_finalization(job_id, owner)
    except OUTAGE_ERRORS as error:
        log.info("job %s: finalisation lease left to expire (%s)", job_id, error)


class _Heartbeat:
    """Renews the finaliser's lease every third of its length until the block ends.

    It stops on its own once the lease is no longer this finaliser's (expired or
    taken over); an outage only skips a beat.
    """

    def __init__(self, jobs: JobStore, job_id: str, owner: str, lease_seconds: float) -> None:
        self.jobs, self.job_id, self.owner = jobs, job_id, owner
        self.lease_seconds = lease_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="bv-finalize-lease", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _beat(self) -> None:
        while not self._stop.wait(self.lease_seconds / 3):
            try:
                if not self.jobs.renew_finalization(self.job_id, self.owner, self.lease_seconds):
                    log.warning("job %s: finalisation lease lost", self.job_id)
                    return
            except OUTAGE_ERRORS as error:
                log.info("job %s: finalisation lease not renewed (%s)", self.job_id, error)
