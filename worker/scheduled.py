"""The ``scheduled_train`` task's body: one beat tick of one schedule entry.

Checks ``min_new_items`` against the dataset counts on CURRENT's card, then
records a training run and runs it like ``bucketvision train`` would, under the
same per-model lock, so a run still going is never started twice.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

from bucketvision.infra.s3 import parse_s3_uri
from bucketvision.infra.schedule import TrainEntry
from bucketvision.infra.training_runs import TrainingRuns, new_run_id
from bucketvision.models.dataset_layouts import DatasetError, read_layout
from bucketvision.models.registry import ModelNotFound
from bucketvision.models.training import TrainingRequest
from bucketvision.worker.runtime import get_runtime
from bucketvision.worker.training_task import handle_training

log = logging.getLogger("bucketvision.beat")


def grown_enough(entry: TrainEntry, total: int, previous: int | None) -> bool:
    """Whether the dataset grew by ``min_new_items`` since the version CURRENT was trained on."""
    return previous is None or entry.min_new_items <= 0 or total - previous >= entry.min_new_items


def _about(entry: TrainEntry) -> dict[str, Any]:
    return {"name": entry.name, "model": entry.name, "task": entry.task}


def handle_scheduled_train(body: dict[str, Any]) -> dict[str, Any]:
    runtime = get_runtime()
    entry = TrainEntry(**body)
    try:
        layout = read_layout(runtime.store, parse_s3_uri(entry.dataset), entry.task)
    except DatasetError as error:
        log.error("scheduled training of %s skipped: %s", entry.name, error)
        return {**_about(entry), "state": "skipped", "outcome": "skipped", "reason": str(error)}
    total = sum(layout.counts().values())
    try:
        counts = runtime.registry.resolve(entry.name).card.get("dataset_counts") or {}
        previous: int | None = sum(int(value) for value in counts.values())
    except ModelNotFound:
        previous = None
    if not grown_enough(entry, total, previous):
        log.info(
            "scheduled training of %s skipped: %d items, %d at CURRENT, min_new_items %d",
            entry.name,
            total,
            previous,
            entry.min_new_items,
        )
        reason = "not enough new items"
        return {**_about(entry), "state": "skipped", "outcome": "skipped", "reason": reason}
    request = TrainingRequest(
        name=entry.name, task=entry.task, dataset=entry.dataset, epochs=entry.epochs
    )
    run_id = new_run_id(entry.name)
    runs = TrainingRuns(runtime.jobs.redis)
    runs.create(run_id, asdict(request))
    runs.update(run_id, counts=layout.counts(), trigger="beat")
    return handle_training({"run_id": run_id, "request": asdict(request)})
