"""The service itself under the bench: pipeline runs, enqueue rate, listing rate, worker RSS.

Everything goes through the product's own code: ``bucketvision worker --cpu
--concurrency N`` in a subprocess, jobs sent with ``producer.submit.submit_job``
(list, pin, enqueue) and followed with ``producer.follow.wait``.
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery import Celery

from bucketvision.infra.jobs import JobStore
from bucketvision.infra.outputs import SUMMARY_FILE, job_file_key
from bucketvision.infra.queue import INFERENCE_QUEUE, make_celery
from bucketvision.infra.s3 import S3Store, S3Uri, parse_s3_uri
from bucketvision.infra.settings import Settings
from bucketvision.models.registry import ModelRegistry
from bucketvision.producer.follow import Patience, wait
from bucketvision.producer.status import followed_job
from bucketvision.producer.submit import (
    IMAGE_PATTERNS,
    JobRequest,
    enqueue_job,
    select_keys,
    submit_job,
)
from tests.workers import WorkerProcess

JOB_TIMEOUT_SECONDS = 1800
# Every contender writes here, apart from the corpora: moto lists a prefix by scanning its
# whole bucket, so outputs piling up beside the corpora would slow each later listing of
# them (S3 does not).
OUTPUT_BUCKET = "bench-out"


def bench_credentials() -> dict[str, str]:
    """Credentials for the bench's own moto server (the environment's own, if it has some)."""
    return {
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "bench"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "bench-secret"),
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def bench_environment(workdir: Path, models_uri: str, **more: str) -> None:
    """The environment every bench process shares: credentials for its own moto server,
    its registry, a model cache in ``workdir``, and ``more`` (``BV_*`` settings)."""
    os.environ.update(
        {
            **bench_credentials(),
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "BV_MODELS_URI": models_uri,
            "BV_MODEL_CACHE_DIR": str(workdir / "model-cache"),
            **more,
        }
    )


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Service:
    """The producer side's clients on one broker and S3."""

    settings: Settings
    app: Celery
    store: S3Store
    jobs: JobStore
    registry: ModelRegistry

    @classmethod
    def connect(cls, settings: Settings) -> Service:
        store = S3Store.from_settings(settings)
        return cls(
            settings,
            make_celery(settings),
            store,
            JobStore.from_url(settings.broker_url),
            ModelRegistry(store, settings.models_uri),
        )

    def clients(self) -> dict[str, Any]:
        return {"app": self.app, "store": self.store, "jobs": self.jobs, "registry": self.registry}


def start_worker(env: dict[str, str], log_path: Path, concurrency: int) -> WorkerProcess:
    """``bucketvision worker --cpu --concurrency N`` with its pool children up."""
    worker = WorkerProcess(env, log_path, "--cpu", "--concurrency", str(concurrency))
    worker.wait_for_children(concurrency, timeout=120)
    return worker


def loaded_in(worker: WorkerProcess, reference: str) -> set[str]:
    """PIDs whose log says they loaded ``reference`` (worker.runtime logs it at INFO)."""
    pattern = re.compile(rf"loaded model {re.escape(reference)} \(pid (\d+)\)")
    return set(pattern.findall(worker.full_log()))


def warm_up(
    service: Service,
    worker: WorkerProcess,
    reference: str,
    warm_input: str,
    output: str,
    concurrency: int,
    batch_size: int,
) -> None:
    """Small jobs until every pool child has loaded ``reference`` (at most 5 tries)."""
    for attempt in range(5):
        job = submit_job(
            JobRequest("classify", warm_input, f"{output}{attempt}/", reference, batch_size),
            **service.clients(),
        )
        patience = Patience(poll_seconds=0.1, stall_hint_seconds=30.0, timeout_seconds=600)
        status = wait(followed_job(service.jobs, job.job_id), progress=False, patience=patience)
        if status["state"] != "finished":
            raise RuntimeError(f"warm-up job {job.job_id} ended {status}")
        if len(loaded_in(worker, reference)) >= concurrency:
            return
    say(f"warning: could not confirm that all {concurrency} children loaded {reference}")


def run_pipeline(
    service: Service,
    reference: str,
    input_uri: str,
    output_uri: str,
    *,
    item_outputs: bool,
    batch_size: int,
    progress: bool = True,
) -> dict[str, Any]:
    """Submit to finished of one job, timed here; plus the job's own summary figures."""
    start = time.perf_counter()
    job = submit_job(
        JobRequest(
            "classify", input_uri, output_uri, reference, batch_size, item_outputs=item_outputs
        ),
        **service.clients(),
    )
    submitted = time.perf_counter()
    status = wait(
        followed_job(service.jobs, job.job_id),
        progress=progress,
        patience=Patience(0.02, stall_hint_seconds=30.0, timeout_seconds=JOB_TIMEOUT_SECONDS),
    )
    seconds = time.perf_counter() - start
    output = parse_s3_uri(output_uri)
    summary = service.store.get_json(output.bucket, job_file_key(output, job.job_id, SUMMARY_FILE))
    if status["state"] != "finished" or summary["ok"] != job.total:
        raise RuntimeError(
            f"job {job.job_id} ended {status['state']} with ok={summary['ok']} of {job.total}: "
            f"{summary.get('errors_by_type')} {status.get('failure', '')}"
        )
    return {
        "seconds": seconds,
        "items": job.total,
        "images_per_second": job.total / seconds,
        "submit_seconds": submitted - start,
        "job_id": job.job_id,
        "summary_wall_seconds": summary["wall_seconds"],
        "latency_ms": summary["latency_ms"],
        "stage_seconds": summary["stage_seconds"],
    }


