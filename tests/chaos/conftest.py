"""Chaos fixtures: a Redis of our own to restart, a proxy to cut S3, poisonable workers.

Every test here breaks something on purpose and then checks the promise the
service makes: every input appears exactly once in the manifest, the counts
add up, and the summary says what happened.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.services import RestartableRedis
from tests.tcp_proxy import TcpProxy
from tests.workers import WorkerProcess

pytestmark = pytest.mark.chaos

REDIS_PASSWORD = "chaos-Pa55word"  # a secret that must never show up in logs or manifests


@pytest.fixture
def chaos_redis() -> Iterator[RestartableRedis]:
    server = RestartableRedis(password=REDIS_PASSWORD)
    yield server
    server.close()


@pytest.fixture
def s3_proxy(s3_endpoint: str) -> Iterator[TcpProxy]:
    target = urlsplit(s3_endpoint)
    proxy = TcpProxy(str(target.hostname), int(target.port or 80))
    yield proxy
    proxy.close()


@pytest.fixture
def chaos_env(service_env: dict[str, str], chaos_redis: RestartableRedis) -> dict[str, str]:
    """The service on the private Redis: short visibility timeout and audit, few attempts."""
    return {
        **service_env,
        "BV_BROKER_URL": chaos_redis.url,
        "BV_VISIBILITY_TIMEOUT": "20",
        "BV_MAX_ATTEMPTS": "2",
        # A message Redis drops as it goes down (between kombu's BRPOP and its
        # bookkeeping) is sent again within the tests' patience.
        "BV_LOST_BATCH_SECONDS": "30",
    }


@pytest.fixture
def start_faulty_worker(tmp_path: Path) -> Iterator[Any]:
    """Start ``tests.chaos.faulty_worker`` processes; all are stopped afterwards."""
    started: list[WorkerProcess] = []

    def start(env: dict[str, str], *args: str, before_exec: Any = None) -> WorkerProcess:
        worker = WorkerProcess(
            env,
            tmp_path / f"worker{len(started)}.log",
            *args,
            module="tests.chaos.faulty_worker",
            before_exec=before_exec,
        )
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def assert_each_input_once(lines: list[dict], summary: dict, expected_keys: set[str]) -> None:
    """Nothing lost, nothing duplicated, and the counts add up."""
    counts = Counter(line["key"] for line in lines)
    lost = expected_keys - set(counts)
    duplicated = {key for key, count in counts.items() if count > 1}
    assert not lost, f"lost {len(lost)}: {sorted(lost)[:5]}"
    assert not duplicated, f"duplicated {len(duplicated)}: {sorted(duplicated)[:5]}"
    assert set(counts) == expected_keys
    assert summary["total"] == len(expected_keys)
    assert summary["ok"] + summary["error"] + summary["skipped"] == summary["total"]
    statuses = Counter(line["status"] for line in lines)
    assert (statuses["ok"], statuses["error"]) == (summary["ok"], summary["error"])


def wait_until(ready: Callable[[], bool], deadline: float, stuck: Callable[[], str]) -> None:
    """Until ``ready()``; past ``deadline`` (monotonic), fail saying ``stuck()``."""
    while not ready():
        assert time.monotonic() < deadline, stuck()
        time.sleep(0.1)
