"""The drop folder end to end: drops, a watcher restart, an overwrite, --once, --move-to."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bucketvision.infra.outputs import parse_jsonl
from bucketvision.models.digits import make_digits
from tests.helpers import png_bytes, run_cli, start_cli

pytestmark = pytest.mark.e2e


def _start_watcher(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    return start_cli(env, log, "watch", *args)


def _stop(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    assert process.wait(timeout=60) == 0


def _manifest_keys(s3_client: Any, bucket: str, prefix: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    listed = s3_client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}_jobs/")
    for entry in listed.get("Contents", []):
        if entry["Key"].endswith("manifest.jsonl"):
            body = s3_client.get_object(Bucket=bucket, Key=entry["Key"])["Body"].read()
            counts.update(row["key"] for row in parse_jsonl(body.decode()))
    return counts


def test_drop_folder_processes_each_object_version_exactly_once(
    service_env: dict[str, str],
    s3_client: Any,
    digits_model: str,
    start_worker: Any,
    tmp_path: Path,
) -> None:
    bucket = "e2e-watch"
    s3_client.create_bucket(Bucket=bucket)
    worker = start_worker("--cpu", "--concurrency", "2")
    worker.wait_for_children(2)
    args = (
        f"s3://{bucket}/incoming/",
        "--task",
        "classify",
        "--output",
        f"s3://{bucket}/results/",
        "--interval",
        "1",
        "--rescan-seconds",
        "3",
    )
    log = tmp_path / "watch.log"
    watcher = _start_watcher(service_env, log, *args)
    images, _ = make_digits(61, seed=404)
    dropped: dict[str, float] = {}
    seen: dict[str, float] = {}
    done = threading.Event()

    def poll_results() -> None:
        while not done.is_set():
            listed = s3_client.list_objects_v2(Bucket=bucket, Prefix="results/")
            now = time.monotonic()
            for entry in listed.get("Contents", []):
                key = "incoming/" + entry["Key"][len("results/") :].removesuffix(".json")
                if entry["Key"].endswith(".json") and key not in seen:
                    seen[key] = now
            time.sleep(0.1)

    poller = threading.Thread(target=poll_results, daemon=True)
    poller.start()
    for index in range(60):
        key = f"incoming/{index:03d}.png"
        s3_client.put_object(Bucket=bucket, Key=key, Body=png_bytes(images[index]))
        dropped[key] = time.monotonic()
        if index == 29:  # restart the watcher halfway
            _stop(watcher)
            watcher = _start_watcher(service_env, log, *args)
        time.sleep(0.5)
    # Overwrite one object with new content: a new ETag, so it is processed again.
    s3_client.put_object(Bucket=bucket, Key="incoming/007.png", Body=png_bytes(images[60]))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        counts = _manifest_keys(s3_client, bucket, "results/")
        if sum(counts.values()) >= 61 and len(seen) >= 60:
            break
        time.sleep(1)
    time.sleep(4)  # a rescan or two more: nothing may be processed twice
    done.set()
    _stop(watcher)
    counts = _manifest_keys(s3_client, bucket, "results/")
    expected = Counter(dropped.keys()) + Counter({"incoming/007.png": 1})
    assert counts == expected, (counts - expected, expected - counts, log.read_text()[-3000:])
    latencies = sorted(seen[key] - dropped[key] for key in dropped)
    p50, p95 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.95)]
    # Printed, not asserted: a latency bound in a test fails on a loaded machine (it did,
    # at p50 15.9 s with two other test runs beside it); the benchmark measures it.
    print(f"drop-to-result latency over 60 objects: p50 {p50:.2f} s, p95 {p95:.2f} s")


def test_watch_once_moves_processed_and_failed_inputs(
    service_env: dict[str, str],
    s3_client: Any,
    digits_model: str,
    start_worker: Any,
) -> None:
    bucket = "e2e-watch-once"
    s3_client.create_bucket(Bucket=bucket)
    images, _ = make_digits(5, seed=405)
    for index in range(5):
        s3_client.put_object(Bucket=bucket, Key=f"in/{index}.png", Body=png_bytes(images[index]))
    s3_client.put_object(Bucket=bucket, Key="in/bad.png", Body=b"not an image")
    worker = start_worker("--cpu", "--concurrency", "1")
    worker.wait_for_children(1)
    args = (
        "watch",
        f"s3://{bucket}/in/",
        "--task",
        "classify",
        "--output",
        f"s3://{bucket}/out/",
        "--move-to",
        f"s3://{bucket}/done/",
        "--once",
    )
    finished = run_cli(service_env, *args)
    assert finished.returncode == 0, finished.stderr + worker.log()
    keys = {e["Key"] for e in s3_client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert not any(key.startswith("in/") for key in keys)
    assert {f"done/{i}.png" for i in range(5)} <= keys
    assert {"done/failed/bad.png", "done/failed/bad.png.error.json"} <= keys
    error = json.loads(
        s3_client.get_object(Bucket=bucket, Key="done/failed/bad.png.error.json")["Body"].read()
    )
    assert error["error"]["type"] == "UnsupportedFormat"
    again = run_cli(service_env, *args)  # nothing left: exits at once, nothing enqueued
    assert again.returncode == 0 and "0 objects enqueued" in again.stderr


def test_watch_errors_are_clear(service_env: dict[str, str], digits_model: str) -> None:
    missing = run_cli(
        service_env,
        "watch",
        "s3://no-such-bucket/in/",
        "--task",
        "classify",
        "--output",
        "s3://no-such-bucket/out/",
        "--once",
    )
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    model = run_cli(
        service_env,
        "watch",
        "s3://bv-test-models/in/",
        "--task",
        "classify",
        "--output",
        "s3://bv-test-models/out/",
        "--model",
        "nope",
        "--once",
    )
    assert model.returncode == 2 and "no model named 'nope'" in model.stderr


def test_two_watchers_on_one_prefix_share_the_work_without_duplicates(
    service_env: dict[str, str],
    s3_client: Any,
    digits_model: str,
    start_worker: Any,
    tmp_path: Path,
) -> None:
    bucket = "e2e-watch-two"
    s3_client.create_bucket(Bucket=bucket)
    images, _ = make_digits(40, seed=406)
    for index in range(40):
        s3_client.put_object(
            Bucket=bucket, Key=f"in/{index:02d}.png", Body=png_bytes(images[index])
        )
    worker = start_worker("--cpu", "--concurrency", "2")
    worker.wait_for_children(2)
    args = (
        f"s3://{bucket}/in/",
        "--task",
        "classify",
        "--output",
        f"s3://{bucket}/out/",
        "--once",
        "--batch-size",
        "4",
    )
    watchers = [_start_watcher(service_env, tmp_path / f"w{i}.log", *args) for i in range(2)]
    assert [watcher.wait(timeout=180) for watcher in watchers] == [0, 0]
    counts = _manifest_keys(s3_client, bucket, "out/")
    assert counts == Counter(f"in/{index:02d}.png" for index in range(40))


def test_backpressure_waits_instead_of_enqueueing(
    service_env: dict[str, str], settings: Any, s3_client: Any, digits_model: str
) -> None:
    from bucketvision.infra.jobs import JobStore
    from bucketvision.infra.queue import make_celery
    from bucketvision.infra.s3 import S3Store
    from bucketvision.models.registry import ModelRegistry
    from bucketvision.producer.watch import Watcher, WatchRequest

    bucket = "e2e-watch-pressure"
    s3_client.create_bucket(Bucket=bucket)
    s3_client.put_object(Bucket=bucket, Key="in/a.png", Body=png_bytes(make_digits(1, 1)[0][0]))
    store = S3Store.from_settings(settings)
    jobs = JobStore.from_url(settings.broker_url)
    reports: list[str] = []
    watcher = Watcher(
        WatchRequest(f"s3://{bucket}/in/", "classify", f"s3://{bucket}/out/", max_in_flight=3),
        app=make_celery(settings),
        store=store,
        jobs=jobs,
        registry=ModelRegistry(store, settings.models_uri),
        report=reports.append,
    )
    jobs.create("pressure-job", {"task": "classify", "total": 5, "batches": 1})
    watcher.state.jobs.append("pressure-job")  # 5 unfinished items, above the limit of 3
    assert watcher.cycle() is None
    assert reports == ["waiting: 5 items in flight (--max-in-flight)"]
    jobs.mark_finished("pressure-job", "finished", time.time())
    assert watcher.cycle() is not None  # room again: the object is claimed and enqueued


def test_watch_once_exits_1_when_a_job_it_ran_failed(
    service_env: dict[str, str], s3_client: Any, start_worker: Any, tmp_path: Path
) -> None:
    """A model file that cannot load fails the job: ``--once`` says so and exits 1."""
    from bucketvision.infra.s3 import S3Store
    from bucketvision.infra.settings import Settings
    from bucketvision.models.registry import ModelRegistry

    bucket = "e2e-watch-fails"
    s3_client.create_bucket(Bucket=bucket)
    broken = tmp_path / "model.keras"
    broken.write_bytes(b"not a Keras file")
    settings = Settings.from_env(service_env)
    card = {"task": "classify", "input_shape": [28, 28, 1], "labels": ["0", "1"]}
    ModelRegistry(S3Store.from_settings(settings), settings.models_uri).add_version(
        "broken-watch", str(broken), card
    )
    images, _ = make_digits(3, seed=7)
    for index in range(3):
        s3_client.put_object(Bucket=bucket, Key=f"in/{index}.png", Body=png_bytes(images[index]))
    worker = start_worker("--cpu", "--concurrency", "1")
    worker.wait_for_children(1)
    ran = run_cli(
        service_env, "watch", "--input", f"s3://{bucket}/in/", "--task", "classify",
        "--output", f"s3://{bucket}/out/", "--model", "broken-watch", "--once",
    )  # fmt: skip
    assert ran.returncode == 1, ran.stderr + worker.log()[-2000:]
    assert "jobs that did not finish" in ran.stderr
