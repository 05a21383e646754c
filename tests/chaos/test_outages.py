"""Outages: Redis restarted mid-job, S3 cut for 30 s mid-job, S3 answering slowly."""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bucketvision.infra.jobs import JobStore
from tests.chaos.conftest import REDIS_PASSWORD, assert_each_input_once
from tests.helpers import read_job, start_cli, upload_digits
from tests.services import RestartableRedis
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.chaos


def _job_id(log: Path, process: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if text.strip():
            return text.splitlines()[0].strip()
        assert process.poll() is None, text
        time.sleep(0.1)
    raise AssertionError("submit printed no job id")


def _wait_for_batches(jobs: JobStore, job_id: str, count: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while jobs.get(job_id)["done_batches"] < count:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def _stuck(jobs: JobStore, job_id: str, worker_log: str) -> str:
    """What to look at when a job did not finish: its record and the worker's last lines."""
    record = jobs.get(job_id)
    attempts = jobs.redis.hgetall(f"bv:job:{job_id}:attempts")
    tail = "\n".join(worker_log.splitlines()[-60:])
    return f"job not finished in 300 s: {record}\nattempts {attempts}\nworker log:\n{tail}"


def _no_secrets(*texts: str) -> None:
    for text in texts:
        assert REDIS_PASSWORD not in text
        assert "testing-secret" not in text  # AWS_SECRET_ACCESS_KEY


def test_redis_restarted_mid_job_loses_nothing(
    chaos_env: dict[str, str],
    chaos_redis: RestartableRedis,
    s3_client: Any,
    digits_model: str,
    start_faulty_worker: Any,
    tmp_path: Path,
) -> None:
    bucket = "chaos-redis-restart"
    s3_client.create_bucket(Bucket=bucket)
    truth = upload_digits(s3_client, bucket, "in/", 480, seed=83)
    worker = start_faulty_worker(chaos_env, "--cpu", "--concurrency", "2")
    worker.wait_for_children(2)
    watch_args = ["watch", f"s3://{bucket}/drop/", "--task", "classify"]
    watch_args += ["--output", f"s3://{bucket}/drop-out/", "--interval", "1"]
    watcher = start_cli(chaos_env, tmp_path / "watch.log", *watch_args)
    submit_args = ["submit", "--task", "classify", "--input", f"s3://{bucket}/in/"]
    submit_args += ["--output", f"s3://{bucket}/out/", "--batch-size", "16", "--wait"]
    submitter = start_cli(chaos_env, tmp_path / "submit.log", *submit_args)
    try:
        job_id = _job_id(tmp_path / "submit.log", submitter)
        jobs = JobStore.from_url(chaos_env["BV_BROKER_URL"])
        _wait_for_batches(jobs, job_id, 4)
        dropped = upload_digits(s3_client, bucket, "drop/before-", 10, seed=84)
        chaos_redis.stop()  # SIGTERM: the AOF is flushed, as in a restart or failover
        stopped_at = time.monotonic()
        dropped |= upload_digits(s3_client, bucket, "drop/during-", 10, seed=85)
        time.sleep(5)
        chaos_redis.start()
        dropped |= upload_digits(s3_client, bucket, "drop/after-", 10, seed=86)
        try:
            assert submitter.wait(timeout=300) == 0, (tmp_path / "submit.log").read_text()
        except subprocess.TimeoutExpired:
            raise AssertionError(_stuck(jobs, job_id, worker.full_log())) from None
        finished_after = time.monotonic() - stopped_at
        lines, summary = read_job(s3_client, bucket, "out/", job_id)
        assert_each_input_once(lines, summary, set(truth))
        assert summary["ok"] == len(truth), Counter(str(line["error"]) for line in lines)

        deadline = time.monotonic() + 180
        drop_lines: list[dict] = []
        while time.monotonic() < deadline:
            # A drop job whose batches could not all be sent is marked failed and its
            # objects enqueued again in a new one; only the finished jobs count.
            records = {j: jobs.get(j) for j in jobs.recent_jobs(100) if j != job_id}
            drop_jobs = [j for j, r in records.items() if r["state"] != "failed"]
            if all(records[j]["state"] == "finished" for j in drop_jobs):
                drop_lines = [
                    line
                    for j in drop_jobs
                    for line in read_job(s3_client, bucket, "drop-out/", j)[0]
                ]
                if len(drop_lines) >= len(dropped):
                    break
            time.sleep(0.5)
        drop_counts = Counter(line["key"] for line in drop_lines)
        assert set(drop_counts) == set(dropped), set(dropped) ^ set(drop_counts)
        assert max(drop_counts.values()) == 1, "a dropped object was processed twice"
        assert all(line["status"] == "ok" for line in drop_lines)
        assert watcher.poll() is None, "the watcher died with Redis"
    finally:
        watcher.terminate()
        watcher.wait(timeout=30)
        submitter.kill()
    logs = [worker.full_log(), (tmp_path / "watch.log").read_text(errors="replace")]
    _no_secrets(*logs, *(str(line) for line in lines))
    print(
        f"\nRedis restart: down 5 s mid-job; job of {len(truth)} finished {finished_after:.1f} s "
        f"after the stop, ok={summary['ok']} lost=0 duplicated=0; drop folder "
        f"{len(dropped)}/{len(dropped)} processed once (10 dropped while Redis was down)"
    )


def test_s3_down_for_30_seconds_mid_job_then_slow(
    chaos_env: dict[str, str],
    s3_proxy: TcpProxy,
    s3_client: Any,
    digits_model: str,
    start_faulty_worker: Any,
    tmp_path: Path,
) -> None:
    bucket = "chaos-s3-outage"
    s3_client.create_bucket(Bucket=bucket)
    truth = upload_digits(s3_client, bucket, "in/", 480, seed=87)
    env = {**chaos_env, "BV_S3_ENDPOINT_URL": s3_proxy.url}
    worker = start_faulty_worker(env, "--cpu", "--concurrency", "2")
    worker.wait_for_children(2)
    args = ["submit", "--task", "classify", "--input", f"s3://{bucket}/in/"]
    args += ["--output", f"s3://{bucket}/out/", "--batch-size", "16", "--wait"]
    submitter = start_cli(env, tmp_path / "submit.log", *args)
    job_id = _job_id(tmp_path / "submit.log", submitter)
    jobs = JobStore.from_url(env["BV_BROKER_URL"])
    _wait_for_batches(jobs, job_id, 4)
    s3_proxy.down()
    down_at = time.monotonic()
    time.sleep(30)
    s3_proxy.up()
    assert submitter.wait(timeout=600) == 0, (tmp_path / "submit.log").read_text()
    recovered = time.monotonic() - down_at
    lines, summary = read_job(s3_client, bucket, "out/", job_id)
    assert_each_input_once(lines, summary, set(truth))
    assert summary["ok"] == len(truth), Counter(str(line["error"]) for line in lines)
    retries = worker.full_log().count("retrying in")
    assert retries >= 1, "no batch waited through the outage"

    s3_proxy.delay = 0.25  # every response chunk a quarter second late
    slow = upload_digits(s3_client, bucket, "slow/", 64, seed=88)
    args = ["submit", "--task", "classify", "--input", f"s3://{bucket}/slow/"]
    args += ["--output", f"s3://{bucket}/slow-out/", "--batch-size", "16", "--wait"]
    began = time.monotonic()
    slow_submit = start_cli(env, tmp_path / "slow.log", *args)
    assert slow_submit.wait(timeout=600) == 0, (tmp_path / "slow.log").read_text()
    slow_seconds = time.monotonic() - began
    slow_job = _job_id(tmp_path / "slow.log", slow_submit)
    slow_lines, slow_summary = read_job(s3_client, bucket, "slow-out/", slow_job)
    assert_each_input_once(slow_lines, slow_summary, set(slow))
    assert slow_summary["ok"] == len(slow)
    _no_secrets(worker.full_log(), *(str(line) for line in lines))
    print(
        f"\nS3 outage: endpoint down 30 s mid-job; job of {len(truth)} finished "
        f"{recovered:.1f} s after the cut; {retries} in-process retries logged; "
        f"ok={summary['ok']} lost=0 duplicated=0. Slow S3 (+250 ms per response): "
        f"{len(slow)} images in {slow_seconds:.1f} s, ok={slow_summary['ok']}"
    )
