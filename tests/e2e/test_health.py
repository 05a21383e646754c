"""``bucketvision health``: each check asks its own process, not only Redis.

Before a worker, watcher or beat runs on this host, each check exits 1 saying why; once
it runs, 0. (Redis answers throughout: a Redis-only ping would have said 0 every time.)
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from bucketvision.producer.health import WATCH_HEARTBEAT
from tests.helpers import run_cli, start_cli

pytestmark = pytest.mark.e2e


def _eventually_healthy(env: dict[str, str], check: str, seconds: float = 60) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        result = run_cli(env, "health", check)
        if result.returncode == 0 or time.monotonic() > deadline:
            return result
        time.sleep(1)


def test_each_check_asks_its_process(
    service_env: dict[str, str], s3_client: Any, digits_model: str, start_worker: Any,
    tmp_path: Path,
) -> None:  # fmt: skip
    WATCH_HEARTBEAT.unlink(missing_ok=True)
    for check in ("worker", "watcher", "beat"):
        before = run_cli(service_env, "health", check)
        assert before.returncode == 1 and "unhealthy:" in before.stderr, (check, before.stderr)

    worker = start_worker("--cpu", "--concurrency", "1")
    worker.wait_for_children(1)
    healthy = _eventually_healthy(service_env, "worker")
    assert healthy.returncode == 0, healthy.stderr + worker.log()[-2000:]

    s3_client.create_bucket(Bucket="e2e-health")
    schedule = tmp_path / "schedule.toml"
    schedule.write_text(
        '[[train]]\nname = "digits"\ntask = "classify"\n'
        'dataset = "s3://e2e-health/datasets/none/"\nevery = "1d"\n'
    )
    env = {**service_env, "BV_SCHEDULE_FILE": str(schedule)}
    watcher = start_cli(
        env, tmp_path / "watch.log", "watch", "--input", "s3://e2e-health/in/", "--task",
        "classify", "--output", "s3://e2e-health/out/", "--interval", "1",
    )  # fmt: skip
    beat = start_cli(env, tmp_path / "beat.log", "beat")
    try:
        for check in ("watcher", "beat"):
            healthy = _eventually_healthy(env, check)
            assert healthy.returncode == 0, check + healthy.stderr
    finally:
        for process in (watcher, beat):
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
    stale = run_cli(env, "health", "watcher", "--max-age", "0.001")
    assert stale.returncode == 1 and "last cycle was" in stale.stderr
