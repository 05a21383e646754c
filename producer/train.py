"""Submitting a training run to the ``training`` queue and following it.

The request is checked where it can be at submission — the model name, the
task, and the dataset's layout (listed from S3) — so a typo fails here with a
clear message instead of minutes later in a worker.
"""

from __future__ import annotations

import time
from typing import Any

from celery import Celery

from bucketvision.infra.errors import UserError
from bucketvision.infra.messages import TrainingMessage, TrainingRequest
from bucketvision.infra.queue import TRAINING_QUEUE
from bucketvision.infra.s3 import S3Store, parse_s3_uri
from bucketvision.infra.training_runs import TrainingRuns, new_run_id
from bucketvision.infra.vocabulary import FINAL_STATES, TASK_NAMES
from bucketvision.models.dataset_layouts import read_layout
from bucketvision.models.registry import (
    ModelNotFound,
    ModelRegistry,
    RegistryError,
    parse_model_ref,
)
from bucketvision.models.training import PROMOTE_MODES
from bucketvision.producer.follow import Followed, Patience

TRAINING_PATIENCE = Patience(poll_seconds=1.0, stall_hint_seconds=60.0)


def submit_training(
    request: TrainingRequest,
    *,
    app: Celery,
    store: S3Store,
    runs: TrainingRuns,
    registry: ModelRegistry,
) -> tuple[str, dict[str, int]]:
    """Check the request, record the run and send the task; returns (run id, split counts)."""
    name, version = parse_model_ref(request.name)
    if version is not None:
        raise RegistryError(
            f"train takes a model NAME, not {request.name!r}; versions are made for you"
        )
    request.check()
    if request.promote not in PROMOTE_MODES:
        raise UserError(f"--promote must be one of {', '.join(PROMOTE_MODES)}")
    if request.epochs is not None and request.epochs < 1:
        raise UserError(f"--epochs must be at least 1, not {request.epochs}")
    try:
        existing = registry.resolve(name)
    except ModelNotFound:
        existing = None
    if existing is not None and existing.card.get("task") != request.task:
        raise RegistryError(
            f"model {name!r} is a {existing.card.get('task')} model; "
            f"train the {request.task} model under another name"
        )
    layout = read_layout(store, parse_s3_uri(request.dataset), request.task)
    run_id = new_run_id(name)
    runs.create(run_id, request.to_json())
    runs.update(run_id, counts=layout.counts())
    message = TrainingMessage(run_id, request, enqueued_at=time.time())
    app.send_task(TASK_NAMES["train"], args=[message.to_json()], queue=TRAINING_QUEUE)
    return run_id, layout.counts()


def format_run(record: dict[str, Any]) -> str:
    """A few lines a person reads at the end of ``train --wait``."""
    request = record.get("request", {})
    lines = [
        f"{record['run_id']}  {record['state']}  {request.get('name')} ({request.get('task')})"
    ]
    if record.get("version"):
        lines.append(f"  version  {record['version']}  ({record.get('decision', '')})")
    metrics = record.get("metrics") or {}
    scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    if scalars:
        lines.append("  metrics  " + ", ".join(f"{k}={v:.4g}" for k, v in scalars.items()))
    if record.get("seconds"):
        lines.append(f"  took     {record['seconds']:.0f} s")
    if record.get("error"):
        lines.append(f"  error    {record['error']}")
    return "\n".join(lines)


def followed_run(runs: TrainingRuns, run_id: str) -> Followed[dict[str, Any]]:
    """A training run to follow epoch by epoch with :func:`bucketvision.producer.follow.wait`."""

    def show(bar: Any, record: dict[str, Any]) -> None:
        if record.get("epochs") and bar.total != record["epochs"]:
            bar.total = record["epochs"]
        logs = record.get("logs") or {}
        bar.set_description_str(f"{run_id} {record.get('stage') or record['state']}", refresh=False)
        bar.set_postfix({k: f"{v:.4g}" for k, v in list(logs.items())[:4]}, refresh=False)
        bar.update(int(record.get("epoch") or 0) - bar.n)  # draws the frame (or the plain line)

    def hint(record: dict[str, Any], quiet: float) -> str | None:
        if record["state"] != "queued":
            return None
        return (
            f"queued for {quiet:.0f} s: is a worker consuming the training queue "
            "(`bucketvision worker --queues training`)?"
        )

    return Followed(
        f"training run {run_id}",
        read=lambda: runs.get(run_id),
        is_final=lambda record: record["state"] in FINAL_STATES,
        progress=lambda record: (record["state"], record.get("stage"), record.get("epoch")),
        stalled_hint=hint,
        show=show,
        label=run_id,
        unit="epoch",
    )
