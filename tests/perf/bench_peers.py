"""Running the peers: Celery peer workers in subprocesses, and the Ray Data peer.

A Celery peer's job is timed like the service's: from listing the prefix,
through sending its tasks, to its Redis completion counter reaching the number
of keys (polled every 10 ms). Its worker is started once per model, and timing
starts only when every pool child has loaded the model.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from tests.perf.bench_data import listed_keys
from tests.perf.peers import batched_celery, naive_celery
from tests.perf.peers.common import peer_app, route

ROOT = Path(__file__).resolve().parents[2]
PEER_TIMEOUT_SECONDS = 1800


@dataclass(frozen=True)
class CeleryPeer:
    name: str
    module: Any

    @property
    def queue(self) -> str:
        return str(self.module.QUEUE)

    @property
    def task(self) -> str:
        return str(self.module.TASK)


CELERY_PEERS = {
    "naive_celery": CeleryPeer("naive_celery", naive_celery),
    "batched_celery": CeleryPeer("batched_celery", batched_celery),
}


@dataclass(frozen=True)
class PeerModel:
    """What a peer needs to know of a model and its corpus."""

    key: str
    path: str
    shape: tuple[int, int, int]
    preprocess: str
    bucket: str
    prefix: str
    output_bucket: str  # where the results go


def _tail(path: Path, size: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except FileNotFoundError:
        return ""


class CeleryPeerWorker:
    """``celery -A tests.perf.peers.<peer> worker`` in its own session."""

    def __init__(
        self,
        peer: CeleryPeer,
        model: PeerModel,
        *,
        broker: str,
        endpoint: str,
        concurrency: int,
        threads: int,
        batch_size: int,
        log_path: Path,
    ) -> None:
        self.peer, self.broker, self.log_path = peer, broker, log_path
        self.concurrency = concurrency
        self.ready_key = f"bench:peer:ready:{secrets.token_hex(4)}"
        env = {
            **os.environ,
            "BENCH_PEER_BROKER": broker,
            "BENCH_PEER_S3": endpoint,
            "BENCH_PEER_MODEL": model.path,
            "BENCH_PEER_SHAPE": ",".join(str(v) for v in model.shape),
            "BENCH_PEER_PREPROCESS": model.preprocess,
            "BENCH_PEER_THREADS": str(threads),
            "BENCH_PEER_BATCH": str(batch_size),
            "BENCH_PEER_READY": self.ready_key,
        }
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            peer.module.__name__,
            "worker",
            "--concurrency",
            str(concurrency),
            "--pool",
            "prefork",
            "-Q",
            peer.queue,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel",
            "WARNING",
            "-n",
            f"{peer.name}-{secrets.token_hex(3)}@%h",
        ]
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(  # nosec B603 - fixed argv of our own
                command,
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, client: redis.Redis, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while int(client.get(self.ready_key) or 0) < self.concurrency:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.peer.name} worker exited:\n{_tail(self.log_path)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.peer.name} children not ready:\n{_tail(self.log_path)}")
            time.sleep(0.1)

    def started(self) -> CeleryPeerWorker:
        """This worker, once every pool child has loaded the model; stopped if that fails."""
        try:
            self.wait_ready(redis.Redis.from_url(self.broker))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def run_celery_peer(
    worker: CeleryPeerWorker,
    model: PeerModel,
    *,
    s3: Any,
    batch_size: int,
    repeat: int,
) -> dict[str, Any]:
    """One timed job of the peer over ``model``'s corpus: list, send, wait for the counter."""
    peer = worker.peer
    client = redis.Redis.from_url(worker.broker)
    app = peer_app(f"bench-producer-{peer.name}", peer.queue, broker=worker.broker)
    counter = f"bench:peer:{peer.name}:{model.key}:{repeat}:{secrets.token_hex(3)}"
    output = f"peers/{peer.name}/{model.key}/{repeat}/"
    try:
        start = time.perf_counter()
        keys = listed_keys(s3, model.bucket, model.prefix)
        where = route(model.bucket, model.prefix, output, model.output_bucket)
        if peer.name == "batched_celery":
            messages = peer.module.messages(where, keys, counter, batch_size)
        else:
            messages = peer.module.messages(where, keys, counter)
        with app.producer_or_acquire() as producer:
            for message in messages:
                app.send_task(peer.task, args=[message], queue=peer.queue, producer=producer)
        while int(client.get(counter) or 0) < len(keys):
            if worker.process.poll() is not None:
                raise RuntimeError(f"{peer.name} worker died:\n{_tail(worker.log_path)}")
            if time.perf_counter() - start > PEER_TIMEOUT_SECONDS:
                raise TimeoutError(f"{peer.name} did not finish:\n{_tail(worker.log_path)}")
            time.sleep(0.01)
        seconds = time.perf_counter() - start
    finally:
        app.close()
    errors = int(client.get(counter + ":errors") or 0)
    if errors:
        sample = [m.decode() for m in client.lrange(counter + ":messages", 0, 2)]
        raise RuntimeError(f"{peer.name}: {errors} of {len(keys)} items failed: {sample}")
    return {"seconds": seconds, "items": len(keys), "images_per_second": len(keys) / seconds}


def run_ray_peer(
    model: PeerModel,
    *,
    endpoint: str,
    concurrency: int,
    threads: int,
    batch_size: int,
    repeat: int,
    log_path: Path,
    timeout: float = PEER_TIMEOUT_SECONDS,
) -> dict[str, Any]:
    """One fresh Ray session (a subprocess): ``{"runs": [cold, warm]}`` or ``{"skipped": ...}``."""
    command = [
        sys.executable,
        "-m",
        "tests.perf.peers.ray_data",
        "--model",
        model.path,
        "--shape",
        ",".join(str(v) for v in model.shape),
        "--preprocess",
        model.preprocess,
        "--endpoint",
        endpoint,
        "--bucket",
        model.bucket,
        "--prefix",
        model.prefix,
        "--output",
        f"peers/ray_data/{model.key}/{repeat}/",
        "--output-bucket",
        model.output_bucket,
        "--batch",
        str(batch_size),
        "--concurrency",
        str(concurrency),
        "--threads",
        str(threads),
        "--runs",
        "2",
    ]
    with open(log_path, "ab") as log:
        done = subprocess.run(  # nosec B603 - fixed argv of our own
            command,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=log,
            timeout=timeout,
            check=False,
            start_new_session=True,
        )
    lines = [line for line in done.stdout.decode().splitlines() if line.startswith("BENCH ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(
            f"the Ray Data peer exited with code {done.returncode}:\n{_tail(log_path)}"
        )
    return dict(json.loads(lines[-1][len("BENCH ") :]))
