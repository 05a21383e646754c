"""JSON only on the wire: a pickled task message is refused by the worker, never run."""

from __future__ import annotations

import time
from typing import Any

import pytest
from kombu import Connection, Exchange, Producer

pytestmark = pytest.mark.e2e


def test_a_pickled_message_is_refused(
    service_env: dict[str, str], settings: Any, start_worker: Any
) -> None:
    from bucketvision.infra.jobs import JobStore

    worker = start_worker("--cpu", "--concurrency", "1")
    worker.wait_for_children(1)
    jobs = JobStore.from_url(settings.broker_url)
    jobs.create("pickle-job", {"task": "classify", "total": 1, "batches": 1})
    body = (
        [
            {
                "job_id": "pickle-job",
                "batch": 0,
                "task": "classify",
                "keys": ["x.png"],
                "input": "s3://nowhere/in/",
                "output": "s3://nowhere/out/",
                "model": "digits@v1",
            }
        ],
        {},
        {"callbacks": None, "errbacks": None, "chain": None, "chord": None},
    )
    headers = {
        "lang": "py",
        "task": "bucketvision.classify",
        "id": "pickled-1",
        "argsrepr": "()",
        "kwargsrepr": "{}",
        "origin": "test",
    }
    with Connection(settings.broker_url) as connection:
        Producer(connection).publish(
            body,
            exchange=Exchange("inference", type="direct"),
            routing_key="inference",
            serializer="pickle",
            headers=headers,
            declare=[],
        )
    deadline = time.monotonic() + 30
    while "untrusted content" not in worker.log() and time.monotonic() < deadline:
        time.sleep(0.3)
    assert "Refusing to deserialize untrusted content of type pickle" in worker.log(), worker.log()
    time.sleep(1)
    record = jobs.get("pickle-job")
    assert record["done_batches"] == 0 and record["state"] == "queued"  # never run
    assert worker.process.poll() is None  # and the worker carries on
