"""One batch of a generate job: sample images from a generator and write them.

The producer pins the model and gives every item its index, seed and (for a
class-conditional generator) its class; the same seed always gives the same
image, so a redelivered batch overwrites the same keys with the same bytes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from bucketvision.infra.messages import GenerateItem, GenerateMessage
from bucketvision.infra.outputs import manifest_line
from bucketvision.infra.s3 import S3Store, StorageError, StorageUnavailable
from bucketvision.worker.pipeline import BatchOutcome


def run_generate_batch(
    message: GenerateMessage,
    *,
    store: S3Store,
    load_model: Callable[[str], Any],
    pool: Executor,
    attempt: int,
) -> BatchOutcome:
    """Generate and upload every item of ``message``; one manifest line per item."""
    started = time.perf_counter()
    keys = message.keys
    errors: dict[str, tuple[str, str]] = {}
    results: dict[str, dict[str, Any]] = {}
    infer_seconds = upload_seconds = 0.0
    try:
        model = load_model(message.model)
        infer_start = time.perf_counter()
        images = model.generate(
            [item.seed for item in message.items], [item.label for item in message.items]
        )
        infer_seconds = time.perf_counter() - infer_start
        if len(images) != len(keys):
            raise ValueError(f"the model returned {len(images)} images for {len(keys)} seeds")
    except StorageUnavailable:
        raise
    except Exception as error:
        reason = (type(error).__name__, f"could not generate with {message.model}: {error}")
        images = []
        errors = dict.fromkeys(keys, reason)

    def upload(entry: tuple[str, GenerateItem, Any]) -> None:
        key, item, image = entry
        try:
            store.put_bytes(message.output.bucket, key, model.encode_png(image), "image/png")
            labels = model.labels
            result: dict[str, Any] = {"image": key, "seed": item.seed}
            if item.label is not None:
                result["label"] = labels[item.label] if item.label < len(labels) else item.label
            results[key] = result
        except StorageUnavailable:
            raise
        except StorageError as error:
            errors[key] = ("UploadError", str(error))
        except Exception as error:  # an encoding failure fails only its item
            errors[key] = (type(error).__name__, str(error))

    if images:
        upload_start = time.perf_counter()
        list(pool.map(upload, zip(keys, message.items, images, strict=True)))
        upload_seconds = time.perf_counter() - upload_start
    latency = (time.perf_counter() - started) * 1000.0
    lines = [
        manifest_line(
            key,
            status="ok" if key in results else "error",
            output=f"s3://{message.output.bucket}/{key}" if key in results else None,
            result=results.get(key),
            error=None if key in results else errors.get(key, ("Unknown", "no result")),
            model=message.model,
            latency_ms=latency,
            attempts=attempt,
        )
        for key in keys
    ]
    stages = {"download": 0.0, "decode": 0.0, "infer": infer_seconds, "upload": upload_seconds}
    return BatchOutcome(lines, stages)
