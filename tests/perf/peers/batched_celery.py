"""Peer: hand-rolled batched Celery, one task per 32 keys, stages run one after another.

Each task downloads its keys with a thread pool, decodes them with Pillow,
runs one forward pass over the batch (compiled, fixed batch shape, loaded once
per child in ``worker_process_init``), uploads one JSON per item with the thread
pool, and counts the batch done with a Redis INCRBY. Nothing overlaps: the next
batch starts downloading only when this one has uploaded. Celery's defaults
otherwise (early ack, prefetch 4).

    celery -A tests.perf.peers.batched_celery worker --concurrency 2 --pool prefork -Q bench-batched
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from celery.signals import worker_process_init

from tests.perf.peers import common

QUEUE = "bench-batched"
TASK = "bench.batched.classify_batch"
IO_THREADS = 16

app = common.peer_app("bench-batched", QUEUE)
_pool: ThreadPoolExecutor | None = None


@worker_process_init.connect(weak=False)
def _load_model(**_: object) -> None:
    global _pool
    common.load_child(batch_size=int(os.environ.get("BENCH_PEER_BATCH", "32")))
    _pool = ThreadPoolExecutor(IO_THREADS)


def messages(route: dict[str, str], keys: list[str], counter: str, batch_size: int = 32):  # type: ignore[no-untyped-def]
    """One message per ``batch_size`` keys, each with the job's ``route`` (:func:`common.route`)."""
    for start in range(0, len(keys), batch_size):
        yield {**route, "keys": keys[start : start + batch_size], "counter": counter}


@app.task(name=TASK)
def classify_batch(message: dict[str, Any]) -> None:
    child = common.state()
    assert _pool is not None  # nosec B101 - set in worker_process_init
    bucket, keys = message["bucket"], list(message["keys"])
    errors: list[str] = []

    def download(key: str) -> bytes | None:
        try:
            return child.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as error:
            errors.append(f"{key}: {type(error).__name__}: {error}")
            return None

    blobs = list(_pool.map(download, keys))
    decoded: list[tuple[str, np.ndarray]] = []
    for key, data in zip(keys, blobs, strict=True):
        if data is None:
            continue
        try:
            decoded.append((key, common.decode(data, child.spec)))
        except Exception as error:
            errors.append(f"{key}: {type(error).__name__}: {error}")
    if decoded:
        probabilities = common.infer(child, np.stack([pixels for _, pixels in decoded]))

        def upload(pair: tuple[str, np.ndarray]) -> None:
            key, scores = pair
            try:
                child.s3.put_object(
                    Bucket=message["output_bucket"],
                    Key=common.output_key(message, key),
                    Body=common.result_json(key, child.model_name, scores),
                    ContentType="application/json",
                )
            except Exception as error:
                errors.append(f"{key}: {type(error).__name__}: {error}")

        items = [(key, probabilities[i]) for i, (key, _) in enumerate(decoded)]
        list(_pool.map(upload, items))
    common.count_done(child, message, len(keys), errors)
