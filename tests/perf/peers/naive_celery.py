"""Peer: naive Celery, one task per image, no batching.

What most hand-rolled Celery services do: each task downloads one object,
decodes it with Pillow, runs the model on a batch of one (compiled, loaded once
per child in ``worker_process_init``), uploads one JSON result and counts itself
done with a Redis INCR. Celery's defaults otherwise (early ack, prefetch 4).

    celery -A tests.perf.peers.naive_celery worker --concurrency 2 --pool prefork -Q bench-naive
"""

from __future__ import annotations

from typing import Any

from celery.signals import worker_process_init

from tests.perf.peers import common

QUEUE = "bench-naive"
TASK = "bench.naive.classify_one"

app = common.peer_app("bench-naive", QUEUE)


@worker_process_init.connect(weak=False)
def _load_model(**_: object) -> None:
    common.load_child(batch_size=1)


def messages(route: dict[str, str], keys: list[str], counter: str):  # type: ignore[no-untyped-def]
    """One message per key, each with the job's ``route`` (:func:`common.route`)."""
    for key in keys:
        yield {
            **route,
            "key": key,
            "counter": counter,
        }


@app.task(name=TASK)
def classify_one(message: dict[str, Any]) -> None:
    child = common.state()
    key = message["key"]
    errors = []
    try:
        data = child.s3.get_object(Bucket=message["bucket"], Key=key)["Body"].read()
        pixels = common.decode(data, child.spec)
        probabilities = common.infer(child, pixels[None])[0]
        child.s3.put_object(
            Bucket=message["output_bucket"],
            Key=common.output_key(message, key),
            Body=common.result_json(key, child.model_name, probabilities),
            ContentType="application/json",
        )
    except Exception as error:  # counted, so the producer never waits forever
        errors.append(f"{key}: {type(error).__name__}: {error}")
    common.count_done(child, message, 1, errors)
