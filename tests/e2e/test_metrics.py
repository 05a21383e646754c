"""Prometheus metrics and JSON logs of a real worker, scraped during and after a classify job."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from bucketvision.infra.local_services import free_port
from tests.helpers import bad_files, printed_job_id, start_cli, submit_cli, upload_digits

pytestmark = pytest.mark.e2e

Samples = list[tuple[str, dict[str, str], float]]


def scrape(port: int) -> Samples:
    """Every sample served at ``/metrics`` (the sum over the pool's children)."""
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return [
        (sample.name, dict(sample.labels), float(sample.value))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(
        value
        for sample_name, sample_labels, value in samples
        if sample_name == name and labels.items() <= sample_labels.items()
    )


def wait_for(check: Callable[[], Any], what: str, timeout: float, log: Callable[[], str]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout} s\n{log()}")


def test_metrics_and_json_logs_of_a_classify_job(
    service_env, s3_client, digits_model, start_worker
) -> None:
    bucket = "e2e-metrics"
    s3_client.create_bucket(Bucket=bucket)
    upload_digits(s3_client, bucket, "incoming/", 100, seed=91)
    for name, (body, _) in bad_files().items():
        s3_client.put_object(Bucket=bucket, Key=f"incoming/bad/{name}", Body=body)
    port = free_port()
    worker = start_worker(
        "--cpu",
        "--concurrency",
        "2",
        env={"BV_METRICS_PORT": str(port), "BV_LOG_FORMAT": "json"},
    )
    worker.wait_for_children(2)
    wait_for(
        lambda: worker.full_log().count('"pool child') >= 2 and " ready." in worker.full_log(),
        "the worker's children did not start",
        120,
        worker.log,
    )
    idle = scrape(port)
    assert total(idle, "bv_items_total") == 0
    offset = len(worker.full_log())

    submitted = submit_cli(
        service_env,
        f"s3://{bucket}/incoming/",
        f"s3://{bucket}/out/",
        "--batch-size",
        "16",
    )
    assert submitted.returncode == 0, submitted.stderr
    job_id = printed_job_id(submitted)
    jobs = redis.Redis.from_url(service_env["BV_BROKER_URL"])
    during: list[float] = []  # items counted at each scrape while the job ran
    deadline = time.monotonic() + 240
    while jobs.hget(f"bv:job:{job_id}", "state") not in (b"finished", b"failed"):
        assert time.monotonic() < deadline, worker.log()
        during.append(total(scrape(port), "bv_items_total", task="classify"))
        time.sleep(0.05)
    assert during, "no scrape while the job ran"
    assert during == sorted(during)  # counters only grow

    # The last batch is recorded right after it finalised the job (by its task's hook or,
    # finished behind its task, by its finisher); bv_tasks_total counts it last. A scrape
    # reads the children's files one at a time (counters, histograms, ...), so the one that
    # first shows the count may have read a histogram file before the record's writes to
    # it: the figures come from the next scrape, begun after every write of the record.
    wait_for(
        lambda: total(scrape(port), "bv_tasks_total", task="classify") >= 7,
        "the last batch was not recorded",
        30,
        worker.log,
    )
    final = scrape(port)
    assert total(final, "bv_items_total", task="classify", status="ok") == 100
    assert total(final, "bv_items_total", task="classify", status="error") == 6
    assert total(final, "bv_items_total", task="classify", status="skipped") == 0
    batches = 7  # 106 keys in batches of 16
    for stage in ("download", "decode", "infer", "upload"):
        assert total(final, "bv_stage_seconds_count", task="classify", stage=stage) == batches
        assert total(final, "bv_stage_seconds_sum", task="classify", stage=stage) > 0
    assert total(final, "bv_batch_size_count", task="classify") == batches
    assert total(final, "bv_batch_size_sum", task="classify") == 106
    assert total(final, "bv_batch_seconds_count", task="classify") == batches
    wait = {"queue": "inference", "task": "classify"}
    assert total(final, "bv_queue_wait_seconds_count", **wait) == batches
    assert total(final, "bv_queue_wait_seconds_sum", **wait) > 0
    name, version = digits_model.split("@")
    info = {"model": name, "version": version, "task": "classify"}
    assert total(final, "bv_model_info", **info) == 1
    assert total(final, "bv_jobs_finished_total", task="classify", state="finished") == 1
    assert total(final, "bv_tasks_total", task="classify", state="success") == batches
    assert total(final, "bv_dead_letter_batches_total") == 0

    log_text = worker.full_log()[offset:]
    lines = [line for line in log_text.splitlines() if line.strip()]
    entries = []
    for line in lines:
        try:
            entries.append(json.loads(line))
        except ValueError:
            pytest.fail(f"a worker log line is not JSON: {line!r}\n{worker.log()}")
    assert all({"ts", "level", "logger", "message", "process"} <= set(e) for e in entries)
    of_job = [e for e in entries if e.get("job_id") == job_id]
    succeeded = [e for e in of_job if "succeeded" in e["message"]]
    received = [e for e in of_job if "received" in e["message"]]
    assert sorted(e["batch"] for e in succeeded) == list(range(batches)), log_text[-3000:]
    assert sorted(e["batch"] for e in received) == list(range(batches)), log_text[-3000:]
    for entry in entries:
        if entry.get("process_name", "").startswith("ForkPoolWorker"):
            # In a pool child, every line during the job belongs to one of its batches.
            assert entry.get("job_id") == job_id and isinstance(entry.get("batch"), int), entry
    print(
        f"\nscraped during the job: {during[:3]}...{during[-3:]} ({len(during)} scrapes); "
        f"after: ok={total(final, 'bv_items_total', status='ok'):.0f} "
        f"error={total(final, 'bv_items_total', status='error'):.0f} "
        f"queue wait sum={total(final, 'bv_queue_wait_seconds_sum', **wait):.3f} s; "
        + " ".join(
            f"{stage}={total(final, 'bv_stage_seconds_sum', stage=stage):.3f}s"
            f"/{total(final, 'bv_stage_seconds_count', stage=stage):.0f}"
            for stage in ("download", "decode", "infer", "upload")
        )
        + f"; batch sizes {total(final, 'bv_batch_size_sum'):.0f}"
        f"/{total(final, 'bv_batch_size_count'):.0f}; model_info {digits_model}; "
        f"{len(entries)} JSON log lines, {len(of_job)} with job_id"
    )


def test_the_watcher_exports_its_metrics(
    service_env, s3_client, digits_model, start_worker, tmp_path
) -> None:
    bucket = "e2e-watch-metrics"
    s3_client.create_bucket(Bucket=bucket)
    worker = start_worker("--cpu", "--concurrency", "1")
    worker.wait_for_children(1)
    port = free_port()
    log_path = tmp_path / "watch.log"
    watcher = start_cli(
        {**service_env, "BV_METRICS_PORT": str(port), "BV_LOG_FORMAT": "json"},
        log_path,
        *("watch", f"s3://{bucket}/incoming/", "--task", "classify"),
        *("--output", f"s3://{bucket}/results/", "--interval", "0.5"),
    )  # the digits land in no key order: a small prefix is listed whole every cycle
    try:

        def watcher_log() -> str:
            return log_path.read_text(errors="replace")[-4000:] + worker.log()

        wait_for(lambda: _answers(port), "the watcher's /metrics did not answer", 60, watcher_log)
        upload_digits(s3_client, bucket, "incoming/", 10, seed=92)
        enqueued = wait_for(
            lambda: (s := scrape(port)) and total(s, "bv_watcher_enqueued_total") == 10 and s,
            "the watcher did not enqueue the 10 objects",
            60,
            watcher_log,
        )
        # Anywhere from 10 (none finished yet) to 0 (all finished) when the scrape lands.
        assert 0 <= total(enqueued, "bv_watcher_in_flight") <= 10
        wait_for(
            lambda: len(_results(s3_client, bucket)) == 10,
            "the 10 results were not written",
            120,
            watcher_log,
        )
        settled = wait_for(
            lambda: (s := scrape(port)) and total(s, "bv_watcher_in_flight") == 0 and s,
            "the watcher's items were not finished",
            120,
            watcher_log,
        )
    finally:
        os.killpg(watcher.pid, signal.SIGTERM)
        watcher.wait(timeout=60)
    assert total(settled, "bv_watcher_cycles_total") >= 2
    assert total(settled, "bv_watcher_jobs_total") >= 1
    assert total(settled, "bv_watcher_cycle_seconds_count") >= 2
    assert total(settled, "bv_watcher_errors_total") == 0
    assert total(settled, "bv_producer_items_enqueued_total", task="classify") == 10
    assert total(settled, "bv_producer_jobs_total", task="classify") >= 1
    batches = {"task": "classify", "queue": "inference"}
    assert total(settled, "bv_producer_batches_enqueued_total", **batches) >= 1
    lines = [line for line in log_path.read_text().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every watcher line is JSON
    assert any("new objects with" in entry["message"] for entry in entries), lines


def _answers(port: int) -> bool:
    try:
        scrape(port)
    except OSError:
        return False
    return True


def _results(s3_client: Any, bucket: str) -> list[str]:
    listed = s3_client.list_objects_v2(Bucket=bucket, Prefix="results/")
    return [item["Key"] for item in listed.get("Contents", []) if item["Key"].endswith(".png.json")]
