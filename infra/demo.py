"""``bucketvision demo``: the whole flow on a local stack, in a few minutes.

Starts Redis (if none answers) and a moto S3 server, writes synthetic
handwritten digits into a bucket, trains the seed CNN briefly, registers it,
runs a worker and a classify job with a live progress bar, and prints the
summary, the accuracy against the known labels and where the results are.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from infra.local_services import local_stack
from infra.s3 import S3Store
from infra.settings import Settings

DEMO_BUCKET = "bucketvision-demo"
INPUT_PREFIX = "incoming/digits/"
OUTPUT_PREFIX = "results/digits/"


def _step(text: str) -> None:
    print(f"\n==> {text}", file=sys.stderr, flush=True)


def _upload_digits(store: S3Store, count: int) -> None:
    from models.digits import make_digits

    images, labels = make_digits(count, seed=20261129)

    def put(index: int) -> None:
        buffer = io.BytesIO()
        Image.fromarray(images[index]).save(buffer, format="PNG")
        key = f"{INPUT_PREFIX}{labels[index]}/{index:05d}.png"
        store.put_bytes(DEMO_BUCKET, key, buffer.getvalue(), "image/png")

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(count)))


def _train_and_register(settings: Settings, store: S3Store, epochs: int) -> str:
    from models.commands import register_model
    from models.digits import make_digits
    from models.registry import ModelRegistry, now_iso
    from models.train_classifier import train_seed_cnn

    images, labels = make_digits(4000, seed=1)
    validation = make_digits(600, seed=2)
    trained = train_seed_cnn(images, labels, validation, epochs=epochs, verbose=2)
    print(
        f"    validation accuracy {trained.accuracy:.4f} after {trained.seconds:.1f} s",
        file=sys.stderr,
    )
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model.keras")
        trained.model.save(path)
        ref = register_model(
            ModelRegistry(store, settings.models_uri),
            "digits",
            task="classify",
            path=path,
            labels=[str(digit) for digit in range(10)],
            preprocess="unit",
            metrics={"accuracy": round(trained.accuracy, 4)},
            dataset="synthetic digits (models.digits, seed 1)",
            trained_at=now_iso(),
            promote=True,
        )
    return str(ref)


def _start_worker(environment: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "producer.cli", "worker", "--cpu", "--concurrency", "2"]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            command, env=environment, start_new_session=True, stdout=log, stderr=subprocess.STDOUT
        )


def _accuracy(store: S3Store, job_id: str) -> float:
    text = store.get_text(DEMO_BUCKET, f"{OUTPUT_PREFIX}_jobs/{job_id}/manifest.jsonl")
    lines = [json.loads(row) for row in text.splitlines()]
    right = sum(
        1
        for line in lines
        if line["status"] == "ok" and line["result"]["label"] == line["key"].split("/")[-2]
    )
    return right / max(len(lines), 1)


def run_demo(settings: Settings, *, images: int = 500, epochs: int = 2, keep: bool = False) -> int:
    """Run the demo; returns the exit code."""
    began = time.perf_counter()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "demo")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "demo-secret")
    _step("starting Redis and S3 where none answers")
    stack = local_stack(settings.broker_url, settings.s3_endpoint_url)
    broker_url, endpoint = stack.__enter__()
    worker = None
    try:
        os.environ["BV_S3_ENDPOINT_URL"] = endpoint
        os.environ["BV_BROKER_URL"] = broker_url
        settings = Settings.from_env()
        store = S3Store.from_settings(settings)
        print(f"    redis {settings.describe()['broker_url']}, s3 {endpoint}", file=sys.stderr)
        for bucket in (DEMO_BUCKET, settings.models_uri[5:].split("/")[0]):
            store.ensure_bucket(bucket)
        _step(f"writing {images} synthetic handwritten digits to s3://{DEMO_BUCKET}/{INPUT_PREFIX}")
        _upload_digits(store, images)
        _step(f"starting a worker (2 CPU children) and training the seed CNN ({epochs} epochs)")
        worker_log = Path("demo-output") / "worker.log"
        worker = _start_worker(dict(os.environ), worker_log)
        print(f"    worker log: {worker_log}", file=sys.stderr)
        model = _train_and_register(settings, store, epochs)
        print(f"    registered {model}", file=sys.stderr)
        _step("submitting the classify job")
        from producer.cli import main as cli

        code = cli(
            [
                "submit",
                "--task",
                "classify",
                "--input",
                f"s3://{DEMO_BUCKET}/{INPUT_PREFIX}",
                "--output",
                f"s3://{DEMO_BUCKET}/{OUTPUT_PREFIX}",
                "--wait",
            ]
        )
        if code != 0:
            return code
        from infra.jobs import JobStore

        job_id = JobStore.from_url(broker_url).recent_jobs(1)[0]
        summary = store.get_json(DEMO_BUCKET, f"{OUTPUT_PREFIX}_jobs/{job_id}/summary.json")
        local = Path("demo-output") / job_id
        local.mkdir(parents=True, exist_ok=True)
        for name in ("summary.json", "manifest.jsonl"):
            store.download_file(
                DEMO_BUCKET, f"{OUTPUT_PREFIX}_jobs/{job_id}/{name}", str(local / name)
            )
        _step("summary")
        print(json.dumps(summary, indent=2))
        print(f"\naccuracy against the known labels: {_accuracy(store, job_id):.4f}")
        print(f"results:  s3://{DEMO_BUCKET}/{OUTPUT_PREFIX}<label>/<n>.png.json  (S3 {endpoint})")
        print(f"manifest: s3://{DEMO_BUCKET}/{OUTPUT_PREFIX}_jobs/{job_id}/manifest.jsonl")
        print(f"copied:   {local}/summary.json and manifest.jsonl")
        print(f"demo wall time: {time.perf_counter() - began:.1f} s")
        if keep:
            print("services left running (--keep-running); stop them with Ctrl-C", file=sys.stderr)
            signal.pause()
        return 0
    finally:
        if worker is not None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
        stack.__exit__(None, None, None)
