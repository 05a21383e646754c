"""Hot reload: a worker follows CURRENT without a restart; a job keeps its pinned version."""

from __future__ import annotations

import os
import time
from collections import Counter
from typing import Any

import pytest

from bucketvision.infra.s3 import S3Store
from bucketvision.models.registration import register_model
from bucketvision.models.registry import ModelRegistry
from tests.helpers import (
    printed_job_id,
    read_job,
    run_cli,
    train_and_register_digits,
    upload_digits,
)

pytestmark = pytest.mark.e2e

BUCKET = "e2e-hot-reload"
NAME = "digits-hot"


def _submit(service_env: dict[str, str], output: str, *extra: str) -> str:
    done = run_cli(
        service_env,
        "submit",
        "--task",
        "classify",
        "--model",
        NAME,
        "--input",
        f"s3://{BUCKET}/incoming/",
        "--output",
        f"s3://{BUCKET}/{output}",
        "--batch-size",
        "8",
        *extra,
    )
    assert done.returncode == 0, done.stderr
    return printed_job_id(done)


def _wait(service_env: dict[str, str], job_id: str) -> None:
    waited = run_cli(service_env, "status", job_id)
    deadline = time.monotonic() + 300
    while "finished" not in waited.stdout and time.monotonic() < deadline:
        time.sleep(0.5)
        waited = run_cli(service_env, "status", job_id)
    assert "finished" in waited.stdout, waited.stdout + waited.stderr


def test_worker_follows_current_and_jobs_keep_their_pinned_version(
    service_env: dict[str, str], settings: Any, s3_client: Any, start_worker: Any, tmp_path: Any
) -> None:
    s3_client.create_bucket(Bucket=BUCKET)
    upload_digits(s3_client, BUCKET, "incoming/", 96, seed=5)
    store = S3Store.from_settings(settings)
    first = train_and_register_digits(settings, store, NAME, str(tmp_path))
    assert first == f"{NAME}@v1"
    worker = start_worker("--cpu", "--concurrency", "1", env={"BV_MODEL_REFRESH_SECONDS": "2"})
    worker.wait_for_children(1)

    job_v1 = _submit(service_env, "one/")
    _wait(service_env, job_v1)
    lines, _ = read_job(s3_client, BUCKET, "one/", job_v1)
    assert Counter(line["model"] for line in lines) == {f"{NAME}@v1": 96}

    # A long job pinned to v1; v2 is promoted while it runs.
    pinned = _submit(service_env, "pinned/", "--batch-size", "4")
    registry = ModelRegistry(store, settings.models_uri)
    promoted_at = time.monotonic()
    second = register_model(
        registry,
        NAME,
        task="classify",
        path=os.path.join(tmp_path, "model.keras"),
        labels=[str(d) for d in range(10)],
        promote=True,
    )
    assert str(second) == f"{NAME}@v2"
    deadline = time.monotonic() + 60
    while "CURRENT moved v1 -> v2" not in worker.log() and time.monotonic() < deadline:
        time.sleep(0.25)
    noticed = time.monotonic() - promoted_at
    assert "CURRENT moved v1 -> v2" in worker.log(), worker.log()
    print(f"worker noticed the new CURRENT after {noticed:.1f} s (refresh every 2 s)")

    _wait(service_env, pinned)
    lines, summary = read_job(s3_client, BUCKET, "pinned/", pinned)
    assert summary["model"] == f"{NAME}@v1"
    assert Counter(line["model"] for line in lines) == {f"{NAME}@v1": 96}

    job_v2 = _submit(service_env, "two/")
    _wait(service_env, job_v2)
    lines, summary = read_job(s3_client, BUCKET, "two/", job_v2)
    assert summary["model"] == f"{NAME}@v2"
    assert Counter(line["model"] for line in lines) == {f"{NAME}@v2": 96}
    assert worker.process.poll() is None  # no restart happened
