"""Ceilings: what the model alone and what S3 alone can do on this machine.

* Compute: the model's own compiled forward, ``tf.function(lambda x: model(x,
  training=False))`` with a fixed ``(batch, H, W, C)`` float32 signature, on
  pre-decoded, pre-scaled tensors, warm-up excluded. It runs in child
  processes (``python -m tests.perf.bench_ceilings compute ...``) so the
  orchestrator never imports TensorFlow and each layout gets fresh thread
  settings. Two layouts are timed: the worker's (N processes x cores/N
  threads, started together) and one process with every core; the ceiling is
  the faster one.
* Storage, against the same S3 server as the job: parallel GETs of the
  corpus, and per item the S3 work a job must do (GET, then PUT a result JSON
  of the size the service writes), through the service's own ``S3Store``
  with each data-plane client it has (boto3 with ``max_pool_connections=64``;
  obstore), a pool of 32 threads.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from tests.perf.peers.common import s3_client as peer_s3_client

ROOT = Path(__file__).resolve().parents[2]
STORAGE_THREADS = 32
STORAGE_POOL = 64
PROTOCOL = "BENCH"  # child stdout lines the orchestrator reads start with this


def s3_client(endpoint: str, pool: int = STORAGE_POOL) -> Any:
    """A boto3 client for the bench's S3 server with a connection pool of ``pool``."""
    return peer_s3_client(endpoint, pool)


def result_body(key: str, model: str) -> bytes:
    """A classify result as the service writes it per item (same fields and size)."""
    top = [{"label": str(label), "score": round(0.1 + label * 0.01, 6)} for label in range(5)]
    document = {"key": key, "model": model, "task": "classify", "label": "0", "score": 0.1}
    return json.dumps({**document, "top_k": top}).encode()


def get_rate(store: Any, bucket: str, keys: list[str], threads: int = STORAGE_THREADS) -> float:
    """Objects per second reading every key once through ``store``, ``threads`` at a time."""

    def get(key: str) -> int:
        return len(store.get_bytes(bucket, key))

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(get, keys))
    return len(keys) / (time.perf_counter() - start)


def get_put_rate(
    store: Any,
    bucket: str,
    keys: list[str],
    out_prefix: str,
    threads: int = STORAGE_THREADS,
    *,
    out_bucket: str | None = None,
) -> float:
    """Items per second doing a job's per-item S3 work: GET the object, PUT its result JSON
    (into ``out_bucket``, else beside the object)."""

    def item(key: str) -> None:
        store.get_bytes(bucket, key)
        body = result_body(key, "bench@v1")
        store.put_bytes(out_bucket or bucket, f"{out_prefix}{key}.json", body, "application/json")

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(item, keys))
    return len(keys) / (time.perf_counter() - start)


# ---------------------------------------------------------------- compute ceiling (parent side)


def _read_line(stream: IO[str], process: subprocess.Popen[str], what: str) -> list[str]:
    """The next protocol line of a child, split; RuntimeError if it died."""
    while True:
        line = stream.readline()
        if not line:
            process.wait()
            raise RuntimeError(f"{what} exited with code {process.returncode}")
        if line.startswith(PROTOCOL + " "):
            return line.split()[1:]


class ComputeCeiling:
    """``processes`` children (``threads`` each) ready to run the forward together.

    The children load the model, trace and warm up when created, then wait on
    stdin; each :meth:`measure` makes every child run the same number of
    fixed-shape batches at once and returns all their images over the slowest
    child's time. A measurement covers at least ``images`` images and lasts at
    least about ``min_seconds``. Idle children use no CPU, so they can wait
    while other figures are measured.
    """

    def __init__(
        self,
        model_path: str,
        input_shape: tuple[int, int, int],
        preprocess: str,
        *,
        batch_size: int,
        processes: int,
        threads: int,
        images: int,
        min_seconds: float,
        log: IO[bytes],
    ) -> None:
        command = [
            sys.executable,
            "-m",
            "tests.perf.bench_ceilings",
            "compute",
            "--model",
            model_path,
            "--shape",
            ",".join(str(v) for v in input_shape),
            "--preprocess",
            preprocess,
            "--batch",
            str(batch_size),
            "--threads",
            str(threads),
        ]
        self.batch_size, self.processes = batch_size, processes
        self.children = [
            subprocess.Popen(  # nosec B603 - our own module, fixed argv
                command,
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                bufsize=1,
            )
            for _ in range(processes)
        ]
        try:
            speeds = [
                float(_read_line(child.stdout, child, f"compute child {index}")[1])  # type: ignore[arg-type]
                for index, child in enumerate(self.children)
            ]
        except BaseException:
            self.close()
            raise
        self.calls = max(
            math.ceil(images / batch_size / processes), math.ceil(min_seconds * min(speeds))
        )

    def measure(self) -> float:
        """Images/s of one round: every child runs ``calls`` batches at the same time."""
        for child in self.children:
            child.stdin.write(f"go {self.calls}\n")  # type: ignore[union-attr]
            child.stdin.flush()  # type: ignore[union-attr]
        seconds = [
            float(_read_line(child.stdout, child, "compute child")[1])  # type: ignore[arg-type]
            for child in self.children
        ]
        return self.processes * self.calls * self.batch_size / max(seconds)

    def close(self) -> None:
        for child in self.children:
            if child.poll() is None:
                try:
                    child.stdin.write("quit\n")  # type: ignore[union-attr]
                    child.stdin.flush()  # type: ignore[union-attr]
                    child.wait(timeout=30)
                except (OSError, subprocess.TimeoutExpired):
                    child.kill()
                    child.wait()


# ---------------------------------------------------------------- compute ceiling (child side)


def _compute_child(options: argparse.Namespace) -> None:
    import numpy as np
    import tensorflow as tf

    from bucketvision.models.loading import load_keras_model

    tf.config.threading.set_intra_op_parallelism_threads(options.threads)
    tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, options.threads)))
    shape = tuple(int(v) for v in options.shape.split(","))
    model = load_keras_model(options.model)
    forward = tf.function(
        lambda x: model(x, training=False),
        input_signature=[tf.TensorSpec((options.batch, *shape), tf.float32)],
    )
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(4):
        pixels = rng.integers(0, 256, size=(options.batch, *shape)).astype(np.float32)
        if options.preprocess == "unit":
            pixels /= 255.0
        elif options.preprocess == "symmetric":
            pixels = pixels / 127.5 - 1.0
        batches.append(tf.constant(pixels))

    def run(calls: int) -> float:
        start = time.perf_counter()
        for index in range(calls):
            forward(batches[index % len(batches)]).numpy()
        return time.perf_counter() - start

    run(3)  # trace and warm up: not timed
    calls, seconds = 1, run(1)
    while seconds < 1.0:
        calls *= 2
        seconds = run(calls)
    print(f"{PROTOCOL} ready {calls / seconds:.4f}", flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] == "quit":
            return
        if words[0] == "go":
            print(f"{PROTOCOL} done {run(int(words[1])):.6f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    compute = sub.add_parser("compute", help="a compute-ceiling child (stdin/stdout protocol)")
    compute.add_argument("--model", required=True)
    compute.add_argument("--shape", required=True, help="H,W,C")
    compute.add_argument("--preprocess", default="raw")
    compute.add_argument("--batch", type=int, default=32)
    compute.add_argument("--threads", type=int, default=1)
    options = parser.parse_args()
    if options.command == "compute":
        _compute_child(options)


if __name__ == "__main__":
    main()
