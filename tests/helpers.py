"""Helpers shared by integration and end-to-end tests."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bucketvision.infra.outputs import parse_jsonl
from bucketvision.models.digits import make_digits

ROOT = Path(__file__).resolve().parents[1]


def run_cli(
    env: dict[str, str], *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``bucketvision ARGS`` in a subprocess with ``env`` added to the environment."""
    return subprocess.run(
        [sys.executable, "-m", "bucketvision.producer.cli", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_cli(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[str]:
    """``bucketvision ARGS`` in the background, in a session of its own, appending to ``log``."""
    with open(log, "ab") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "bucketvision.producer.cli", *args],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def submit_cli(
    env: dict[str, str], input_uri: str, output_uri: str, *extra: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``bucketvision submit --task classify --input IN --output OUT EXTRA...``."""
    arguments = ["--task", "classify", "--input", input_uri, "--output", output_uri, *extra]
    return run_cli(env, "submit", *arguments, timeout=timeout)


def run_job(env: dict[str, str], task: str, model: str, input_uri: str, output_uri: str) -> str:
    """``bucketvision submit --task T --model M --input IN --output OUT --wait``; the job id."""
    done = run_cli(
        env, "submit", "--task", task, "--model", model, "--input", input_uri,
        "--output", output_uri, "--wait", "--quiet",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return printed_job_id(done)


def printed_job_id(submitted: subprocess.CompletedProcess[str]) -> str:
    """The job id ``bucketvision submit`` prints as the first line of its output."""
    return submitted.stdout.splitlines()[0].strip()


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_png(width: int = 30_000, height: int = 30_000) -> bytes:
    """A valid PNG of width x height grey pixels in a few kB: a decompression bomb."""
    row = b"\x00" + b"\x00" * width
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


def bad_files() -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, expected error type) for the hostile files of the e2e test."""
    good = png_bytes(make_digits(1, seed=5)[0][0])
    jpeg = io.BytesIO()
    Image.fromarray(make_digits(1, seed=6)[0][0]).save(jpeg, format="JPEG")
    return {
        "empty.png": (b"", "EmptyObject"),
        "truncated.png": (good[: len(good) // 2], "CorruptImage"),
        "truncated.jpg": (jpeg.getvalue()[:200], "CorruptImage"),
        "notes.jpg": (b"just some text, not an image\n" * 10, "UnsupportedFormat"),
        "page.png": (b"<!DOCTYPE html><html><body>404</body></html>", "UnsupportedFormat"),
        "bomb.png": (bomb_png(), "TooManyPixels"),
    }


def upload_digits(client: Any, bucket: str, prefix: str, count: int, seed: int) -> dict[str, int]:
    """Put ``count`` digit PNGs under ``prefix``; returns key -> true label."""
    images, labels = make_digits(count, seed=seed)
    return upload_labelled(client, bucket, prefix, images, labels)


def upload_labelled(
    client: Any, bucket: str, prefix: str, images: Any, labels: Any
) -> dict[str, int]:
    """Put each image as ``<prefix><label>/<index>.png``; returns key -> true label."""
    from concurrent.futures import ThreadPoolExecutor

    keys = {f"{prefix}{labels[i]}/{i:05d}.png": int(labels[i]) for i in range(len(images))}

    def put(item: tuple[int, str]) -> None:
        index, key = item
        client.put_object(Bucket=bucket, Key=key, Body=png_bytes(images[index]))

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, enumerate(keys)))
    return keys


def train_digits(images: np.ndarray, labels: np.ndarray, *, epochs: int, seed: int = 0) -> Any:
    """The classify family's default model fitted on in-memory digits (10% for validation)."""
    import tensorflow as tf

    from bucketvision.models.classification.train import train_classifier
    from bucketvision.models.family import DatasetInfo, TrainOptions

    held = max(1, len(images) // 10)
    dataset = tf.data.Dataset.from_tensor_slices(
        (images[..., np.newaxis].astype(np.uint8), labels.astype(np.int32))
    )
    info = DatasetInfo(
        "classify", [str(d) for d in range(10)], (28, 28, 1), len(images) - held, held
    )
    options = TrainOptions(epochs=epochs, seed=seed, verbose=0)
    return train_classifier(dataset.skip(held), dataset.take(held), info, options)


def train_and_register_digits(settings: Any, store: Any, name: str, path_dir: str) -> str:
    """A quickly trained digits classifier registered as ``name``; returns ``name@version``."""
    from bucketvision.models.registry import ModelRegistry

    images, labels = make_digits(2000, seed=1)
    trained = train_digits(images, labels, epochs=3)
    path = os.path.join(path_dir, "model.keras")
    trained.model.save(path)
    registry = ModelRegistry(store, settings.models_uri)
    store.ensure_bucket(registry.root.bucket)
    card = {**trained.card, "task": "classify", "format": "keras"}
    return str(registry.add_version(name, path, card, promote=True))


def read_job(s3_client: Any, bucket: str, output: str, job_id: str) -> tuple[list[dict], dict]:
    base = f"{output}_jobs/{job_id}/"
    manifest = s3_client.get_object(Bucket=bucket, Key=base + "manifest.jsonl")["Body"].read()
    summary = json.loads(
        s3_client.get_object(Bucket=bucket, Key=base + "summary.json")["Body"].read()
    )
    return parse_jsonl(manifest.decode()), summary


def manifest_lines(
    keys: Iterable[str], status: str = "ok", attempts: int = 1, label: str = "a"
) -> list[dict[str, Any]]:
    """Manifest lines of ``keys`` as a worker writes them (ok with ``label``, or an error)."""
    from bucketvision.infra.outputs import manifest_line

    return [
        manifest_line(
            key,
            status=status,
            output=None,
            result={"label": label} if status == "ok" else None,
            error=None if status == "ok" else ("X", "bad"),
            model="m@v1",
            latency_ms=1.0,
            attempts=attempts,
        )
        for key in keys
    ]


def classify_loop_stack(
    service_env: dict[str, str],
    s3_client: Any,
    start_worker: Any,
    cache: Path,
    *,
    bucket: str,
    dataset: str,
    seed: int,
) -> tuple[dict[str, str], Any, dict[str, int]]:
    """The learning-loop tests' start: a 200-digit dataset, 300 new digits under
    ``incoming/``, a worker on both queues; (env, worker, key -> true label)."""
    s3_client.create_bucket(Bucket=bucket)
    made = run_cli(
        service_env, "datasets", "make", "--task", "classify", "--count", "200", "--output", dataset
    )
    assert made.returncode == 0, made.stderr
    truth = upload_digits(s3_client, bucket, "incoming/", 300, seed=seed)
    env = {**service_env, "BV_MODEL_CACHE_DIR": str(cache)}
    worker = start_worker("--queues", "inference,training", "--cpu", "--concurrency", "2", env=env)
    worker.wait_for_children(2)
    return env, worker, truth


def aws_client(env: dict[str, str], service: str) -> Any:
    """A boto3 client of ``service`` (s3, sqs) on the tests' moto server."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        service,  # type: ignore[call-overload]
        endpoint_url=env["BV_S3_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing-secret",
        config=Config(max_pool_connections=32),
    )
