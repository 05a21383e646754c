"""Per-process worker state: clients, the I/O thread pool and the model cache.

Built lazily in each pool child (never in the Celery parent: TensorFlow is not
fork-safe). Models are cached by ``name@version``; a job pins its version at
submission, so a cached version never changes underneath a running job.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from infra.jobs import JobStore
from infra.s3 import S3Store
from infra.settings import Settings
from models.registry import ModelRegistry, parse_model_ref
from worker.pipeline import BatchModel, Limits

log = logging.getLogger("bucketvision.worker")


class ModelCache:
    """Loads each pinned model version once per process and keeps it."""

    def __init__(
        self, registry: ModelRegistry, store: S3Store, cache_dir: str, batch_size: int
    ) -> None:
        self.registry = registry
        self.store = store
        self.cache_dir = cache_dir
        self.batch_size = batch_size
        self._models: dict[str, BatchModel] = {}
        self._lock = threading.Lock()

    def get(self, reference: str) -> BatchModel:
        with self._lock:
            if reference not in self._models:
                self._models[reference] = self._load(reference)
            return self._models[reference]

    def _load(self, reference: str) -> BatchModel:
        from models.classify import Classifier
        from models.loading import ModelLoadError, load_keras_model

        name, version = parse_model_ref(reference)
        if version is None:
            raise ModelLoadError(f"{reference}: a job must pin a version (name@vN)")
        card = self.registry.card(name, version)
        directory = os.path.join(self.cache_dir, "models", name, version)
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, "model.keras")
        if not os.path.exists(path):
            partial = f"{path}.{os.getpid()}.part"
            self.store.download_file(*self.registry.model_key(name, version), partial)
            os.replace(partial, path)
        model = load_keras_model(path)
        if card.get("task") != "classify":
            raise ModelLoadError(f"{reference}: task {card.get('task')!r} is not served yet")
        served = Classifier(model, card, self.batch_size)
        served.warm_up()
        log.info("loaded model %s (pid %s)", reference, os.getpid())
        return served


class WorkerRuntime:
    """Everything a pool child needs to run batches."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = S3Store.from_settings(settings, pool_size=max(settings.io_threads, 10) * 2)
        self.jobs = JobStore.from_url(settings.broker_url)
        self.registry = ModelRegistry(self.store, settings.models_uri)
        self.models = ModelCache(
            self.registry, self.store, settings.model_cache_dir, settings.batch_size
        )
        self.pool = ThreadPoolExecutor(settings.io_threads, thread_name_prefix="bv-io")
        self.limits = Limits(settings.max_image_pixels, settings.max_object_bytes)
        self.identity = f"{socket.gethostname()}:{os.getpid()}"


_runtime: WorkerRuntime | None = None
_runtime_lock = threading.Lock()


def get_runtime(settings: Settings | None = None) -> WorkerRuntime:
    """The process's runtime, created on first use."""
    global _runtime
    with _runtime_lock:
        if _runtime is None or _runtime.identity.split(":")[-1] != str(os.getpid()):
            _runtime = WorkerRuntime(settings or Settings.from_env())
        return _runtime


def configure_tensorflow(threads: int | None) -> dict[str, Any]:
    """Memory growth on every visible GPU; share CPU threads between pool children."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError as error:
            log.warning("cannot enable memory growth on %s: %s", gpu.name, error)
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, threads)))
    return {"gpus": [gpu.name for gpu in gpus], "threads": threads}
