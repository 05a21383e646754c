"""Worker metrics: the task hooks turn what a task returned into the README's metrics."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from bucketvision.infra.logs import current_context
from bucketvision.worker.hooks import TaskHooks
from bucketvision.worker.metrics import WorkerMetrics
from bucketvision.worker.reports import BatchReport

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_000_000.0


def _task(name: str = "bucketvision.classify", queue: str = "inference") -> Any:
    return SimpleNamespace(name=name, request=SimpleNamespace(delivery_info={"routing_key": queue}))


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def timer() -> Clock:
    return Clock()


@pytest.fixture
def hooks(registry: CollectorRegistry, timer: Clock) -> TaskHooks:
    loaded = ["digits@v2"]
    hooks = TaskHooks(
        WorkerMetrics(registry),
        loaded_models=lambda: list(loaded),
        clock=lambda: NOW,
        timer=timer,
        cpu=lambda: timer.now * 0.5,  # the process used half a core while the task ran
    )
    hooks.loaded = loaded  # type: ignore[attr-defined]  # the test changes what is loaded
    return hooks


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def _batch_result(**changes: Any) -> dict[str, Any]:
    result: dict[str, Any] = {
        "job_id": "J1",
        "batch": 3,
        "task": "classify",
        "model": "digits@v2",
        "recorded": True,
        "attempt": 1,
        "items": 16,
        "counts": {"ok": 13, "error": 3, "skipped": 0},
        "stage_seconds": {"download": 0.4, "decode": 0.1, "infer": 0.25, "upload": 0.3},
        "dead_lettered_items": 0,
        "job_finished": None,
    }
    result.update(changes)
    return BatchReport.from_json(result).to_json()


def _run(hooks: TaskHooks, timer: Clock, body: dict[str, Any], result: Any, **kw: Any) -> None:
    task = kw.pop("task", _task())
    hooks.before(task_id="t-1", task=task, args=[body])
    timer.now += 1.5
    hooks.after(task_id="t-1", task=task, args=[body], retval=result, state="SUCCESS")


def test_a_batch_is_counted_by_status_stage_and_size(
    hooks: TaskHooks, registry: CollectorRegistry, timer: Clock
) -> None:
    body = {"job_id": "J1", "batch": 3, "task": "classify", "enqueued_at": NOW - 2.5}
    _run(hooks, timer, body, _batch_result())
    assert _value(registry, "bv_items_total", task="classify", status="ok") == 13
    assert _value(registry, "bv_items_total", task="classify", status="error") == 3
    assert _value(registry, "bv_items_total", task="classify", status="skipped") is None
    for stage, seconds in {"download": 0.4, "decode": 0.1, "infer": 0.25, "upload": 0.3}.items():
        labels = {"task": "classify", "stage": stage}
        assert _value(registry, "bv_stage_seconds_count", **labels) == 1
        assert _value(registry, "bv_stage_seconds_sum", **labels) == pytest.approx(seconds)
    assert _value(registry, "bv_batch_size_sum", task="classify") == 16
    assert _value(registry, "bv_batch_size_bucket", task="classify", le="16.0") == 1
    assert _value(registry, "bv_batch_size_bucket", task="classify", le="8.0") == 0
    assert _value(registry, "bv_batch_seconds_sum", task="classify") == pytest.approx(1.5)
    assert _value(registry, "bv_batch_cpu_seconds_total", task="classify") == pytest.approx(0.75)
    wait = {"queue": "inference", "task": "classify"}
    assert _value(registry, "bv_queue_wait_seconds_sum", **wait) == pytest.approx(2.5)
    assert _value(registry, "bv_queue_wait_seconds_count", **wait) == 1
    info = {"model": "digits", "version": "v2", "task": "classify"}
    assert _value(registry, "bv_model_info", **info) == 1
    assert _value(registry, "bv_tasks_total", task="classify", state="success") == 1
    assert _value(registry, "bv_jobs_finished_total", task="classify", state="finished") is None


def test_items_count_once_when_another_attempt_recorded_the_batch(
    hooks: TaskHooks, registry: CollectorRegistry, timer: Clock
) -> None:
    body = {"job_id": "J1", "batch": 3, "task": "classify"}  # an old message: no enqueued_at
    _run(hooks, timer, body, _batch_result(recorded=False, attempt=2))
    assert _value(registry, "bv_items_total", task="classify", status="ok") is None
    assert _value(registry, "bv_stage_seconds_count", task="classify", stage="infer") == 1
    assert _value(registry, "bv_worker_deaths_total", task="classify") == 1
    wait = {"queue": "inference", "task": "classify"}
    assert _value(registry, "bv_queue_wait_seconds_count", **wait) is None
    already = {"job_id": "J1", "batch": 3, "task": "classify", "model": "digits@v2"}
    _run(
        hooks, timer, body, {**already, "recorded": False, "attempt": 3, "job_finished": "finished"}
    )
    assert _value(registry, "bv_batch_size_count", task="classify") == 1  # not run again
    assert _value(registry, "bv_worker_deaths_total", task="classify") == 2
    assert _value(registry, "bv_jobs_finished_total", task="classify", state="finished") == 1


def test_dead_letters_and_finished_jobs(
    hooks: TaskHooks, registry: CollectorRegistry, timer: Clock
) -> None:
    result = _batch_result(
        counts={"ok": 0, "error": 16, "skipped": 0},
        stage_seconds={},
        dead_lettered_items=16,
        attempt=6,
        job_finished="failed",
    )
    _run(hooks, timer, {"job_id": "J1", "batch": 0}, result)
    assert _value(registry, "bv_dead_letter_batches_total", task="classify") == 1
    assert _value(registry, "bv_items_total", task="classify", status="error") == 16
    assert _value(registry, "bv_stage_seconds_count", task="classify", stage="infer") is None
    assert _value(registry, "bv_jobs_finished_total", task="classify", state="failed") == 1


def test_a_finished_job_reports_its_confidence_drift(
    hooks: TaskHooks, registry: CollectorRegistry, timer: Clock
) -> None:
    for job, psi in (("J1", 0.05), ("J2", 0.9)):
        result = _batch_result(job_id=job, job_finished="finished", confidence_psi=psi)
        _run(hooks, timer, {"job_id": job, "batch": 0}, result)
        assert _value(registry, "bv_confidence_drift", model="digits@v2") == psi
    assert _value(registry, "bv_confidence_drift_jobs_total", model="digits@v2") == 1
    _run(hooks, timer, {"job_id": "J3", "batch": 0}, _batch_result(job_id="J3"))  # not ended
    assert _value(registry, "bv_confidence_drift", model="digits@v2") == 0.9


def test_model_info_follows_what_the_child_has_loaded(
    hooks: TaskHooks, registry: CollectorRegistry, timer: Clock
) -> None:
    _run(hooks, timer, {"job_id": "J1", "batch": 0}, _batch_result())
    hooks.loaded[:] = ["digits@v3"]  # type: ignore[attr-defined]  # hot reload dropped v2
    _run(hooks, timer, {"job_id": "J2", "batch": 0}, _batch_result(model="digits@v3"))
    assert _value(registry, "bv_model_info", model="digits", version="v2", task="classify") == 0
    assert _value(registry, "bv_model_info", model="digits", version="v3", task="classify") == 1


def test_training_runs_and_their_metrics(
    hooks: TaskHooks, registry: CollectorRegistry, timer: Clock
) -> None:
    task = _task("bucketvision.train", "training")
    result = {
        "run_id": "R1",
        "model": "digits",
        "task": "classify",
        "state": "finished",
        "outcome": "promoted",
        "metrics": {"accuracy": 0.99, "count": 400, "per_class": {"0": {}}, "ok": True},
    }
    _run(hooks, timer, {"run_id": "R1", "request": {}, "enqueued_at": NOW - 1}, result, task=task)
    runs = {"model": "digits", "task": "classify", "outcome": "promoted"}
    assert _value(registry, "bv_training_runs_total", **runs) == 1
    assert _value(registry, "bv_training_metric", model="digits", metric="accuracy") == 0.99
    assert _value(registry, "bv_training_metric", model="digits", metric="count") == 400
    assert _value(registry, "bv_training_metric", model="digits", metric="ok") is None
    assert _value(registry, "bv_queue_wait_seconds_count", queue="training", task="train") == 1
    failed = {**result, "outcome": "failed", "metrics": None}
    _run(hooks, timer, {"run_id": "R2"}, failed, task=task)
    scheduled = _task("bucketvision.scheduled_train", "training")
    skipped = {"model": "digits", "task": "classify", "state": "skipped", "outcome": "skipped"}
    _run(hooks, timer, {"name": "digits"}, skipped, task=scheduled)
    for outcome in ("failed", "skipped"):
        runs["outcome"] = outcome
        assert _value(registry, "bv_training_runs_total", **runs) == 1
    ended = {"model": "digits", "task": "classify", "state": "ended"}  # no outcome: not counted
    _run(hooks, timer, {"run_id": "R1"}, ended, task=task)
    assert _value(registry, "bv_tasks_total", task="train", state="success") == 3


def test_the_log_context_holds_during_the_task_only(hooks: TaskHooks) -> None:
    body = {"job_id": "J9", "batch": 7, "task": "detect"}
    hooks.before(task_id="t-9", task=_task("bucketvision.detect"), args=[body])
    assert current_context() == {"task_id": "t-9", "task": "detect", "job_id": "J9", "batch": 7}
    hooks.after(task_id="t-9", task=_task("bucketvision.detect"), retval=None, state="FAILURE")
    assert current_context() == {}


def test_a_failing_metric_never_fails_the_task(
    registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(WorkerMetrics):
        def record_batch(self, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("disk full")

    hooks = TaskHooks(Broken(registry))
    hooks.before(task_id="t", task=_task(), args=[{"job_id": "J", "batch": 0}])
    hooks.after(task_id="t", task=_task(), retval=_batch_result(), state="SUCCESS")
    assert "could not record the metrics of task t" in caplog.text
    assert current_context() == {}


def test_without_a_metrics_port_nothing_loads_prometheus() -> None:
    code = """
        import sys
        import bucketvision.producer.cli
        import bucketvision.worker.command
        import bucketvision.worker.hooks
        import bucketvision.worker.tasks
        from bucketvision.worker.hooks import TaskHooks
        TaskHooks().install()
        assert "prometheus_client" not in sys.modules, "prometheus_client was imported"
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_forked_children_are_summed_and_dead_ones_leave_live_gauges(tmp_path: Path) -> None:
    """Multiprocess mode as the worker runs it: two forked children, the parent serves."""
    code = """
        import os, urllib.request
        from bucketvision.infra.metrics import start_multiprocess_exporter
        exporter = start_multiprocess_exporter(0)
        from bucketvision.worker.metrics import WorkerMetrics
        metrics = WorkerMetrics()
        children = []
        for index in range(2):
            pid = os.fork()
            if pid == 0:
                exporter.close_in_child()
                metrics.record_batch("classify", size=4, seconds=0.1, stage_seconds={"infer": 0.1},
                                     counts={"ok": 3 + index, "error": 1})
                metrics.record_models({"digits@v1": "classify"}, ["digits@v1"])
                if index == 1:
                    import time; time.sleep(30)
                os._exit(0)
            children.append(pid)
        os.waitpid(children[0], 0)
        import time; time.sleep(0.5)
        def scrape():
            url = f"http://127.0.0.1:{exporter.port}/metrics"
            return urllib.request.urlopen(url, timeout=10).read().decode()
        before = scrape()
        os.kill(children[1], 9); os.waitpid(children[1], 0)
        after = scrape()
        exporter.stop()
        print(before); print("=====");  print(after)
        print("=====", os.path.exists(exporter.directory))
    """
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    before, after, leftover = done.stdout.split("=====")
    for text in (before, after):  # counters of both children, also of the killed one
        assert 'bv_items_total{status="ok",task="classify"} 7.0' in text
        assert 'bv_items_total{status="error",task="classify"} 2.0' in text
        assert 'bv_stage_seconds_count{stage="infer",task="classify"} 2.0' in text
    assert 'bv_model_info{model="digits",task="classify",version="v1"} 1.0' in before
    assert "bv_model_info{" not in after  # both children are gone
    assert leftover.strip() == "False"  # the directory it made is removed


