"""Celery task hooks: log context and metrics around every task, outside the task code.

:class:`TaskHooks` connects to Celery's ``task_prerun`` and ``task_postrun``
signals, which run in the pool child around each task. Before the task it binds
the message's ``job_id``, ``batch`` and ``task`` (or the training ``run_id``) to
the log context and, with metrics, observes the queue wait from the message's
``enqueued_at``. After the task it records what the task returned (see
:func:`worker.tasks.handle_inference_batch` and :func:`worker.training_task.handle_training`)
and clears the context. A failure to record a metric is logged, never raised:
it must not fail or redeliver a batch.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from celery.signals import task_postrun, task_prerun, worker_process_shutdown

from bucketvision.infra.logs import bind_context, reset_context
from bucketvision.infra.vocabulary import BATCH_TASKS, TRAINING_TASKS, short_task_name
from bucketvision.worker.reports import BatchReport, TrainingReport, batch_finished

if TYPE_CHECKING:  # importing it loads prometheus_client: only with BV_METRICS_PORT
    from bucketvision.worker.metrics import WorkerMetrics

log = logging.getLogger("bucketvision.worker")


def message_body(args: Sequence[Any] | None) -> Mapping[str, Any]:
    """The task's JSON body (its one positional argument), or an empty mapping."""
    if args and isinstance(args[0], Mapping):
        return args[0]
    return {}


