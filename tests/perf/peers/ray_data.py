"""Peer: Ray Data ``map_batches`` over the same objects with the same model.

``ray.data.from_items(keys).map_batches(Classify, ...)`` with a pool of
``--concurrency`` actors (one CPU each) and ``batch_size=32``. Each actor loads
the same ``.keras`` file once, compiles its forward pass with a fixed batch
shape, and for every batch downloads the objects with boto3 (a thread pool),
decodes them with Pillow, runs the model and writes one JSON result per item.
The driver lists the prefix and consumes the results.

Run 1 is *cold*: timed from ``ray.init`` (ray is imported, not started) to the
last result, so it includes starting Ray and the actors. Run 2 is *warm*: a
second job in the same Ray session (Ray starts the job's actors again).

    python -m tests.perf.peers.ray_data --model M.keras --shape 28,28,1 ...

The last stdout line is ``BENCH {"runs": [{"seconds", "items", "kind"}...]}``,
or ``BENCH {"skipped": "..."}`` when Ray is not installed (``pip install
'.[bench]'``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
PROTOCOL = "BENCH"


class Classify:
    """A Ray Data callable class: one per actor, the model loaded once."""

    def __init__(
        self,
        *,
        model_path: str,
        shape: tuple[int, int, int],
        preprocess: str,
        batch_size: int,
        threads: int,
        endpoint: str,
        bucket: str,
        input_prefix: str,
        output_prefix: str,
        output_bucket: str | None = None,
    ) -> None:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, threads)))
        import keras

        from tests.perf.peers import common

        self.common = common
        self.spec = common.Spec(*shape, preprocess)
        self.batch_size = batch_size
        model = keras.saving.load_model(model_path, compile=False)
        self.forward = tf.function(
            lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec((batch_size, *shape), tf.float32)],
        )
        self.forward(np.zeros((batch_size, *shape), np.float32))
        self.s3 = common.s3_client(endpoint)
        self.pool = ThreadPoolExecutor(16)
        self.bucket = bucket
        self.output_bucket = output_bucket or bucket
        self.message = {"input_prefix": input_prefix, "output_prefix": output_prefix}
        self.model_name = os.path.basename(model_path).removesuffix(".keras")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        keys = [str(key) for key in batch["key"]]
        blobs = list(
            self.pool.map(
                lambda key: self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read(), keys
            )
        )
        pixels = np.stack([self.common.decode(data, self.spec) for data in blobs])
        outputs = []
        for start in range(0, len(pixels), self.batch_size):
            chunk = pixels[start : start + self.batch_size]
            padded = np.zeros((self.batch_size, *chunk.shape[1:]), np.float32)
            padded[: len(chunk)] = chunk
            outputs.extend(np.asarray(self.forward(padded))[: len(chunk)])

        def put(pair: tuple[str, np.ndarray]) -> None:
            key, scores = pair
            self.s3.put_object(
                Bucket=self.output_bucket,
                Key=self.common.output_key(self.message, key),
                Body=self.common.result_json(key, self.model_name, scores),
                ContentType="application/json",
            )

        list(self.pool.map(put, zip(keys, outputs, strict=True)))
        return {"key": np.asarray(keys), "ok": np.ones(len(keys), dtype=bool)}


def list_keys(endpoint: str, bucket: str, prefix: str) -> list[str]:
    from tests.perf.peers.common import s3_client

    keys: list[str] = []
    pages = (
        s3_client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    )
    for page in pages:
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return keys


def run_once(ray: Any, options: argparse.Namespace, output_prefix: str) -> int:
    """One job: list, map_batches over the keys, consume every result; the item count."""
    keys = list_keys(options.endpoint, options.bucket, options.prefix)
    dataset = ray.data.from_items([{"key": key} for key in keys])
    # The class by its module name (not __main__), so Ray pickles a reference to it.
    from tests.perf.peers.ray_data import Classify as classify_class

    mapped = dataset.map_batches(
        classify_class,
        fn_constructor_kwargs={
            "model_path": options.model,
            "shape": tuple(int(v) for v in options.shape.split(",")),
            "preprocess": options.preprocess,
            "batch_size": options.batch,
            "threads": options.threads,
            "endpoint": options.endpoint,
            "bucket": options.bucket,
            "input_prefix": options.prefix,
            "output_prefix": output_prefix,
            "output_bucket": options.output_bucket,
        },
        compute=ray.data.ActorPoolStrategy(size=options.concurrency),
        batch_size=options.batch,
        num_cpus=1,
        batch_format="numpy",
    )
    done = 0
    for batch in mapped.iter_batches(batch_size=None, batch_format="numpy"):
        done += int(np.sum(batch["ok"]))
    if done != len(keys):
        raise RuntimeError(f"Ray Data returned {done} results for {len(keys)} keys")
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--shape", required=True, help="H,W,C")
    parser.add_argument("--preprocess", default="raw")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--output", required=True, help="output prefix; a run number is added")
    parser.add_argument("--output-bucket", help="where the results go (default: --bucket)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="TF threads per actor")
    parser.add_argument("--runs", type=int, default=2)
    options = parser.parse_args()
    try:
        import ray
        import ray.data
    except Exception as error:  # ImportError, or a broken install
        reason = (
            f"ray not installable here ({type(error).__name__}: {error}); pip install '.[bench]'"
        )
        print(f"{PROTOCOL} {json.dumps({'skipped': reason})}", flush=True)
        return
    os.environ["PYTHONPATH"] = os.pathsep.join(
        part for part in (str(ROOT), os.environ.get("PYTHONPATH", "")) if part
    )
    passed = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "TF_CPP_MIN_LOG_LEVEL", "PYTHONPATH")
    runs = []
    start = time.perf_counter()
    ray.init(
        num_cpus=options.concurrency,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=256 * 1024 * 1024,
        runtime_env={"env_vars": {name: os.environ[name] for name in passed if name in os.environ}},
    )
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        for run in range(options.runs):
            if run:
                start = time.perf_counter()
            items = run_once(ray, options, f"{options.output}{run}/")
            seconds = time.perf_counter() - start
            kind = "cold" if run == 0 else "warm"
            runs.append({"kind": kind, "seconds": seconds, "items": items})
            print(f"ray data {kind}: {items} items in {seconds:.2f} s", file=sys.stderr, flush=True)
    finally:
        ray.shutdown()
    print(f"{PROTOCOL} {json.dumps({'runs': runs, 'ray': ray.__version__})}", flush=True)


if __name__ == "__main__":
    main()