def enqueue_rate(
    settings: Settings, broker_url: str, keys: int, batch_size: int, reference: str
) -> dict[str, Any]:
    """Keys/s of ``enqueue_job`` for ``keys`` synthetic keys on ``broker_url``, nothing consuming.

    ``broker_url`` must be a Redis database no worker listens on; it is flushed after.
    """
    import redis

    names = [f"synthetic/{index % 100:02d}/{index:06d}.png" for index in range(keys)]
    isolated = settings.with_overrides(broker_url=broker_url)
    app = make_celery(isolated)
    jobs = JobStore.from_url(broker_url)
    store = S3Store.from_settings(isolated)
    output = S3Uri(OUTPUT_BUCKET, "out/enqueue/")
    store.ensure_bucket(output.bucket)  # the job's plan is written there
    client = redis.Redis.from_url(broker_url)
    try:
        start = time.perf_counter()
        job = enqueue_job(
            app,
            jobs,
            store,
            "classify",
            names,
            S3Uri("bench", "synthetic/"),
            output,
            reference,
            batch_size=batch_size,
            window=isolated.job_window,
        )
        seconds = time.perf_counter() - start
        queued = int(client.llen(INFERENCE_QUEUE))
        expected = min(isolated.job_window, job.batches)  # only the feeding window is sent
        if queued != expected:
            raise RuntimeError(
                f"{queued} messages on the queue for {job.batches} batches "
                f"(window {isolated.job_window}: {expected} expected)"
            )
    finally:
        client.flushdb()
        app.close()
    return {"seconds": seconds, "keys": keys, "keys_per_second": keys / seconds}


def listing_rate(service: Service, input_uri: str) -> dict[str, Any]:
    """Keys/s of the producer's listing and filtering of ``input_uri``."""
    uri = parse_s3_uri(input_uri)
    output = S3Uri(uri.bucket, "results/")
    start = time.perf_counter()
    keys = list(
        select_keys((i.key for i in service.store.list_objects(uri)), uri, output, IMAGE_PATTERNS)
    )
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "keys": len(keys), "keys_per_second": len(keys) / seconds}


def vm_rss_kib(pid: int) -> int | None:
    """VmRSS of ``pid`` in KiB from /proc, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def rss_run(
    service: Service,
    worker: WorkerProcess,
    reference: str,
    keys: list[str],
    input_uri: str,
    output_uri: str,
    *,
    images: int,
    warm_images: int,
    batch_size: int,
) -> dict[str, Any]:
    """Pool children's RSS after ``warm_images`` and at the end of an ``images``-item job.

    The job is the corpus' keys repeated (enqueued directly, item outputs on).
    """
    repeated = (keys * math.ceil(images / len(keys)))[:images]
    job = enqueue_job(
        service.app,
        service.jobs,
        service.store,
        "classify",
        repeated,
        parse_s3_uri(input_uri),
        parse_s3_uri(output_uri),
        reference,
        batch_size=batch_size,
    )
    start = time.perf_counter()
    warm: dict[int, int | None] = {}
    while True:
        record = service.jobs.get(job.job_id)
        done = int(record.get("ok", 0)) + int(record.get("error", 0))
        if not warm and done >= warm_images:
            warm = {pid: vm_rss_kib(pid) for pid in worker.children()}
            say(f"RSS after {done} images: {warm} KiB")
        if record.get("state") in ("finished", "failed"):
            break
        if time.perf_counter() - start > JOB_TIMEOUT_SECONDS:
            raise TimeoutError(f"RSS job {job.job_id} did not finish")
        time.sleep(0.1)
    seconds = time.perf_counter() - start
    end = {pid: vm_rss_kib(pid) for pid in worker.children()}
    say(f"RSS after {images} images: {end} KiB")
    if set(end) != set(warm):
        raise RuntimeError(f"pool children changed during the run: {sorted(warm)} -> {sorted(end)}")
    growth = {
        str(pid): (end[pid] - warm[pid]) / warm[pid] * 100.0  # type: ignore[operator]
        for pid in end
        if warm.get(pid) and end.get(pid)
    }
    return {
        "images": images,
        "warm_after_images": warm_images,
        "rss_warm_kib": {str(pid): value for pid, value in warm.items()},
        "rss_end_kib": {str(pid): value for pid, value in end.items()},
        "growth_percent": growth,
        "max_growth_percent": max(growth.values()) if growth else None,
        "state": record.get("state"),
        "ok": int(record.get("ok", 0)),
        "seconds": seconds,
        "images_per_second": images / seconds,
    }