class TaskHooks:
    """Log context for every task; metrics too when ``metrics`` is given."""

    def __init__(
        self,
        metrics: WorkerMetrics | None = None,
        *,
        loaded_models: Callable[[], list[str]] | None = None,
        clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.perf_counter,
        cpu: Callable[[], float] = time.process_time,
    ) -> None:
        self.metrics = metrics
        self.loaded_models = loaded_models
        self.clock, self.timer, self.cpu = clock, timer, cpu
        # task id -> (timer, process CPU, log context) at its start
        self._running: dict[str, tuple[float, float, contextvars.Token[Mapping[str, Any] | None]]]
        self._running = {}
        # A batch finished behind its task (worker.finishing) is recorded once both its
        # task has returned and its finisher has reported, in either order:
        # (job, batch, attempt) -> (task name, state, task start, task CPU) or the final
        # report. The task is counted with its batch, last, as any task is.
        self._handed_over: dict[tuple[str, int, int], tuple[str, str, float, float]] = {}
        self._finished_first: dict[tuple[str, int, int], BatchReport] = {}
        self._meeting = threading.Lock()

    def install(self) -> None:
        """Connect to Celery's signals (in the parent, so every forked child has them)."""
        task_prerun.connect(self.before, weak=False)
        task_postrun.connect(self.after, weak=False)
        batch_finished.connect(self.finished, weak=False)
        if self.metrics is not None:
            worker_process_shutdown.connect(_child_exit, weak=False)

    def before(
        self, task_id: str = "", task: Any = None, args: Sequence[Any] | None = None, **_: Any
    ) -> None:
        name = short_task_name(getattr(task, "name", "") or "")
        body = message_body(args)
        token = bind_context(
            task_id=task_id or None,
            task=str(body.get("task") or name),
            job_id=body.get("job_id"),
            batch=body.get("batch"),
            run_id=body.get("run_id"),
        )
        self._running[task_id] = (self.timer(), self.cpu(), token)
        enqueued_at = body.get("enqueued_at")
        if self.metrics is None or not isinstance(enqueued_at, int | float):
            return
        try:
            delivery = getattr(getattr(task, "request", None), "delivery_info", None) or {}
            queue = str(delivery.get("routing_key") or "unknown")
            self.metrics.record_queue_wait(queue, name, self.clock() - float(enqueued_at))
        except Exception:
            log.exception("could not record the queue wait of task %s", task_id)

    def after(
        self,
        task_id: str = "",
        task: Any = None,
        retval: Any = None,
        state: str | None = None,
        **_: Any,
    ) -> None:
        started, cpu_started, token = self._running.pop(task_id, (None, None, None))
        try:
            if self.metrics is not None:
                seconds = self.timer() - started if started is not None else 0.0
                cpu = self.cpu() - cpu_started if cpu_started is not None else 0.0
                name = short_task_name(getattr(task, "name", "") or "")
                self.record(name, retval, state, seconds, cpu)
        except Exception:
            log.exception("could not record the metrics of task %s", task_id)
        finally:
            try:
                reset_context(token)
            except ValueError:  # set in another context: start clean instead
                reset_context()

    def record(
        self, name: str, result: Any, state: str | None, seconds: float, cpu: float = 0.0
    ) -> None:
        """Record what task ``name`` returned after ``seconds`` (``cpu``: its process CPU).

        A pool child runs one task at a time, so the CPU its process used meanwhile, in
        all its threads, is the task's: with ``bv_items_total``, what each image costs.
        """
        metrics = self.metrics
        if metrics is None:
            return
        waits_for_finisher = False
        try:
            if isinstance(result, Mapping) and name in BATCH_TASKS:
                report = BatchReport.from_json(dict(result))
                if report.finishing:
                    started = self.timer() - seconds
                    waits_for_finisher = self._task_returned(
                        metrics, name, state or "unknown", report, started, cpu
                    )
                else:
                    self._record_batch(metrics, name, report, seconds, cpu)
            elif isinstance(result, Mapping) and name in TRAINING_TASKS:
                training = TrainingReport.from_json(dict(result))
                if training.outcome:
                    metrics.record_training(
                        training.model, training.task, training.outcome, training.metrics
                    )
        finally:  # last: once a task is counted, everything it reported is recorded
            if not waits_for_finisher:
                metrics.record_task(name, state or "unknown")

    def finished(self, sender: object = None, report: BatchReport | None = None, **_: Any) -> None:
        """``batch_finished``: a batch handed to its child's finisher is recorded (or not)."""
        if self.metrics is None or report is None:
            return
        key = (report.job_id, report.batch, report.attempt)
        with self._meeting:
            returned = self._handed_over.pop(key, None)
            if returned is None:
                self._finished_first[key] = report
                return
        name, state, started, cpu = returned
        try:
            self._record_batch(self.metrics, name, report, self.timer() - started, cpu)
        except Exception:
            log.exception("could not record the metrics of batch %s of job %s", *key[1::-1])
        finally:  # last, as in record
            self.metrics.record_task(name, state)

    def _task_returned(
        self,
        metrics: WorkerMetrics,
        name: str,
        state: str,
        report: BatchReport,
        started: float,
        cpu: float,
    ) -> bool:
        """The task of a batch its finisher completes returned: record it if that is done.

        Its seconds run from the task's start to its record; its CPU is the process's while
        the task ran (the finishing overlaps the next task, whose CPU it is counted in).
        True when the finisher has not reported yet: it counts the task when it does.
        """
        key = (report.job_id, report.batch, report.attempt)
        with self._meeting:
            final = self._finished_first.pop(key, None)
            if final is None:
                self._handed_over[key] = (name, state, started, cpu)
                return True
        self._record_batch(metrics, name, final, self.timer() - started, cpu)
        return False

    def _record_batch(
        self, metrics: WorkerMetrics, name: str, report: BatchReport, seconds: float, cpu: float
    ) -> None:
        if report.attempt > 1:
            metrics.record_redelivery(name)
        if report.job_finished:
            metrics.record_job_finished(name, report.job_finished, report.job_seconds)
            if report.confidence_psi is not None:
                metrics.record_confidence(report.model, report.confidence_psi)
        if report.items is None:  # dropped, or recorded by an earlier attempt
            return
        metrics.record_batch(
            name,
            size=report.items,
            seconds=seconds,
            cpu_seconds=cpu,
            stage_seconds=report.stage_seconds,
            counts=report.counts if report.recorded else None,
            dead_letter=report.dead_letter,
        )
        model = report.model
        if "@" in model and not report.dead_letter:
            loaded = self.loaded_models() if self.loaded_models else [model]
            metrics.record_models({model: name} if model in loaded else {}, loaded)


def _child_exit(pid: int | None = None, **_: Any) -> None:
    """``worker_process_shutdown``: this child's live gauges leave the sums."""
    from bucketvision.infra.metrics import mark_dead

    if pid is not None:
        mark_dead(pid)
