"""What the Celery peers share: their app, the per-child model, decoding and results.

A peer is configured by environment variables, read when its worker starts:

* ``BENCH_PEER_BROKER``: Redis URL (broker and completion counters; no result backend)
* ``BENCH_PEER_S3``: the S3 endpoint URL (credentials from the usual ``AWS_*``)
* ``BENCH_PEER_MODEL``: path of the ``.keras`` file (the same file the service serves)
* ``BENCH_PEER_SHAPE``: ``H,W,C``; ``BENCH_PEER_PREPROCESS``: raw, unit or symmetric
* ``BENCH_PEER_THREADS``: TensorFlow intra-op threads per child (cores / children,
  as the service's worker gives its children)
* ``BENCH_PEER_READY``: a Redis key each child INCRs once its model is loaded

The model is loaded once per pool child in ``worker_process_init`` (TensorFlow
is not fork-safe) and its forward pass is one ``tf.function`` with a fixed
batch shape, so neither peer pays ``model.predict``'s per-call overhead.
Completion is counted with Redis INCRBY on the key named in each message.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from celery import Celery
from kombu import Exchange, Queue
from PIL import Image

LABELS = [str(digit) for digit in range(10)]
TOP_K = 5


def peer_app(name: str, queue: str, broker: str | None = None) -> Celery:
    """A Celery app on ``broker`` (default ``BENCH_PEER_BROKER``): JSON only, no results."""
    broker = broker or os.environ.get("BENCH_PEER_BROKER", "redis://127.0.0.1:6379/2")
    app = Celery(name, broker=broker, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        result_backend=None,
        task_queues=(Queue(queue, Exchange(queue, type="direct"), routing_key=queue),),
        task_default_queue=queue,
        broker_connection_retry_on_startup=True,
        # Loading TensorFlow and the model in worker_process_init takes longer than
        # Celery's default 4 s; past that the child would be killed and restarted.
        worker_proc_alive_timeout=300,
        worker_send_task_events=False,
    )
    return app


@dataclass(frozen=True)
class Spec:
    height: int
    width: int
    channels: int
    preprocess: str

    @property
    def mode(self) -> str:
        return "L" if self.channels == 1 else "RGB"


@dataclass
class ChildState:
    """One pool child's clients and compiled model."""

    spec: Spec
    s3: Any
    redis: Any
    forward: Any
    batch_size: int
    model_name: str


_state: ChildState | None = None


def spec_from_env() -> Spec:
    height, width, channels = (int(v) for v in os.environ["BENCH_PEER_SHAPE"].split(","))
    return Spec(height, width, channels, os.environ.get("BENCH_PEER_PREPROCESS", "raw"))


def s3_client(endpoint: str | None, pool: int = 32) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        max_pool_connections=pool,
        retries={"mode": "standard", "max_attempts": 8},
        s3={"addressing_style": "path"},
    )
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", config=config
    )


def load_child(batch_size: int) -> ChildState:
    """Called from ``worker_process_init``: TensorFlow, the model, a warm compiled forward."""
    global _state
    import redis
    import tensorflow as tf

    threads = int(os.environ.get("BENCH_PEER_THREADS", "1"))
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, threads)))
    import keras

    spec = spec_from_env()
    path = os.environ["BENCH_PEER_MODEL"]
    model = keras.saving.load_model(path, compile=False)
    forward = tf.function(
        lambda x: model(x, training=False),
        input_signature=[
            tf.TensorSpec((batch_size, spec.height, spec.width, spec.channels), tf.float32)
        ],
    )
    forward(np.zeros((batch_size, spec.height, spec.width, spec.channels), np.float32))
    client = redis.Redis.from_url(os.environ["BENCH_PEER_BROKER"])
    _state = ChildState(
        spec=spec,
        s3=s3_client(os.environ.get("BENCH_PEER_S3")),
        redis=client,
        forward=forward,
        batch_size=batch_size,
        model_name=os.path.basename(path).removesuffix(".keras"),
    )
    if os.environ.get("BENCH_PEER_READY"):
        client.incr(os.environ["BENCH_PEER_READY"])
    return _state


def state() -> ChildState:
    if _state is None:
        raise RuntimeError("the peer's model is loaded in worker_process_init; none here")
    return _state


def decode(data: bytes, spec: Spec) -> np.ndarray:
    """Pillow decode, convert, resize (bilinear) and scale: H x W x C float32."""
    with Image.open(io.BytesIO(data)) as opened:
        image = opened.convert(spec.mode)
    if image.size != (spec.width, spec.height):
        image = image.resize((spec.width, spec.height), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.float32)
    if pixels.ndim == 2:
        pixels = pixels[..., np.newaxis]
    if spec.preprocess == "unit":
        return pixels / 255.0
    if spec.preprocess == "symmetric":
        return pixels / 127.5 - 1.0
    return pixels


def infer(child: ChildState, pixels: np.ndarray) -> np.ndarray:
    """Probabilities for ``pixels`` (N x H x W x C), padded to the compiled batch shape."""
    count = len(pixels)
    padded = np.zeros((child.batch_size, *pixels.shape[1:]), np.float32)
    padded[:count] = pixels
    return np.asarray(child.forward(padded))[:count]


def result_json(key: str, model: str, probabilities: np.ndarray) -> bytes:
    """The service's classify result for one item: label, score, top-5."""
    order = np.argsort(-probabilities, kind="stable")[:TOP_K]
    top = [{"label": LABELS[i], "score": round(float(probabilities[i]), 6)} for i in order]
    document = {"key": key, "model": model, "task": "classify", **top[0], "top_k": top}
    return json.dumps(document).encode()


def route(bucket: str, input_prefix: str, output_prefix: str, output_bucket: str) -> dict[str, str]:
    """Where a peer's job reads and writes: the fields every one of its messages carries."""
    return {
        "bucket": bucket,
        "output_bucket": output_bucket,
        "input_prefix": input_prefix,
        "output_prefix": output_prefix,
    }


def output_key(message: dict[str, Any], key: str) -> str:
    """``<output prefix><key relative to the input prefix>.json``, as the service writes."""
    return message["output_prefix"] + key[len(message["input_prefix"]) :] + ".json"


def count_done(child: ChildState, message: dict[str, Any], done: int, errors: list[str]) -> None:
    """Add ``done`` items to the job's counter (and errors, with a few messages kept)."""
    pipe = child.redis.pipeline()
    if errors:
        pipe.incrby(message["counter"] + ":errors", len(errors))
        pipe.lpush(message["counter"] + ":messages", *errors[:5])
        pipe.ltrim(message["counter"] + ":messages", 0, 19)
    pipe.incrby(message["counter"], done)
    pipe.execute()
