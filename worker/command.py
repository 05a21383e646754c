"""``bucketvision worker``: a Celery worker with one pool child per GPU.

The parent never imports TensorFlow. Each prefork child, when it starts
(``worker_process_init``), takes the GPU of its pool index by setting
``CUDA_VISIBLE_DEVICES`` before TensorFlow loads, turns on memory growth, and
takes its share of the CPU threads. With ``--cpu`` GPUs are hidden and the
cores are split between the children.

Logging (``BV_LOG_FORMAT``) and the task hooks (log context, metrics) are set up
here, in the parent, before the pool forks. With ``BV_METRICS_PORT`` the parent
serves ``/metrics`` for the whole pool (:mod:`infra.metrics`, multiprocess mode).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass

from celery import Celery
from celery.signals import (
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)
from celery.utils.log import current_process_index

from bucketvision.infra.batches import start_lost_batch_audit
from bucketvision.infra.errors import UserError
from bucketvision.infra.jobs import JobStore
from bucketvision.infra.logs import configure_logging, leave_logging_to_us
from bucketvision.infra.metrics import Exporter, start_multiprocess_exporter
from bucketvision.infra.queue import INFERENCE_QUEUE, TRAINING_QUEUE, make_celery
from bucketvision.infra.s3 import S3Store
from bucketvision.infra.settings import Settings
from bucketvision.worker.finishing import drain_finisher
from bucketvision.worker.hooks import TaskHooks

log = logging.getLogger("bucketvision.worker")


@dataclass(frozen=True)
class Placement:
    """Which device each pool child uses and how many CPU threads it gets."""

    gpus: tuple[str, ...]
    concurrency: int
    threads_per_child: int

    def device_for(self, index: int) -> str:
        """The ``CUDA_VISIBLE_DEVICES`` value for pool child ``index`` ("-1" hides GPUs)."""
        return self.gpus[index % len(self.gpus)] if self.gpus else "-1"


def detect_gpus() -> str | None:
    """GPU indexes that ``nvidia-smi`` lists, without importing TensorFlow; None if none."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return None
    try:
        # Nvidia-smi from PATH, fixed arguments, no shell (bandit B603).
        listing = subprocess.run(  # nosec B603
            [binary, "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    indexes = [line.strip() for line in listing.splitlines() if line.strip().isdigit()]
    return ",".join(indexes) or None


def plan_placement(gpus: str | None, cpu: bool, concurrency: int | None) -> Placement:
    """Decide children and devices from the flags; no flag means every GPU, else the CPU."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    if gpus and cpu:
        raise UserError("give either --gpus or --cpu, not both")
    if not gpus and not cpu:
        gpus = detect_gpus()
    if gpus:
        devices = tuple(part.strip() for part in gpus.split(",") if part.strip())
        if not devices or not all(device.isdigit() for device in devices):
            raise UserError(f"--gpus {gpus!r}: give GPU indexes like 0,1")
        children = concurrency or len(devices)
        return Placement(devices, children, max(1, cores // children))
    children = concurrency or min(2, cores)
    return Placement((), children, max(1, cores // children))


def _pin_child(placement: Placement) -> None:
    index = current_process_index(base=0) or 0
    os.environ["CUDA_VISIBLE_DEVICES"] = placement.device_for(index)
    from bucketvision.worker.runtime import configure_tensorflow, get_runtime

    info = configure_tensorflow(placement.threads_per_child)
    get_runtime().cpu_threads = placement.threads_per_child
    log.info(
        "pool child %s: CUDA_VISIBLE_DEVICES=%s, %s",
        index,
        os.environ["CUDA_VISIBLE_DEVICES"],
        info,
    )


def run_worker(
    *,
    queues: str = INFERENCE_QUEUE,
    gpus: str | None = None,
    cpu: bool = False,
    concurrency: int | None = None,
    loglevel: str = "INFO",
    settings: Settings | None = None,
) -> None:
    """Start the worker in this process; returns when it shuts down."""
    from bucketvision.worker.tasks import register_tasks

    settings = settings or Settings.from_env()
    placement = plan_placement(gpus, cpu, concurrency)
    wanted = [queue.strip() for queue in queues.split(",") if queue.strip()]
    unknown = sorted(set(wanted) - {INFERENCE_QUEUE, TRAINING_QUEUE})
    if unknown:
        raise UserError(f"unknown queue(s) {', '.join(unknown)}; use inference and/or training")
    app = make_celery(settings)
    register_tasks(app)
    configure_logging(loglevel, settings.log_format)
    leave_logging_to_us()
    # First: a child's finishing batch is recorded before the hooks' exit handling runs.
    worker_process_shutdown.connect(drain_finisher, weak=False)
    exporter = _install_hooks(settings)

    @worker_process_init.connect(weak=False)
    def _on_child_start(**_: object) -> None:
        if exporter is not None:
            exporter.close_in_child()
        _pin_child(placement)

    if INFERENCE_QUEUE in wanted:
        _audit_lost_batches(app, settings)

    log.info(
        "starting worker: queues=%s devices=%s children=%s threads/child=%s broker=%s",
        ",".join(wanted),
        ",".join(placement.gpus) or "cpu",
        placement.concurrency,
        placement.threads_per_child,
        settings.describe()["broker_url"],
    )
    quiet = ["--quiet"] if settings.log_format == "json" else []  # no banner between JSON lines
    try:
        app.worker_main(
            [
                *quiet,
                "worker",
                f"--loglevel={loglevel}",
                f"--queues={','.join(wanted)}",
                f"--concurrency={placement.concurrency}",
                "--pool=prefork",
                "--without-gossip",
                "--without-mingle",
                f"--hostname=bucketvision-{os.getpid()}@%h",
            ]
        )
    finally:
        if exporter is not None:
            exporter.stop()


def _audit_lost_batches(app: Celery, settings: Settings) -> None:
    """Once the pool is up, the parent re-sends batches the broker lost (:mod:`infra.batches`)."""
    stop = threading.Event()

    @worker_ready.connect(weak=False)
    def _start(**_: object) -> None:
        jobs = JobStore.from_url(settings.broker_url)
        store = S3Store.from_settings(settings)
        start_lost_batch_audit(app, jobs, store, settings.lost_batch_seconds, stop)

    @worker_shutdown.connect(weak=False)
    def _stop(**_: object) -> None:
        stop.set()


def _install_hooks(settings: Settings) -> Exporter | None:
    """Log context around every task; with BV_METRICS_PORT, metrics served by this parent."""
    if settings.metrics_port is None:
        TaskHooks().install()
        return None
    exporter = start_multiprocess_exporter(settings.metrics_port)
    from bucketvision.worker.metrics import WorkerMetrics  # after the multiprocess directory is set

    TaskHooks(WorkerMetrics(), loaded_models=_loaded_models).install()
    log.info("serving metrics on :%d/metrics", exporter.port)
    return exporter


def _loaded_models() -> list[str]:
    from bucketvision.worker.runtime import get_runtime

    return get_runtime().models.loaded()
