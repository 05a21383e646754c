"""Metrics of the producer side (README "Metrics"): what is enqueued, and the watcher.

Imported only when ``BV_METRICS_PORT`` is set (it loads ``prometheus_client``).
:class:`ProducerMetrics` counts every task this process sends, from Celery's
``after_task_publish`` signal, so the watcher's jobs and beat's scheduled runs are
counted without the submitting code knowing. :class:`MeteredWatcher` is the
watcher with its cycles timed and counted around the plain :class:`Watcher`.
``bucketvision submit`` and ``generate`` are short-lived and serve nothing; their
jobs show in the workers' ``bv_jobs_finished_total``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import redis
from celery.signals import after_task_publish
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from bucketvision.infra.metrics import Exporter, start_exporter
from bucketvision.infra.queue import INFERENCE_QUEUE, TRAINING_QUEUE
from bucketvision.infra.settings import Settings
from bucketvision.producer.queue_metrics import QueueCollector
from bucketvision.producer.watch import Watcher
from bucketvision.producer.watch_state import EventCounts

CYCLE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
LAG_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30, 60, 120, 300)


class ProducerMetrics:
    """``bv_producer_*``: jobs, items and batch tasks this process put on a queue."""

    def __init__(self, registry: CollectorRegistry | None = REGISTRY) -> None:
        where: dict[str, Any] = {"registry": registry}
        self.jobs = Counter(
            "bv_producer_jobs_total",
            "Jobs submitted (first batch, or a training run)",
            ["task"],
            **where,
        )
        self.items = Counter(
            "bv_producer_items_enqueued_total", "Items put on a queue", ["task"], **where
        )
        self.batches = Counter(
            "bv_producer_batches_enqueued_total", "Batch tasks sent", ["task", "queue"], **where
        )

    def record_publish(self, task_name: str, queue: str, body: Any) -> None:
        """A task ``task_name`` (``bucketvision.classify``) was sent to ``queue``."""
        task = task_name.rsplit(".", 1)[-1]
        message = _first_argument(body)
        self.batches.labels(task, queue).inc()
        entries = message.get("keys", message.get("items"))
        if isinstance(entries, Sequence) and not isinstance(entries, str):
            self.items.labels(task).inc(len(entries))
        if message.get("batch", 0) == 0:  # a job's first batch, or a training request
            self.jobs.labels(task).inc()

    def install(self) -> None:
        """Count every task this process publishes from now on."""
        after_task_publish.connect(self._on_publish, weak=False)

    def _on_publish(
        self,
        headers: Mapping[str, Any] | None = None,
        body: Any = None,
        routing_key: str | None = None,
        **_: Any,
    ) -> None:
        task_name = (headers or {}).get("task")
        if task_name:
            self.record_publish(str(task_name), str(routing_key or "unknown"), body)


def _first_argument(body: Any) -> Mapping[str, Any]:
    """The task's JSON body from a protocol-2 message body ``(args, kwargs, embed)``."""
    if isinstance(body, Sequence) and body and isinstance(body[0], Sequence) and body[0]:
        first = body[0][0]
        if isinstance(first, Mapping):
            return first
    return {}


class WatcherMetrics:
    """``bv_watcher_*``: cycles, what they enqueued, their errors and the items in flight."""

    def __init__(self, registry: CollectorRegistry | None = REGISTRY) -> None:
        where: dict[str, Any] = {"registry": registry}
        self.cycles = Counter(
            "bv_watcher_cycles_total", "Watcher cycles (list, claim, enqueue)", **where
        )
        self.enqueued = Counter(
            "bv_watcher_enqueued_total", "Objects the watcher enqueued", **where
        )
        self.jobs = Counter("bv_watcher_jobs_total", "Jobs the watcher enqueued", **where)
        self.errors = Counter(
            "bv_watcher_errors_total",
            "Cycles that failed (outages are retried)",
            ["error"],
            **where,
        )
        self.in_flight = Gauge(
            "bv_watcher_in_flight", "Objects enqueued and not yet finished", **where
        )
        self.cycle_seconds = Histogram(
            "bv_watcher_cycle_seconds",
            "Duration of a watcher cycle",
            buckets=CYCLE_BUCKETS,
            **where,
        )

        self.events = Counter(
            "bv_watcher_events_total",
            "Bucket events for the watched prefix: new objects claimed, or duplicates",
            ["outcome"],
            **where,
        )
        self.reconciled = Counter(
            "bv_watcher_reconciled_total",
            "Objects a reconciliation listing found that no event announced (--events)",
            **where,
        )
        self.event_lag = Histogram(
            "bv_watcher_event_lag_seconds",
            "From an object's event time to its claim (--events)",
            buckets=LAG_BUCKETS,
            **where,
        )

    def record_events(self, before: EventCounts, after: EventCounts) -> None:
        """What the cycle's events added: claims, duplicates, reconciled objects, lags."""
        duplicates = after.duplicate - before.duplicate
        self.events.labels("new").inc(after.received - before.received - duplicates)
        self.events.labels("duplicate").inc(duplicates)
        self.reconciled.inc(after.reconciled - before.reconciled)
        for lag in after.lags:
            self.event_lag.observe(lag)
        after.lags.clear()

    def record_cycle(self, seconds: float, enqueued: int) -> None:
        self.cycles.inc()
        self.cycle_seconds.observe(seconds)
        if enqueued:
            self.enqueued.inc(enqueued)
            self.jobs.inc()

    def record_error(self, error: BaseException) -> None:
        self.errors.labels(type(error).__name__).inc()

    def record_in_flight(self, items: int) -> None:
        self.in_flight.set(items)


class MeteredWatcher(Watcher):
    """The watcher, its cycles counted and timed and its in-flight items exported."""

    def __init__(self, *args: Any, metrics: WatcherMetrics, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.metrics = metrics

    def cycle(self, *, full: bool = False) -> str | None:
        began, before = time.perf_counter(), self.state.enqueued
        events = replace(self.state.events, lags=[])
        try:
            job_id = super().cycle(full=full)
        except Exception as error:
            self.metrics.record_error(error)
            raise
        finally:
            self.metrics.record_events(events, self.state.events)
        self.metrics.record_cycle(time.perf_counter() - began, self.state.enqueued - before)
        return job_id

    def in_flight(self) -> int:
        pending = super().in_flight()
        self.metrics.record_in_flight(pending)
        return pending


def export_producer_metrics(settings: Settings) -> Exporter | None:
    """With BV_METRICS_PORT: serve this process's metrics and count what it enqueues."""
    if settings.metrics_port is None:
        return None
    exporter = start_exporter(settings.metrics_port)
    ProducerMetrics().install()
    client = redis.Redis.from_url(settings.broker_url, socket_timeout=5, socket_connect_timeout=5)
    REGISTRY.register(QueueCollector(client, (INFERENCE_QUEUE, TRAINING_QUEUE)))
    return exporter
