"""Shared fixtures: a real Redis and a real S3 HTTP endpoint (moto's server).

The Redis on 127.0.0.1:6379 is used when it answers (in a database of its own,
flushed at the start); otherwise one is started. moto's server always runs as a
child process on a free port. Integration and end-to-end tests talk to both
over the network, exactly as the service does.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from bucketvision.infra.local_services import ManagedProcess, redis_answers, start_moto, start_redis
from bucketvision.infra.s3 import S3Store
from bucketvision.infra.settings import Settings
from tests.helpers import aws_client, train_and_register_digits
from tests.workers import WorkerProcess

TEST_REDIS_DB = 11


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    base = os.environ.get("BV_TEST_REDIS_URL", "redis://127.0.0.1:6379")
    started: ManagedProcess | None = None
    if not redis_answers(f"{base}/0"):
        started = start_redis()
        base = started.url.rsplit("/", 1)[0]
    url = f"{base}/{TEST_REDIS_DB}"
    redis.Redis.from_url(url).flushdb()
    yield url
    if started:
        started.stop()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    moto = start_moto()
    yield moto.url
    moto.stop()


@pytest.fixture(scope="session")
def service_env(redis_url: str, s3_endpoint: str) -> dict[str, str]:
    """Environment for the service's processes in these tests."""
    environment = {
        "BV_BROKER_URL": redis_url,
        "BV_S3_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "BV_MODELS_URI": "s3://bv-test-models/models/",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    os.environ.update(environment)
    return environment


@pytest.fixture(scope="session")
def settings(service_env: dict[str, str]) -> Settings:
    return Settings.from_env(service_env)


@pytest.fixture(scope="session")
def s3_client(service_env: dict[str, str]):  # type: ignore[no-untyped-def]
    return aws_client(service_env, "s3")


@pytest.fixture(scope="session")
def digits_model(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> str:
    store = S3Store.from_settings(settings)
    return train_and_register_digits(settings, store, "digits", str(tmp_path_factory.mktemp("m")))


@pytest.fixture
def start_worker(service_env: dict[str, str], tmp_path: Path) -> Iterator[object]:
    started: list[WorkerProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> WorkerProcess:
        worker = WorkerProcess(
            {**service_env, **(env or {})}, tmp_path / f"worker{len(started)}.log", *args
        )
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
