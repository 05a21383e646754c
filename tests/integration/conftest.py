"""Fixtures for the integration tests: a registered model card and the producer's clients."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from kombu.transport.redis import Channel

from bucketvision.infra.jobs import JobStore
from bucketvision.infra.queue import INFERENCE_QUEUE, make_celery
from bucketvision.infra.s3 import S3Store
from bucketvision.infra.settings import Settings
from bucketvision.models.registry import ModelRegistry


@pytest.fixture(scope="session")
def fake_model(settings: Settings, s3_client: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A registry entry for producer tests (the producer only reads the card)."""
    store = S3Store.from_settings(settings)
    registry = ModelRegistry(store, settings.models_uri)
    path = tmp_path_factory.mktemp("model") / "model.keras"
    path.write_bytes(b"not used by the producer")
    ref = registry.add_version(
        "submit-test",
        str(path),
        {
            "task": "classify",
            "input_shape": [28, 28, 1],
            "labels": ["a", "b"],
            "preprocess": "unit",
        },
    )
    return str(ref)


@pytest.fixture(scope="session")
def producer_clients() -> Callable[[Settings], dict[str, Any]]:
    """``producer_clients(settings)``: the app, store, job store and registry a producer uses."""

    def make(settings: Settings) -> dict[str, Any]:
        store = S3Store.from_settings(settings)
        return {
            "app": make_celery(settings),
            "store": store,
            "jobs": JobStore.from_url(settings.broker_url),
            "registry": ModelRegistry(store, settings.models_uri),
        }

    return make


@pytest.fixture
def broker(settings: Settings) -> Iterator[redis.Redis]:
    """The broker's Redis with the inference queue and unacked messages cleared around a test."""
    client = redis.Redis.from_url(settings.broker_url)
    client.delete(INFERENCE_QUEUE, Channel.unacked_key)
    yield client
    client.delete(INFERENCE_QUEUE, Channel.unacked_key)
