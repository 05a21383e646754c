"""A classify job end to end: real worker processes, Redis, moto's S3 server, the CLI."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter

import pytest
import redis

from tests.helpers import bad_files, printed_job_id, read_job, run_cli, submit_cli, upload_digits
from tests.workers import WorkerProcess

pytestmark = pytest.mark.e2e


def test_classify_job_with_bad_files(service_env, s3_client, digits_model, start_worker) -> None:
    bucket = "e2e-classify"
    s3_client.create_bucket(Bucket=bucket)
    truth = upload_digits(s3_client, bucket, "incoming/", 300, seed=77)
    hostile = bad_files()
    for name, (body, _) in hostile.items():
        s3_client.put_object(Bucket=bucket, Key=f"incoming/bad/{name}", Body=body)
    worker = start_worker("--cpu", "--concurrency", "2")
    worker.wait_for_children(2)

    done = submit_cli(
        service_env,
        f"s3://{bucket}/incoming/",
        f"s3://{bucket}/out/",
        "--batch-size",
        "16",
        "--wait",
    )
    assert done.returncode == 0, done.stderr + worker.log()
    job_id = printed_job_id(done)
    lines, summary = read_job(s3_client, bucket, "out/", job_id)

    expected = set(truth) | {f"incoming/bad/{name}" for name in hostile}
    assert len(lines) == len(expected)
    assert Counter(line["key"] for line in lines) == Counter(expected)
    by_key = {line["key"]: line for line in lines}
    for name, (_, error_type) in hostile.items():
        line = by_key[f"incoming/bad/{name}"]
        assert line["status"] == "error", line
        assert line["error"]["type"] == error_type, line
        assert line["error"]["message"], line
        assert line["output"] is None and line["result"] is None
    correct = 0
    for key, label in truth.items():
        line = by_key[key]
        assert line["status"] == "ok", line
        assert line["model"] == digits_model
        assert set(line["result"]) == {"label", "score", "top_k", "image_size"}
        assert line["result"]["image_size"] == [28, 28]
        assert line["output"] == f"s3://{bucket}/out/{key[len('incoming/') :]}.json"
        item = json.loads(
            s3_client.get_object(Bucket=bucket, Key=line["output"].split("/", 3)[3])["Body"].read()
        )
        assert item["label"] == line["result"]["label"]
        correct += line["result"]["label"] == str(label)
    assert correct / len(truth) > 0.9
    assert summary["state"] == "finished"
    assert summary["total"] == len(expected)
    assert summary["ok"] + summary["error"] + summary["skipped"] == summary["total"]
    assert summary["ok"] == len(truth) and summary["error"] == len(hostile)
    assert summary["model"] == digits_model

    status = run_cli(service_env, "status", job_id, "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["state"] == "finished"


def test_sigkill_pool_child_mid_job_loses_nothing(
    service_env, s3_client, digits_model, start_worker
) -> None:
    bucket = "e2e-sigkill"
    s3_client.create_bucket(Bucket=bucket)
    truth = upload_digits(s3_client, bucket, "in/", 640, seed=78)
    worker = start_worker("--cpu", "--concurrency", "2")
    worker.wait_for_children(2)
    submitted = submit_cli(
        service_env,
        f"s3://{bucket}/in/",
        f"s3://{bucket}/out/",
        "--batch-size",
        "8",
    )
    assert submitted.returncode == 0, submitted.stderr
    job_id = printed_job_id(submitted)
    jobs = redis.Redis.from_url(service_env["BV_BROKER_URL"])
    deadline = time.monotonic() + 120
    running = f"bv:job:{job_id}:attempts"  # the batches begun and not yet recorded
    while int(jobs.hget(f"bv:job:{job_id}", "done_batches") or 0) < 6 or not jobs.hlen(running):
        assert time.monotonic() < deadline, worker.log()
        time.sleep(0.01)
    victims = worker.children()
    for pid in victims:  # both children: each holds a batch mid-flight (prefetch 1)
        os.kill(pid, signal.SIGKILL)

    waited = run_cli(service_env, "submit", "--help")  # the CLI still works while the pool recovers
    assert waited.returncode == 0
    deadline = time.monotonic() + 240
    while jobs.hget(f"bv:job:{job_id}", "state") not in (b"finished", b"failed"):
        assert time.monotonic() < deadline, worker.log()
        time.sleep(0.2)
    lines, summary = read_job(s3_client, bucket, "out/", job_id)
    assert len(lines) == len(truth)
    assert Counter(line["key"] for line in lines) == Counter(truth.keys())
    assert all(line["status"] == "ok" for line in lines), [x for x in lines if x["status"] != "ok"]
    assert summary["ok"] == len(truth) and summary["total"] == len(truth)
    assert max(line["attempts"] for line in lines) >= 2, "no batch was redelivered"
    assert set(worker.children()).isdisjoint(victims)


def test_pool_children_that_start_slowly_are_not_killed(
    service_env, s3_client, digits_model, tmp_path
) -> None:
    """A replacement child that takes longer than 4 s to come up is not killed for it.

    Celery kills a pool child that has not reported itself up within
    ``worker_proc_alive_timeout`` (4 s by default) and starts another, which takes as
    long. Where importing TensorFlow and initialising the GPU takes longer (a GPU
    machine, or a busy one), a child that died is never replaced and the pool
    dwindles to nothing: no job runs again.
    """
    bucket = "e2e-slow-start"
    s3_client.create_bucket(Bucket=bucket)
    truth = upload_digits(s3_client, bucket, "in/", 32, seed=79)
    worker = WorkerProcess(
        {**service_env, "BV_TEST_CHILD_START_SECONDS": "6"},
        tmp_path / "slow-worker.log",
        "--cpu",
        "--concurrency",
        "2",
        module="tests.e2e.slow_start_worker",
    )
    try:
        for round_ in ("first", "after the children were killed"):
            done = submit_cli(
                service_env,
                f"s3://{bucket}/in/",
                f"s3://{bucket}/out/{round_[:5]}/",
                "--wait",
                timeout=150,
            )
            assert done.returncode == 0, f"{round_}: {done.stderr}\n{worker.log()}"
            lines, summary = read_job(s3_client, bucket, f"out/{round_[:5]}/", printed_job_id(done))
            assert summary["ok"] == len(truth) == len(lines)
            for pid in worker.children():
                os.kill(pid, signal.SIGKILL)
        assert "Timed out waiting for UP message" not in worker.full_log()
    finally:
        worker.stop()
