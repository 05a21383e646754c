"""Producer and watcher metrics: what is enqueued (from Celery's publish signal), watcher cycles."""

from __future__ import annotations

from typing import Any

import pytest
from celery.signals import after_task_publish
from prometheus_client import CollectorRegistry

from bucketvision.producer.metrics import MeteredWatcher, ProducerMetrics, WatcherMetrics
from bucketvision.producer.watch import Watcher, WatchState


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def _publish(task: str, queue: str, message: dict[str, Any]) -> None:
    after_task_publish.send(
        sender=task,
        headers={"task": task, "id": "x"},
        body=([message], {}, {"callbacks": None}),
        exchange=queue,
        routing_key=queue,
    )


def test_every_published_task_is_counted() -> None:
    registry = CollectorRegistry()
    metrics = ProducerMetrics(registry)
    metrics.install()
    try:
        for batch in range(3):
            keys = ["a.png", "b.png"] if batch < 2 else ["c.png"]
            _publish(
                "bucketvision.classify", "inference", {"job_id": "J", "batch": batch, "keys": keys}
            )
        items = [{"index": 0, "seed": 1}, {"index": 1, "seed": 2}]
        _publish("bucketvision.generate", "inference", {"job_id": "G", "batch": 0, "items": items})
        _publish("bucketvision.scheduled_train", "training", {"name": "digits", "task": "classify"})
    finally:
        after_task_publish.disconnect(metrics._on_publish)
    assert _value(registry, "bv_producer_jobs_total", task="classify") == 1
    assert _value(registry, "bv_producer_items_enqueued_total", task="classify") == 5
    batches = {"task": "classify", "queue": "inference"}
    assert _value(registry, "bv_producer_batches_enqueued_total", **batches) == 3
    assert _value(registry, "bv_producer_items_enqueued_total", task="generate") == 2
    assert _value(registry, "bv_producer_jobs_total", task="scheduled_train") == 1
    training = {"task": "scheduled_train", "queue": "training"}
    assert _value(registry, "bv_producer_batches_enqueued_total", **training) == 1


class _FakeWatcher(Watcher):
    """The plain watcher's cycle, scripted: enqueue 3 objects, nothing, then an outage."""

    script: list[Any]

    def cycle(self, *, full: bool = False) -> str | None:
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        self.state.enqueued += step
        if step:
            self.in_flight()  # after sending, as the watcher checks --max-in-flight
        return "J" if step else None

    def in_flight(self) -> int:
        return self.state.enqueued


class _Metered(MeteredWatcher, _FakeWatcher):
    pass


def test_watcher_cycles_are_counted_and_timed() -> None:
    registry = CollectorRegistry()
    watcher = object.__new__(_Metered)  # no S3 or Redis behind it: only the cycle is metered
    watcher.metrics = WatcherMetrics(registry)
    watcher.state = WatchState()
    watcher.script = [3, 0, ConnectionError("redis down")]
    assert watcher.cycle() == "J"
    assert _value(registry, "bv_watcher_in_flight") == 3  # counted at once, not next cycle
    assert watcher.cycle() is None
    with pytest.raises(ConnectionError):
        watcher.cycle()
    assert _value(registry, "bv_watcher_cycles_total") == 2
    assert _value(registry, "bv_watcher_enqueued_total") == 3
    assert _value(registry, "bv_watcher_jobs_total") == 1
    assert _value(registry, "bv_watcher_errors_total", error="ConnectionError") == 1
    assert _value(registry, "bv_watcher_in_flight") == 3
    assert _value(registry, "bv_watcher_cycle_seconds_count") == 2


def test_bucket_events_are_counted_and_their_lag_observed() -> None:
    """A cycle's events: the new ones, the repeats, what reconciliation found, the lags."""
    registry = CollectorRegistry()
    watcher = object.__new__(_Metered)
    watcher.metrics = WatcherMetrics(registry)
    watcher.state = WatchState()
    events = watcher.state.events

    def one_cycle() -> None:  # what _take_events and a reconciliation add during a cycle
        events.received += 5
        events.duplicate += 2
        events.reconciled += 1
        events.lags += [0.2, 0.4, 2.5]

    watcher.script = [0, 0]
    original = _FakeWatcher.cycle

    def cycle(self: _FakeWatcher, *, full: bool = False) -> str | None:
        one_cycle()
        return original(self, full=full)

    _FakeWatcher.cycle = cycle  # type: ignore[method-assign]
    try:
        watcher.cycle()
        watcher.cycle()
    finally:
        _FakeWatcher.cycle = original  # type: ignore[method-assign]
    assert _value(registry, "bv_watcher_events_total", outcome="new") == 6
    assert _value(registry, "bv_watcher_events_total", outcome="duplicate") == 4
    assert _value(registry, "bv_watcher_reconciled_total") == 2
    assert _value(registry, "bv_watcher_event_lag_seconds_count") == 6
    assert _value(registry, "bv_watcher_event_lag_seconds_bucket", le="0.5") == 4
    assert events.lags == []  # drained into the histogram
