"""``make bench``: end-to-end throughput of a classify job on a local stack.

Starts moto's S3 server (and Redis where none answers), trains and registers
the seed CNN briefly, starts a worker with 2 CPU children, uploads N synthetic
digit PNGs and times submit -> finished. Prints a table and, as its last
line, one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3

from infra.jobs import JobStore
from infra.local_services import local_stack
from infra.queue import make_celery
from infra.s3 import S3Store
from infra.settings import Settings
from models.registry import ModelRegistry
from producer.status import wait_for_job
from producer.submit import JobRequest, submit_job
from tests.helpers import train_and_register_digits, upload_digits

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=2)
    options = parser.parse_args()
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench-secret",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "BV_MODELS_URI": "s3://bench-models/models/",
        }
    )
    base = Settings.from_env()
    with local_stack(base.broker_url, None) as (broker, endpoint):
        os.environ.update({"BV_BROKER_URL": broker, "BV_S3_ENDPOINT_URL": endpoint})
        settings = Settings.from_env()
        store = S3Store.from_settings(settings)
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        client.create_bucket(Bucket="bench")
        with tempfile.TemporaryDirectory() as directory:
            model = train_and_register_digits(settings, store, "bench-digits", directory)
        upload_digits(client, "bench", "digits/", options.images, seed=99)
        log = open(Path(tempfile.gettempdir()) / "bv-bench-worker.log", "wb")  # noqa: SIM115
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "producer.cli",
                "worker",
                "--cpu",
                "--concurrency",
                str(options.concurrency),
            ],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            jobs = JobStore.from_url(broker)
            clients = {
                "app": make_celery(settings),
                "store": store,
                "jobs": jobs,
                "registry": ModelRegistry(store, settings.models_uri),
            }
            # A warm-up job so the children have loaded TensorFlow and the model.
            warm = submit_job(
                JobRequest("classify", "s3://bench/digits/0/", "s3://bench/warm/", model), **clients
            )
            wait_for_job(jobs, warm.job_id, progress=False, timeout_seconds=300)
            start = time.perf_counter()
            job = submit_job(
                JobRequest("classify", "s3://bench/digits/", "s3://bench/out/", model), **clients
            )
            status = wait_for_job(jobs, job.job_id, progress=True, timeout_seconds=900)
            elapsed = time.perf_counter() - start
            summary = store.get_json("bench", f"out/_jobs/{job.job_id}/summary.json")
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=60)
    figures = {
        "images": options.images,
        "children": options.concurrency,
        "state": status["state"],
        "ok": summary["ok"],
        "wall_seconds": round(elapsed, 2),
        "images_per_second": round(options.images / elapsed, 1),
        "latency_ms": summary["latency_ms"],
        "stage_seconds": summary["stage_seconds"],
    }
    print(f"\n{'figure':28} value")
    for name, value in figures.items():
        print(f"{name:28} {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