@pytest.mark.parametrize("finisher_first", [False, True])
def test_a_batch_finished_behind_its_task_is_counted_once_both_have_reported(
    hooks: TaskHooks, registry: CollectorRegistry, timer: Clock, finisher_first: bool
) -> None:
    """The task returns before its record (worker.finishing); its finisher reports the rest.

    Either may come first. The batch's seconds run from the task's start to the later
    of the two; its CPU is the process's while the task ran. The task is counted last,
    as for any task: a scrape that counts it also counts everything its batch reported.
    """
    body = {"job_id": "J1", "batch": 3, "task": "classify"}
    final = BatchReport.from_json(_batch_result())
    handed_over = _batch_result(recorded=False, items=None, counts={}, finishing=True)
    if finisher_first:
        hooks.finished(report=final)
    _run(hooks, timer, body, handed_over)
    if not finisher_first:
        assert _value(registry, "bv_items_total", task="classify", status="ok") is None
        assert _value(registry, "bv_tasks_total", task="classify", state="success") is None
        timer.now += 0.5
        hooks.finished(report=final)
    assert _value(registry, "bv_tasks_total", task="classify", state="success") == 1
    assert _value(registry, "bv_items_total", task="classify", status="ok") == 13
    assert _value(registry, "bv_batch_size_count", task="classify") == 1
    seconds = 1.5 if finisher_first else 2.0
    assert _value(registry, "bv_batch_seconds_sum", task="classify") == pytest.approx(seconds)
    assert _value(registry, "bv_batch_cpu_seconds_total", task="classify") == pytest.approx(0.75)
    assert not hooks._handed_over and not hooks._finished_first  # nothing kept
