"""The Celery application shared by producer and worker: configuration only.

The producer uses this app to send tasks by name and never imports the worker's
task code (nor TensorFlow); the worker registers its tasks on the same app.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

from celery import Celery
from kombu import Exchange, Queue

from bucketvision.infra.settings import Settings
from bucketvision.infra.vocabulary import TASK_NAMES

INFERENCE_QUEUE = "inference"
TRAINING_QUEUE = "training"
# How long a new pool child may take to report itself up. Each child imports TensorFlow
# and initialises its GPU first, which takes seconds on a busy CPU machine and tens of
# seconds with CUDA; Celery's default of 4 s kills such a child and starts another that
# takes as long, so a pool whose child died was never whole again.
CHILD_START_SECONDS = 180.0


def _transport_options(visibility_timeout: int) -> dict[str, object]:
    """Redis transport options: how soon a message whose worker died is delivered again.

    kombu sweeps for unacknowledged messages older than the visibility timeout
    every ``unacked_restore_interval`` x ``unacked_restore_throttle`` seconds,
    100 s by default, which made recovery from a killed worker take about
    100 s even at a 20 s timeout. Here the sweep runs every quarter of the
    timeout (1-10 s). The sweep's lock expires after 60 s rather than 300 s, so
    a lock left behind by a sweep cut short by a Redis outage delays little.
    """
    return {
        "visibility_timeout": visibility_timeout,
        "unacked_restore_interval": max(1, min(10, visibility_timeout // 4)),
        "unacked_restore_throttle": 1,
        "unacked_mutex_expire": 60,
        "socket_keepalive": True,
        "health_check_interval": 25,
    }


def make_celery(settings: Settings) -> Celery:
    """A Celery app on the Redis broker with the service's delivery guarantees."""
    app = Celery("bucketvision", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        # JSON only: a pickled message is refused, never unpickled.
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        event_serializer="json",
        # At-least-once: ack after the task ran; requeue when the child dies.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_proc_alive_timeout=CHILD_START_SECONDS,
        task_ignore_result=True,
        result_backend=None,
        broker_transport_options=_transport_options(settings.visibility_timeout),
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        # A task running when the broker connection drops finishes and records its
        # results (outages are ridden out in process); its lost ack only means one
        # redelivery, which the job store recognises as already recorded.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        # Each queue on its own exchange and routing key: a message sent to one queue
        # must never also land in the other.
        task_queues=tuple(
            Queue(name, Exchange(name, type="direct"), routing_key=name)
            for name in (INFERENCE_QUEUE, TRAINING_QUEUE)
        ),
        task_default_queue=INFERENCE_QUEUE,
        task_routes={
            TASK_NAMES["train"]: {"queue": TRAINING_QUEUE},
            TASK_NAMES["scheduled_train"]: {"queue": TRAINING_QUEUE},
        },
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
    )
    return app


def task_ids_of(raws: Iterable[bytes], unacked: bool) -> Iterator[str]:
    """The task ids of raw kombu messages (list entries, or ``unacked`` hash values)."""
    for raw in raws:
        try:
            decoded = json.loads(raw)
            message = decoded[0] if unacked else decoded
            yield str(message["headers"]["id"])
        except (ValueError, KeyError, IndexError, TypeError):
            continue
