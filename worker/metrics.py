"""The worker's Prometheus metrics (README "Metrics"), one recording function per event.

Built only when ``BV_METRICS_PORT`` is set, after :func:`infra.metrics.start_multiprocess_exporter`
has pointed ``PROMETHEUS_MULTIPROC_DIR`` at the worker's directory, so that each
pool child writes its own values and the parent serves their sum. The task hooks
(:mod:`worker.hooks`) call these functions with what a task returned; the batch
and training code never sees Prometheus. Labels stay few: task, stage, queue,
status, model and version, never a key or a job id.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from bucketvision.infra.confidence import DRIFT_PSI

STAGES = ("download", "decode", "infer", "upload")
STATUSES = ("ok", "error", "skipped")
TRAINING_OUTCOMES = ("promoted", "shadow", "rejected", "failed", "skipped")
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
WAIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class WorkerMetrics:
    """The worker's metrics; ``registry=None`` in the worker (the parent collects files)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        where: dict[str, Any] = {"registry": registry}
        self.items = Counter(
            "bv_items_total", "Items finished, once per manifest line", ["task", "status"], **where
        )
        self.stage_seconds = Histogram(
            "bv_stage_seconds",
            "Seconds a batch spent in a stage, summed over its items",
            ["task", "stage"],
            buckets=SECONDS_BUCKETS,
            **where,
        )
        self.batch_size = Histogram(
            "bv_batch_size", "Items per batch task", ["task"], buckets=SIZE_BUCKETS, **where
        )
        self.batch_seconds = Histogram(
            "bv_batch_seconds",
            "Wall seconds of a batch task in its pool child",
            ["task"],
            buckets=SECONDS_BUCKETS,
            **where,
        )
        self.batch_cpu = Counter(
            "bv_batch_cpu_seconds",
            "Process CPU seconds (all threads) of batch tasks in the pool children; over "
            "bv_items_total, the CPU per image",
            ["task"],
            **where,
        )
        self.queue_wait = Histogram(
            "bv_queue_wait_seconds",
            "Seconds from enqueue to the start of the task",
            ["queue", "task"],
            buckets=WAIT_BUCKETS,
            **where,
        )
        self.tasks = Counter(
            "bv_tasks_total", "Tasks run, by Celery end state", ["task", "state"], **where
        )
        self.jobs_finished = Counter(
            "bv_jobs_finished_total", "Jobs finalised (summary written)", ["task", "state"], **where
        )
        self.job_seconds = Histogram(
            "bv_job_seconds",
            "Wall seconds of a job, from submission to its end",
            ["task", "state"],
            buckets=WAIT_BUCKETS,
            **where,
        )
        self.dead_letters = Counter(
            "bv_dead_letter_batches_total", "Batches dead-lettered", ["task"], **where
        )
        self.worker_deaths = Counter(
            "bv_worker_deaths_total",
            "Batches delivered again because the worker running them died",
            ["task"],
            **where,
        )
        self._model_metrics(where)
        self._models: dict[str, str] = {}  # name@version -> task, as set in model_info

    def _model_metrics(self, where: dict[str, Any]) -> None:
        """What the worker says about its models: loaded versions, training runs, drift."""
        self.model_info = Gauge(
            "bv_model_info",
            "1 for a model version loaded in a worker child (0 once dropped)",
            ["model", "version", "task"],
            multiprocess_mode="livemax",
            **where,
        )
        self.training_runs = Counter(
            "bv_training_runs_total",
            "Training runs that ended",
            ["model", "task", "outcome"],
            **where,
        )
        self.training_metric = Gauge(
            "bv_training_metric",
            "Scalar evaluation metrics of a model's last finished training run",
            ["model", "metric"],
            multiprocess_mode="mostrecent",
            **where,
        )
        self.confidence_drift = Gauge(
            "bv_confidence_drift",
            "Population stability index of the last finished job's top-confidence histogram"
            " against its model card's (above 0.2: the job's images are unlike the model's"
            " validation split)",
            ["model"],
            multiprocess_mode="mostrecent",
            **where,
        )
        self.drifted_jobs = Counter(
            "bv_confidence_drift_jobs_total",
            "Jobs whose top-confidence histogram drifted from their model card's (PSI above 0.2)",
            ["model"],
            **where,
        )

    def record_queue_wait(self, queue: str, task: str, seconds: float) -> None:
        """A task started ``seconds`` after the producer enqueued it."""
        self.queue_wait.labels(queue, task).observe(max(0.0, seconds))

    def record_task(self, task: str, state: str) -> None:
        """A task ended in Celery ``state`` (success, failure, rejected, ...)."""
        self.tasks.labels(task, state.lower()).inc()

    def record_batch(
        self,
        task: str,
        *,
        size: int,
        seconds: float,
        stage_seconds: Mapping[str, float],
        cpu_seconds: float = 0.0,
        counts: Mapping[str, int] | None,
        dead_letter: bool = False,
    ) -> None:
        """A batch ran; ``counts`` only when this run recorded it (items count once)."""
        self.batch_size.labels(task).observe(size)
        self.batch_seconds.labels(task).observe(max(0.0, seconds))
        self.batch_cpu.labels(task).inc(max(0.0, cpu_seconds))
        for stage in STAGES:
            value = stage_seconds.get(stage)
            if isinstance(value, int | float) and math.isfinite(value):
                self.stage_seconds.labels(task, stage).observe(max(0.0, float(value)))
        for status in STATUSES:
            if counts and counts.get(status):
                self.items.labels(task, status).inc(int(counts[status]))
        if dead_letter and counts is not None:
            self.dead_letters.labels(task).inc()

    def record_redelivery(self, task: str) -> None:
        """A batch came back because the worker of its previous attempt died."""
        self.worker_deaths.labels(task).inc()

    def record_job_finished(self, task: str, state: str, seconds: float | None = None) -> None:
        """A job ended; its wall time (submission to the end) goes to ``bv_job_seconds``."""
        self.jobs_finished.labels(task, state).inc()
        if seconds is not None and math.isfinite(seconds):
            self.job_seconds.labels(task, state).observe(max(0.0, seconds))

    def record_confidence(self, model: str, psi: float) -> None:
        """A job finished with this PSI against its model card (infra/confidence.py)."""
        self.confidence_drift.labels(model).set(psi)
        if psi > DRIFT_PSI:
            self.drifted_jobs.labels(model).inc()

    def record_models(self, serving: Mapping[str, str], loaded: Iterable[str]) -> None:
        """``serving`` (name@version -> task) is loaded; versions not in ``loaded`` are gone."""
        still = set(loaded)
        for reference, task in serving.items():
            name, _, version = reference.partition("@")
            self.model_info.labels(name, version, task).set(1)
            self._models[reference] = task
        for reference, task in list(self._models.items()):
            if reference not in still and reference not in serving:
                name, _, version = reference.partition("@")
                self.model_info.labels(name, version, task).set(0)
                del self._models[reference]

    def record_training(
        self, model: str, task: str, outcome: str, metrics: Mapping[str, Any] | None = None
    ) -> None:
        """A training run ended; its scalar metrics become the model's last known ones."""
        if outcome not in TRAINING_OUTCOMES:
            return
        self.training_runs.labels(model, task, outcome).inc()
        for name, value in (metrics or {}).items():
            scalar = isinstance(value, int | float) and not isinstance(value, bool)
            if scalar and math.isfinite(value):
                self.training_metric.labels(model, name).set(float(value))
