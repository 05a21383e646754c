"""Cancelling a job on a real Redis and S3 (moto): finalised once, by whoever is left.

Issue 14 (a job's whole life): a cancelled job whose remaining batches never run must
still get its manifest and summary, written exactly once, also when the process that
should have finalised it dies: a batch owner killed mid-batch records nothing, so the
lost-batch audit drives the job to ``cancelled`` once that owner's lease has expired.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from bucketvision.infra import keys
from bucketvision.infra.batches import LostBatchAudit
from bucketvision.infra.job_life import live_owners, request_cancel
from bucketvision.infra.jobs import JobStore
from bucketvision.infra.settings import Settings
from bucketvision.producer.lifecycle import JobRefused, cancel_job
from bucketvision.worker import tasks
from bucketvision.worker.runtime import WorkerRuntime
from tests.helpers import manifest_lines
from tests.integration.test_finalization import (
    _drain,
    _job_files,
    _record,
    _submit,
    clients,
    runtime,
)

pytestmark = pytest.mark.integration

DEAD_LEASE_SECONDS = 4.0  # the lease a killed batch owner left behind (10 s in the service)

__all__ = ["clients", "runtime"]  # fixtures shared with test_finalization


def test_a_cancelled_job_whose_batch_owner_died_is_finalised_by_the_audit(
    s3_client: Any,
    fake_model: str,
    clients: dict[str, Any],
    broker: redis.Redis,
    runtime: WorkerRuntime,
) -> None:
    jobs: JobStore = clients["jobs"]
    job_id = _submit(s3_client, fake_model, clients)  # 2 batches of 2
    broker.delete("inference")  # both delivered: batch 0 recorded, batch 1's owner killed
    jobs.begin_batch(job_id, 0)
    _record(clients, job_id, 0, ["in/0.png", "in/1.png"])
    jobs.begin_batch(job_id, 1, owner="doomed", lease_seconds=DEAD_LEASE_SECONDS)
    found = request_cancel(jobs.redis, job_id, time.time())
    assert found.accepted and found.running_batches == 1
    assert jobs.get(job_id)["state"] == "cancelling"
    audit = LostBatchAudit(clients["app"], jobs, clients["store"], quiet_seconds=3600)
    assert job_id not in audit.run_once()  # its owner may be at work: nothing to do yet

    died = time.monotonic()
    while jobs.get(job_id)["state"] == "cancelling" and time.monotonic() - died < 10:
        audit.run_once()
        for body in _drain(broker):
            tasks.handle_inference_batch(body)
        time.sleep(0.2)
    record = jobs.get(job_id)
    assert record["state"] == "cancelled"
    assert live_owners(jobs.redis, job_id) == 0
    assert _job_files(s3_client, job_id) == ["manifest.jsonl", "summary.json"]
    manifest = s3_client.get_object(Bucket="it-final", Key=f"out/_jobs/{job_id}/manifest.jsonl")
    assert manifest["Body"].read().decode().count("\n") == 2  # what ran: batch 0
    summary = runtime.store.get_json("it-final", f"out/_jobs/{job_id}/summary.json")
    assert (summary["state"], summary["ok"], summary["not_run"]) == ("cancelled", 2, 2)
    assert job_id not in jobs.active_jobs()

    # The killed owner's batch, recorded late by a worker that was only paused: refused.
    late = jobs.record_batch(job_id, 1, manifest_lines(["in/2.png", "in/3.png"]), {})
    assert not late.first_time and jobs.get(job_id)["ok"] == 2
    with pytest.raises(JobRefused, match="already ended \\(cancelled\\)"):
        cancel_job(jobs, runtime.store, job_id)


def test_cancel_finalises_at_once_a_job_none_of_whose_batches_runs(
    s3_client: Any, fake_model: str, clients: dict[str, Any], broker: redis.Redis,
    runtime: WorkerRuntime,
) -> None:  # fmt: skip
    jobs: JobStore = clients["jobs"]
    job_id = _submit(s3_client, fake_model, clients)
    said = cancel_job(jobs, runtime.store, job_id)
    assert said.startswith(f"job {job_id} cancelled: 0 of 4 items ran; manifest s3://it-final/")
    assert jobs.get(job_id)["state"] == "cancelled"
    for body in _drain(broker):  # its queued batches are skipped, and finalise nothing again
        report = tasks.handle_inference_batch(body)
        assert report.dropped and report.job_finished is None
    assert jobs.recorded_batches(job_id).size == 0
    assert not jobs.redis.exists(keys.job_finalize_lock(job_id))


def test_the_index_of_recent_jobs_stays_bounded(settings: Settings) -> None:
    from bucketvision.infra import job_life

    jobs = JobStore.from_url(settings.broker_url)
    jobs.redis.delete(keys.JOBS_BY_SUBMISSION)
    limit, job_life.INDEX_LIMIT = job_life.INDEX_LIMIT, 5
    try:
        for index in range(8):
            assert jobs.create(f"bounded-{index}", {"task": "classify", "total": 1})
        assert not jobs.create("bounded-7", {"task": "classify"})  # an id is created once
        assert jobs.recent_jobs(10) == [f"bounded-{index}" for index in range(7, 2, -1)]
        old = time.time() - 31 * 24 * 3600  # older than a record lives: trimmed on the next
        jobs.redis.zadd(keys.JOBS_BY_SUBMISSION, {"ancient": old})
        jobs.create("bounded-8", {"task": "classify"})
        assert "ancient" not in jobs.recent_jobs(10)
    finally:
        job_life.INDEX_LIMIT = limit
