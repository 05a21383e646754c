"""``bucketvision doctor``: what this machine sees, and what to fix."""

from __future__ import annotations

import importlib.util
import json
import sys
from typing import Any

from bucketvision.infra.local_services import redis_answers
from bucketvision.infra.s3 import S3Store, StorageError, parse_s3_uri
from bucketvision.infra.settings import Settings


def checks(settings: Settings) -> list[dict[str, str]]:
    """One ``{check, status (ok, warn, fail), detail}`` per thing a service needs."""
    found: list[dict[str, str]] = []

    def add(check: str, status: str, detail: str) -> None:
        found.append({"check": check, "status": status, "detail": detail})

    broker = str(settings.describe()["broker_url"])
    if redis_answers(settings.broker_url, timeout=3):
        add("redis", "ok", f"redis at {broker}")
    else:
        add("redis", "fail", f"redis at {broker} does not answer: start Redis or set BV_BROKER_URL")
    store = S3Store.from_settings(settings)
    models = parse_s3_uri(settings.models_uri)
    try:
        if store.bucket_exists(models.bucket):
            add(
                "s3",
                "ok",
                f"s3 {settings.describe()['s3_endpoint_url']}: models bucket {models.bucket}",
            )
            from bucketvision.models.registry import ModelRegistry

            rows = ModelRegistry(store, settings.models_uri).summary()
            names = ", ".join(f"{r['name']}@{r['current']}" for r in rows) or "none registered"
            add("models", "ok" if rows else "warn", f"models: {names}")
        else:
            add(
                "s3",
                "warn",
                f"s3 answers, but the models bucket {models.bucket!r} does not exist yet",
            )
    except StorageError as error:
        add("s3", "fail", f"s3: {error}")
    if importlib.util.find_spec("tensorflow") is None:
        add(
            "tensorflow",
            "warn",
            "tensorflow is not installed here: fine for a producer; a worker needs the `worker`"
            " (or `gpu`) extra",
        )
    else:
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        add(
            "tensorflow",
            "ok",
            f"tensorflow {tf.__version__}, GPUs: {len(gpus)}"
            + ("" if gpus else " (workers will run on CPU: use `bucketvision worker --cpu`)"),
        )
    return found


def run_doctor(settings: Settings, *, as_json: bool = False) -> int:
    """Print one line per check (or one JSON object); exit 1 when Redis or S3 is unusable."""
    found = checks(settings)
    problems = sum(1 for item in found if item["status"] == "fail")
    if as_json:
        report: dict[str, Any] = {"settings": settings.describe(), "checks": found}
        print(json.dumps({**report, "problems": problems}, indent=2, default=str))
    else:
        print("settings: " + ", ".join(f"{k}={v}" for k, v in settings.describe().items()))
        for item in found:
            print(f"{item['status'] if item['status'] != 'fail' else 'FAIL':5} {item['detail']}")
    print("doctor: " + ("all good" if not problems else f"{problems} problem(s)"), file=sys.stderr)
    return 1 if problems else 0
