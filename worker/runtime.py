"""Per-process worker state: clients, the I/O thread pool and the model cache.

Built lazily in each pool child (never in the Celery parent: TensorFlow is not
fork-safe). Models are cached by ``name@version`` in memory and by their file's
SHA-256 on disk; a job pins its version at submission, so a cached version never
changes underneath a running job.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
from typing import Any

from celery import Celery

from bucketvision.infra.jobs import JobStore
from bucketvision.infra.logs import ContextThreadPool
from bucketvision.infra.queue import make_celery
from bucketvision.infra.s3 import S3Store
from bucketvision.infra.s3_data import open_data_plane
from bucketvision.infra.settings import Settings
from bucketvision.models.registry import ModelRegistry, parse_model_ref
from bucketvision.worker.pipeline import Limits

log = logging.getLogger("bucketvision.worker")


class ModelCache:
    """Loads each pinned model version once per process, and follows CURRENT.

    Jobs pin ``name@version`` at submission, so a cached version never changes
    under a running job. Every ``refresh_seconds`` a background thread reads
    CURRENT of each model this process has served and, when it moved, loads the
    new version ahead of the jobs that will pin it (hot reload without restart).
    Versions that are neither CURRENT nor among the ``keep_versions`` most
    recently used are dropped.
    """

    def __init__(
        self,
        registry: ModelRegistry,
        store: S3Store,
        cache_dir: str,
        forward_batch: int,
        *,
        refresh_seconds: float = 30.0,
        keep_versions: int = 2,
        unsafe_models: frozenset[str] = frozenset(),
    ) -> None:
        self.registry = registry
        self.store = store
        self.cache_dir = cache_dir
        self.unsafe_models = unsafe_models
        self.forward_batch = forward_batch
        self.refresh_seconds = refresh_seconds
        self.keep_versions = keep_versions
        self.current: dict[str, str] = {}
        self._models: dict[str, Any] = {}
        self._last_used: dict[str, float] = {}
        self._lock = threading.RLock()
        self._refresher: threading.Thread | None = None
        self._stop = threading.Event()

    def get(self, reference: str) -> Any:
        """The served model for a pinned ``name@version``, loading it on first use."""
        with self._lock:
            if reference not in self._models:
                self._models[reference] = self._load(reference)
            self._last_used[reference] = time.monotonic()
            self.current.setdefault(reference.split("@")[0], reference.split("@")[1])
            self._start_refresher()
            return self._models[reference]

    def loaded(self) -> list[str]:
        with self._lock:
            return sorted(self._models)

    def refresh(self) -> list[str]:
        """Check CURRENT of every served model; load the versions that moved. Returns them."""
        moved = []
        for name in list(self.current):
            version = self.registry.current(name)
            if version is None or version == self.current.get(name):
                continue
            reference = f"{name}@{version}"
            with self._lock:
                known = reference in self._models
            served = None if known else self._load(reference)  # slow: outside the lock
            with self._lock:
                if served is not None:
                    self._models.setdefault(reference, served)
                self._last_used[reference] = time.monotonic()
                previous, self.current[name] = self.current.get(name), version
                self._evict()
            log.info(
                "model %s: CURRENT moved %s -> %s; %s is loaded", name, previous, version, reference
            )
            moved.append(reference)
        return moved

    def _evict(self) -> None:
        keep: set[str] = {f"{name}@{version}" for name, version in self.current.items()}
        by_name: dict[str, list[str]] = {}
        for reference in sorted(self._models, key=lambda ref: -self._last_used.get(ref, 0.0)):
            by_name.setdefault(reference.split("@")[0], []).append(reference)
        for references in by_name.values():
            keep.update(references[: self.keep_versions])
        for reference in [ref for ref in self._models if ref not in keep]:
            del self._models[reference]
            self._last_used.pop(reference, None)
            log.info("model %s dropped from memory (not CURRENT, not recently used)", reference)

    def _start_refresher(self) -> None:
        if self._refresher is not None or self.refresh_seconds <= 0:
            return
        self._refresher = threading.Thread(
            target=self._refresh_loop, name="bv-model-refresh", daemon=True
        )
        self._refresher.start()

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.refresh_seconds):
            try:
                self.refresh()
            except Exception as error:  # the next round tries again
                log.warning("model refresh failed: %s", error)

    def stop(self) -> None:
        self._stop.set()

    def _local_file(self, name: str, version: str, card: dict[str, Any]) -> str:
        """The version's model file on this machine's disk, downloaded once and verified.

        The folder is named by the file's SHA-256 (from the card), so two registries
        that both hold ``name@v1``, or a registry rebuilt after a wipe, never share a
        file. Cards written before the digest was recorded are keyed by their
        registration time instead, and are not verified.
        """
        from bucketvision.models.loading import ModelLoadError
        from bucketvision.models.registry import file_sha256

        expected = card.get("sha256")
        identity = expected or hashlib.sha256(str(card.get("registered_at")).encode()).hexdigest()
        directory = os.path.join(self.cache_dir, "models", name, version, identity[:16])
        os.makedirs(directory, exist_ok=True)
        bucket, key = self.registry.model_key(name, version, card)
        path = os.path.join(directory, key.rsplit("/", 1)[-1])
        if not os.path.exists(path):
            partial = f"{path}.{os.getpid()}.part"
            self.store.download_file(bucket, key, partial)
            if expected and file_sha256(partial) != expected:
                os.remove(partial)
                raise ModelLoadError(
                    f"{name}@{version}: s3://{bucket}/{key} does not match the sha256 on its"
                    " card (the file was replaced or corrupted after registration); register"
                    " the model again as a new version"
                )
            os.replace(partial, path)
        return path

    def _load(self, reference: str) -> Any:
        from bucketvision.models.families import family
        from bucketvision.models.loading import ModelLoadError, load_for_card

        name, version = parse_model_ref(reference)
        if version is None:
            raise ModelLoadError(f"{reference}: a job must pin a version (name@vN)")
        card = self.registry.card(name, version)
        path = self._local_file(name, version, card)
        model = load_for_card(path, card, allow_unsafe=name in self.unsafe_models, name=name)
        if name in self.unsafe_models:
            log.warning("loaded %s with Keras safe mode OFF (BV_UNSAFE_MODELS)", reference)
        try:
            serve = family(str(card.get("task"))).resolve("serve")
            served = serve(model, card, self.forward_batch)
        except (KeyError, ValueError) as error:
            raise ModelLoadError(
                f"{reference}: its card does not describe a servable model: {error}"
            ) from None
        served.warm_up()
        log.info("loaded model %s (pid %s)", reference, os.getpid())
        return served


class WorkerRuntime:
    """Everything a pool child needs to run batches."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = S3Store.from_settings(
            settings, pool_size=max(settings.io_threads, 10) * 2, data=open_data_plane(settings)
        )
        self.jobs = JobStore.from_url(settings.broker_url)
        self.registry = ModelRegistry(self.store, settings.models_uri)
        self.models = ModelCache(
            self.registry,
            self.store,
            settings.model_cache_dir,
            settings.forward_batch,
            refresh_seconds=settings.model_refresh_seconds,
            unsafe_models=settings.unsafe_models,
        )
        # I/O threads run in the batch's log context (job id and batch on their lines).
        self.pool = ContextThreadPool(settings.io_threads, thread_name_prefix="bv-io")
        self.limits = Limits(settings.max_image_pixels, settings.max_object_bytes)
        self.identity = f"{socket.gethostname()}:{os.getpid()}"
        self.cpu_threads = 1  # decoding and results per batch: the child's CPU share (_pin_child)
        self._sender: Celery | None = None

    @property
    def sender(self) -> Celery:
        """A Celery app on the broker for the batches this child sends (the feeding window)."""
        if self._sender is None:
            self._sender = make_celery(self.settings)
        return self._sender


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
