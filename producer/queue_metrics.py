"""``bv_queue_depth`` and ``bv_queue_oldest_wait_seconds``: the backlog, read on each scrape.

The queues are Redis lists that kombu pushes on the left and workers pop on the right,
so the oldest waiting message is at index -1. Its body (Celery's protocol 2: base64 JSON
``[args, kwargs, embed]``) carries the message's ``enqueued_at`` (``docs/queue-messages.md``),
stamped by the producer just before sending: now minus that is how long the backlog's
head has waited. A queue that keeps growing, or whose head keeps aging, is what an
autoscaler or an alert wants (``infra/prometheus/alerts.yml``).

Served by the processes that run all the time on the producer side (watcher, beat)
with ``BV_METRICS_PORT``; two of them report the same values (take ``max`` in queries).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


def enqueued_at(raw: bytes | None) -> float | None:
    """The ``enqueued_at`` of a kombu message as Redis holds it; None if it has none."""
    if not raw:
        return None
    try:
        envelope = json.loads(raw)
        body: Any = envelope["body"]
        if envelope.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        stamp = args[0].get("enqueued_at") if args and isinstance(args[0], dict) else None
        return float(stamp) if isinstance(stamp, int | float) else None
    except (ValueError, KeyError, IndexError, TypeError):
        return None


class QueueCollector(Collector):
    """Reads each queue's length and its oldest message on every scrape."""

    def __init__(
        self, client: Any, queues: Sequence[str], clock: Callable[[], float] = time.time
    ) -> None:
        self.client, self.queues, self.clock = client, tuple(queues), clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily("bv_queue_depth", "Messages waiting in a queue", labels=["queue"])
        oldest = GaugeMetricFamily(
            "bv_queue_oldest_wait_seconds",
            "How long the oldest waiting message of a queue has waited (0 when empty)",
            labels=["queue"],
        )
        try:
            pipe = self.client.pipeline()
            for queue in self.queues:
                pipe.llen(queue)
                pipe.lindex(queue, -1)
            answers = pipe.execute()
        except Exception:  # Redis down: no sample rather than a failed scrape
            return
        now = self.clock()
        for index, queue in enumerate(self.queues):
            length, head = int(answers[2 * index]), answers[2 * index + 1]
            depth.add_metric([queue], length)
            stamp = enqueued_at(head) if length else None
            oldest.add_metric([queue], max(0.0, now - stamp) if stamp is not None else 0.0)
        yield depth
        yield oldest
