"""What ``make bench-quality`` and ``make bench-real`` share: a private service, a training
run through the CLI, and the table they print.

:func:`training_service` starts a Redis of its own on a free port (never a Redis already
running on the machine, whatever ``BV_BROKER_URL`` says, so no queue or database of
anyone else's is touched), a moto S3 server, and one ``bucketvision worker`` child on the
``training`` and ``inference`` queues (one child, so each run has both cores and its
time is its own). :func:`train_and_show` runs ``bucketvision train NAME --task T
--dataset URI --wait`` at default settings and reads the card with ``models show``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bucketvision.infra.local_services import free_port, local_stack
from bucketvision.infra.s3 import S3Store
from bucketvision.infra.settings import Settings
from tests.helpers import run_cli

COLUMNS = (
    ("dataset", 22),
    ("task", 8),
    ("metric", 10),
    ("value", 7),
    ("target", 7),
    ("met", 5),
    ("steps", 6),
    ("stopped because", 40),
    ("train s", 8),
    ("wall s", 7),
)


@dataclass
class Service:
    """The environment the CLI needs, the store, and the worker."""

    env: dict[str, str]
    store: S3Store
    worker: Any


def cli(env: dict[str, str], *args: str, timeout: float = 1800) -> Any:
    """``bucketvision ARGS``; raises with the end of stderr when it fails."""
    done = run_cli(env, *args, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"bucketvision {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done


@contextlib.contextmanager
def training_service(log_dir: Path, models_bucket: str) -> Iterator[Service]:
    """A private Redis, a moto S3 server and a one-child worker (see the module doc)."""
    from tests.workers import WorkerProcess

    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "quality",
            "AWS_SECRET_ACCESS_KEY": "quality-secret",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "BV_MODELS_URI": f"s3://{models_bucket}/models/",
        }
    )
    private_redis = f"redis://127.0.0.1:{free_port()}/0"
    with local_stack(private_redis, None) as (broker, endpoint):
        env = {"BV_BROKER_URL": broker, "BV_S3_ENDPOINT_URL": endpoint}
        os.environ.update(env)
        store = S3Store.from_settings(Settings.from_env())
        worker = WorkerProcess(
            env,
            log_dir / "training-bench-worker.log",
            "--queues",
            "training,inference",
            "--cpu",
            "--concurrency",
            "1",
        )
        try:
            worker.wait_for_children(1)
            yield Service(env, store, worker)
        finally:
            worker.stop()


def train_and_show(service: Service, name: str, task: str, dataset: str) -> dict[str, Any]:
    """Train ``name`` at default settings; the card, plus ``wall_seconds`` of the run."""
    print(f"training {name} ({task}) on {dataset} ...", file=sys.stderr, flush=True)
    began = time.perf_counter()
    cli(service.env, "train", name, "--task", task, "--dataset", dataset, "--wait", "--quiet")
    wall = time.perf_counter() - began
    card: dict[str, Any] = json.loads(cli(service.env, "models", "show", name, "--json").stdout)
    card["wall_seconds"] = round(wall, 1)
    return card


def table_row(dataset: str, card: dict[str, Any], metric: str, target: float) -> dict[str, Any]:
    """One row of the table from a trained card; ``met`` compares the metric with ``target``."""
    raw = card.get("metrics", {}).get(metric)
    value = float(raw) if isinstance(raw, int | float) else None
    return {
        "dataset": dataset,
        "task": card.get("task"),
        "model": f"{card.get('name')}@{card.get('version')}",
        "metric": metric,
        "value": None if value is None else round(value, 4),
        "target": target,
        "met": value is not None and value >= target,
        "steps": card.get("steps_trained"),
        "stopped because": card.get("stopped_because"),
        "best_epoch": card.get("best_epoch"),
        "epochs_run": card.get("epochs_run"),
        "train s": card.get("training_seconds"),
        "wall s": card.get("wall_seconds"),
        "evaluated_on": card.get("evaluated_on"),
        "dataset_counts": card.get("dataset_counts"),
    }


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows under a header, one line each, in :data:`COLUMNS` order."""

    def cell(value: Any, width: int) -> str:
        if isinstance(value, float):
            text = f"{value:.4f}" if value < 10 else f"{value:.1f}"
        else:
            text = "-" if value is None else str(value)
        return text.ljust(width)

    lines = ["  ".join(name.ljust(width) for name, width in COLUMNS)]
    lines.append("  ".join("-" * width for _, width in COLUMNS))
    for row in rows:
        lines.append("  ".join(cell(row.get(name), width) for name, width in COLUMNS))
    return "\n".join(line.rstrip() for line in lines)
