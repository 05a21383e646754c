"""The Celery application shared by producer and worker: configuration only.

The producer uses this app to send tasks by name and never imports the worker's
task code (nor TensorFlow); the worker registers its tasks on the same app.
"""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

from infra.settings import Settings

INFERENCE_QUEUE = "inference"
TRAINING_QUEUE = "training"
TASK_NAMES = {
    "classify": "bucketvision.classify",
    "detect": "bucketvision.detect",
    "segment": "bucketvision.segment",
    "generate": "bucketvision.generate",
    "train": "bucketvision.train",
    "scheduled_train": "bucketvision.scheduled_train",
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
        task_ignore_result=True,
        result_backend=None,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout,
            "socket_keepalive": True,
            "health_check_interval": 25,
        },
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
