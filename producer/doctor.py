"""``bucketvision doctor``: what this machine sees, and what to fix."""

from __future__ import annotations

import importlib.util
import sys

from bucketvision.infra.local_services import redis_answers
from bucketvision.infra.s3 import S3Store, StorageError, parse_s3_uri
from bucketvision.infra.settings import Settings


def run_doctor(settings: Settings) -> int:
    """Print one line per check; exit 1 when Redis or S3 is unusable."""
    problems = 0
    print("settings: " + ", ".join(f"{k}={v}" for k, v in settings.describe().items()))
    if redis_answers(settings.broker_url, timeout=3):
        print(f"ok    redis at {settings.describe()['broker_url']}")
    else:
        problems += 1
        print(
            f"FAIL  redis at {settings.describe()['broker_url']} does not answer: start Redis "
            "or set BV_BROKER_URL"
        )
    store = S3Store.from_settings(settings)
    models = parse_s3_uri(settings.models_uri)
    try:
        if store.bucket_exists(models.bucket):
            print(
                f"ok    s3 {settings.describe()['s3_endpoint_url']}: models bucket {models.bucket}"
            )
            from bucketvision.models.registry import ModelRegistry

            rows = ModelRegistry(store, settings.models_uri).summary()
            names = ", ".join(f"{r['name']}@{r['current']}" for r in rows) or "none registered"
            print(f"ok    models: {names}")
        else:
            print(f"warn  s3 answers, but the models bucket {models.bucket!r} does not exist yet")
    except StorageError as error:
        problems += 1
        print(f"FAIL  s3: {error}")
    if importlib.util.find_spec("tensorflow") is None:
        print(
            "warn  tensorflow is not installed here: fine for a producer; a worker needs the "
            "`worker` (or `gpu`) extra"
        )
    else:
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        print(
            f"ok    tensorflow {tf.__version__}, GPUs: {len(gpus)}"
            + ("" if gpus else " (workers will run on CPU: use `bucketvision worker --cpu`)")
        )
    print("doctor: " + ("all good" if not problems else f"{problems} problem(s)"), file=sys.stderr)
    return 1 if problems else 0
