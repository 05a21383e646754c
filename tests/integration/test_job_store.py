"""The Redis job store on a real Redis: idempotent batches, one finaliser."""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest

from bucketvision.infra.jobs import BatchRecord, JobNotFound, JobStore
from bucketvision.infra.outputs import jsonl, parse_jsonl
from bucketvision.infra.s3 import S3Store, parse_s3_uri
from bucketvision.worker.finalize import finalize_job
from bucketvision.worker.manifest_parts import write_part
from tests.helpers import manifest_lines

pytestmark = pytest.mark.integration


def _job(jobs: JobStore, batches: int, output: str) -> str:
    job_id = "t-" + secrets.token_hex(4)
    jobs.create(
        job_id,
        {
            "task": "classify",
            "model": "m@v1",
            "input": "s3://b/in/",
            "output": output,
            "total": batches * 2,
            "batches": batches,
        },
    )
    return job_id


def _record(
    jobs: JobStore, store: S3Store, job_id: str, batch: int, lines: list[dict]
) -> BatchRecord:
    """Write the batch's manifest part, then record it (as a worker does)."""
    write_part(store, parse_s3_uri(jobs.get(job_id)["output"]), job_id, batch, lines)
    return jobs.record_batch(job_id, batch, lines, {"infer": 1.0})


def _manifest(s3_client: Any, job_id: str) -> list[dict]:
    """The lines of the job's composed manifest.jsonl."""
    key = f"out/_jobs/{job_id}/manifest.jsonl"
    return parse_jsonl(s3_client.get_object(Bucket="it-finalize", Key=key)["Body"].read().decode())


def test_redelivered_batch_is_counted_once(redis_url: str, settings, s3_client) -> None:
    s3_client.create_bucket(Bucket="it-finalize")
    jobs = JobStore.from_url(redis_url)
    store = S3Store.from_settings(settings)
    job_id = _job(jobs, 2, "s3://it-finalize/out/")
    assert jobs.begin_batch(job_id, 0).attempt == 1
    assert jobs.get(job_id)["state"] == "running"
    first = _record(jobs, store, job_id, 0, manifest_lines(["a", "b"]))
    redelivered = jobs.begin_batch(job_id, 0)  # after it was recorded: no death (issue 14)
    # Its attempt count went with its recording (the hash holds the running batches only).
    assert redelivered.attempt == 0 and redelivered.already_recorded
    assert redelivered.worker_deaths == 0 and not redelivered.death
    again = _record(jobs, store, job_id, 0, manifest_lines(["a", "b"]))
    assert first.first_time and not again.first_time
    record = jobs.get(job_id)
    assert record["ok"] == 2 and record["done_batches"] == 1
    assert record["stage_infer"] == pytest.approx(1.0)
    assert not again.job_complete
    last = _record(jobs, store, job_id, 1, manifest_lines(["c"]) + manifest_lines(["d"], "error"))
    assert last.job_complete
    assert finalize_job(jobs, store, job_id, "w1") is not None
    assert [line["key"] for line in _manifest(s3_client, job_id)] == ["a", "b", "c", "d"]


def test_unknown_job_is_reported(redis_url: str) -> None:
    jobs = JobStore.from_url(redis_url)
    with pytest.raises(JobNotFound, match="no job"):
        jobs.get("nope")
    with pytest.raises(JobNotFound):
        jobs.begin_batch("nope", 0)


def test_finalize_writes_job_files_once(redis_url: str, settings, s3_client) -> None:
    s3_client.create_bucket(Bucket="it-finalize")
    jobs = JobStore.from_url(redis_url)
    store = S3Store.from_settings(settings)
    job_id = _job(jobs, 1, "s3://it-finalize/out/")
    jobs.begin_batch(job_id, 0)
    _record(jobs, store, job_id, 0, manifest_lines(["a"]) + manifest_lines(["b"], "error"))
    summary = finalize_job(jobs, store, job_id, "w1")
    assert summary is not None and summary["state"] == "finished"
    assert finalize_job(jobs, store, job_id, "w2") is None  # already finished: no second write
    base = f"out/_jobs/{job_id}/"
    manifest = s3_client.get_object(Bucket="it-finalize", Key=base + "manifest.jsonl")
    rows = parse_jsonl(manifest["Body"].read().decode())
    assert [row["key"] for row in rows] == ["a", "b"]
    stored = json.loads(
        s3_client.get_object(Bucket="it-finalize", Key=base + "summary.json")["Body"].read()
    )
    assert stored["ok"] == 1 and stored["error"] == 1 and stored["total"] == 2
    assert jobs.get(job_id)["state"] == "finished"


def test_concurrent_finalizers_claim_once(redis_url: str) -> None:
    jobs = JobStore.from_url(redis_url)
    job_id = _job(jobs, 1, "s3://b/out/")
    assert jobs.claim_finalization(job_id, "a")
    assert not jobs.claim_finalization(job_id, "b")
    jobs.release_finalization(job_id)
    assert jobs.claim_finalization(job_id, "b")


def test_keys_with_unicode_line_breaks_survive_the_manifest(
    redis_url: str, settings, s3_client
) -> None:
    """U+2028, U+2029 and U+0085 are line breaks to str.splitlines: escaped, never split."""
    s3_client.create_bucket(Bucket="it-finalize")
    jobs = JobStore.from_url(redis_url)
    store = S3Store.from_settings(settings)
    job_id = _job(jobs, 1, "s3://it-finalize/out/")
    keys = ["in/line\u2028sep.png", "in/para\u2029sep.png", "in/nel\u0085.png", "in/é.png"]
    _record(jobs, store, job_id, 0, manifest_lines(keys))
    assert finalize_job(jobs, store, job_id, "w1") is not None
    assert [line["key"] for line in _manifest(s3_client, job_id)] == keys
    text = jsonl(manifest_lines(keys))
    assert len(text.splitlines()) == len(keys) and "é" in text  # readable, and split right
    assert [row["key"] for row in parse_jsonl(text)] == keys
