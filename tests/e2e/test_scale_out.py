"""Scale out: independent worker processes (as on several hosts) share one job."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from tests.helpers import printed_job_id, read_job, submit_cli, upload_digits

pytestmark = pytest.mark.e2e


def test_two_workers_with_different_devices_share_a_job(
    service_env: dict[str, str], s3_client: Any, digits_model: str, start_worker: Any
) -> None:
    bucket = "e2e-scale-out"
    s3_client.create_bucket(Bucket=bucket)
    truth = upload_digits(s3_client, bucket, "in/", 640, seed=95)
    gpu_style = start_worker("--gpus", "0", "--concurrency", "1")  # pinned to "GPU 0"
    cpu_style = start_worker("--cpu", "--concurrency", "1")
    gpu_style.wait_for_children(1)
    cpu_style.wait_for_children(1)
    done = submit_cli(
        service_env,
        f"s3://{bucket}/in/",
        f"s3://{bucket}/out/",
        "--batch-size",
        "16",
        "--wait",
    )
    assert done.returncode == 0, done.stderr
    job_id = printed_job_id(done)
    lines, summary = read_job(s3_client, bucket, "out/", job_id)
    assert Counter(line["key"] for line in lines) == Counter(truth.keys())  # each key once
    assert summary["ok"] == len(truth)

    def batches_run(log: str) -> int:
        """Batches of this job the worker ran and recorded: its finisher's lines (or
        Celery's "succeeded" lines of a batch recorded inside its task)."""
        return sum(
            1
            for line in log.splitlines()
            if f"of job {job_id} recorded behind its task: {{" in line
            or ("succeeded in" in line and job_id in line and "'recorded': True" in line)
        )

    by_gpu_style, by_cpu_style = (
        batches_run(gpu_style.full_log()),
        batches_run(cpu_style.full_log()),
    )
    assert by_gpu_style + by_cpu_style == 40  # 640 keys / 16: each batch recorded once
    assert by_gpu_style >= 5 and by_cpu_style >= 5, (by_gpu_style, by_cpu_style)
    assert "CUDA_VISIBLE_DEVICES=0" in gpu_style.full_log()
    assert "CUDA_VISIBLE_DEVICES=-1" in cpu_style.full_log()
    print(f"\nscale-out: batches run by --gpus 0: {by_gpu_style}, by --cpu: {by_cpu_style}")
