"""Messages the broker lost: the job still finishes, every image once.

Three of a job's ten batch messages are removed from the Redis queue before a
worker starts, as a connection cut between kombu's BRPOP and its bookkeeping,
a warm shutdown, or a Redis crash can do. The workers' lost-batch audit must
find them (in no queue, not unacknowledged, not recorded) and send them again.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from bucketvision.infra.batches import batch_of_task_id
from bucketvision.infra.jobs import JobStore
from bucketvision.infra.queue import INFERENCE_QUEUE
from tests.chaos.conftest import assert_each_input_once
from tests.helpers import printed_job_id, read_job, run_cli, submit_cli, upload_digits

pytestmark = pytest.mark.chaos

LOST = (2, 5, 9)


def test_batches_the_broker_lost_are_sent_again(
    chaos_env: dict[str, str], s3_client: Any, digits_model: str, start_faulty_worker: Any
) -> None:
    env = {**chaos_env, "BV_LOST_BATCH_SECONDS": "5"}
    bucket = "chaos-lost-messages"
    s3_client.create_bucket(Bucket=bucket)
    truth = upload_digits(s3_client, bucket, "in/", 160, seed=88)
    submitted = submit_cli(env, f"s3://{bucket}/in/", f"s3://{bucket}/out/", "--batch-size", "16")
    assert submitted.returncode == 0, submitted.stderr
    job_id = printed_job_id(submitted)
    jobs = JobStore.from_url(env["BV_BROKER_URL"])
    for raw in jobs.redis.lrange(INFERENCE_QUEUE, 0, -1):
        batch = batch_of_task_id(json.loads(raw)["headers"]["id"])
        if batch and batch[0] == job_id and batch[1] in LOST:
            assert jobs.redis.lrem(INFERENCE_QUEUE, 1, raw) == 1
    started = time.monotonic()
    worker = start_faulty_worker(env, "--cpu", "--concurrency", "2")
    deadline = started + 240
    while jobs.get(job_id)["state"] not in ("finished", "failed"):
        assert time.monotonic() < deadline, worker.full_log()[-4000:]
        time.sleep(0.5)
    finished_after = time.monotonic() - started
    record = jobs.get(job_id)
    lines, summary = read_job(s3_client, bucket, "out/", job_id)
    assert_each_input_once(lines, summary, set(truth))
    assert summary["ok"] == len(truth)
    assert record["resent_batches"] == len(LOST)
    assert "were in no queue" in worker.full_log()
    status = run_cli(env, "status", job_id)
    assert f"{len(LOST)} batches the broker lost were sent again" in status.stdout, status.stdout
    print(
        f"\nlost messages: {len(LOST)} of 10 batch messages removed from the queue; the audit "
        f"sent them again (BV_LOST_BATCH_SECONDS=5); job of {len(truth)} finished "
        f"{finished_after:.1f} s after the worker started, ok={summary['ok']} lost=0 "
        "duplicated=0"
    )
