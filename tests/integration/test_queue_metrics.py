"""bv_queue_depth and bv_queue_oldest_wait_seconds read from real kombu messages in Redis."""

from __future__ import annotations

import time

import pytest
import redis

from bucketvision.infra.batches import send_batches
from bucketvision.infra.messages import BatchMessage
from bucketvision.infra.queue import INFERENCE_QUEUE, TRAINING_QUEUE, make_celery
from bucketvision.infra.s3 import S3Uri
from bucketvision.infra.settings import Settings
from bucketvision.producer.queue_metrics import QueueCollector, enqueued_at

pytestmark = pytest.mark.integration


def _samples(collector: QueueCollector) -> dict[tuple[str, str], float]:
    return {
        (family.name, sample.labels["queue"]): sample.value
        for family in collector.collect()
        for sample in family.samples
    }


def test_depth_and_the_oldest_wait_of_each_queue(settings: Settings, broker: redis.Redis) -> None:
    uri = S3Uri("b", "in/")
    messages = [
        BatchMessage("queue-metrics", batch, "classify", ("in/a.png",), uri, uri, "m@v1")
        for batch in range(3)
    ]
    sent_at = time.time()
    send_batches(make_celery(settings), messages)
    assert enqueued_at(broker.lindex(INFERENCE_QUEUE, -1)) == pytest.approx(sent_at, abs=5)
    collector = QueueCollector(
        broker, (INFERENCE_QUEUE, TRAINING_QUEUE), clock=lambda: sent_at + 42
    )
    found = _samples(collector)
    assert found[("bv_queue_depth", INFERENCE_QUEUE)] == 3
    assert found[("bv_queue_oldest_wait_seconds", INFERENCE_QUEUE)] == pytest.approx(42, abs=5)
    assert found[("bv_queue_oldest_wait_seconds", TRAINING_QUEUE)] == 0.0
    assert enqueued_at(b"not kombu") is None


def test_redis_down_gives_no_sample_rather_than_a_failed_scrape() -> None:
    down = redis.Redis(port=1, socket_connect_timeout=0.2)
    assert list(QueueCollector(down, (INFERENCE_QUEUE,)).collect()) == []
