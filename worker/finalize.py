"""Completing a job: ``manifest.jsonl`` and ``summary.json``, written once.

The worker whose batch completes the job claims a lock in Redis, writes both
files to ``<output>/_jobs/<job_id>/`` and marks the job finished. If it dies
half way, the lock expires and the redelivered batch finalises again; the
files are whole-object PUTs, so a second write replaces rather than appends.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import numpy as np

from bucketvision.infra.jobs import JobStore
from bucketvision.infra.outputs import MANIFEST_FILE, SUMMARY_FILE, job_file_key, jsonl
from bucketvision.infra.s3 import S3Store, parse_s3_uri


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
    }


def finalize_job(jobs: JobStore, store: S3Store, job_id: str, owner: str) -> dict[str, Any] | None:
    """Write the job files if this caller wins the claim; returns the summary it wrote."""
    record = jobs.get(job_id)
    if record.get("state") in ("finished", "failed") or not jobs.claim_finalization(job_id, owner):
        return None
    try:
        lines = jobs.manifest_lines(job_id)
        finished_at = float(record.get("updated_at") or time.time())
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
        jobs.mark_finished(job_id, summary["state"], finished_at)
        return summary
    except BaseException:
        jobs.release_finalization(job_id)
        raise
