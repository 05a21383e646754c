"""The ``scheduled_train`` task's body: one beat tick of one schedule entry.

Checks ``min_new_items`` against the dataset counts on CURRENT's card, then
records a training run and runs it like ``bucketvision train`` would, under the
same per-model lock, so a run still going is never started twice.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from bucketvision.infra.messages import ScheduledTraining, TrainingMessage
from bucketvision.infra.s3 import parse_s3_uri
from bucketvision.infra.training_runs import TrainingRuns, new_run_id
from bucketvision.models.dataset_layouts import DatasetError, read_layout
from bucketvision.models.registry import ModelNotFound
from bucketvision.worker.reports import TrainingReport
from bucketvision.worker.runtime import get_runtime
from bucketvision.worker.training_task import handle_training

log = logging.getLogger("bucketvision.beat")


def grown_enough(entry: ScheduledTraining, total: int, previous: int | None) -> bool:
    """Whether the dataset grew by ``min_new_items`` since the version CURRENT was trained on."""
    return previous is None or entry.min_new_items <= 0 or total - previous >= entry.min_new_items


def handle_scheduled_train(body: dict[str, Any]) -> TrainingReport:
    """One tick of the schedule entry in ``body``: train if the dataset grew enough."""
    runtime = get_runtime()
    entry = ScheduledTraining.from_json(body)
    request = entry.request
    skipped = TrainingReport(request.name, request.task, "skipped", outcome="skipped")
    try:
        layout = read_layout(runtime.store, parse_s3_uri(request.dataset), request.task)
    except DatasetError as error:
        log.error("scheduled training of %s skipped: %s", request.name, error)
        return replace(skipped, reason=str(error))
    total = sum(layout.counts().values())
    try:
        counts = runtime.registry.resolve(request.name).card.get("dataset_counts") or {}
        previous: int | None = sum(int(value) for value in counts.values())
    except ModelNotFound:
        previous = None
    if not grown_enough(entry, total, previous):
        log.info(
            "scheduled training of %s skipped: %d items, %d at CURRENT, min_new_items %d",
            request.name,
            total,
            previous,
            entry.min_new_items,
        )
        return replace(skipped, reason="not enough new items")
    run_id = new_run_id(request.name)
    runs = TrainingRuns(runtime.jobs.redis)
    runs.create(run_id, request.to_json())
    runs.update(run_id, counts=layout.counts(), trigger="beat")
    return handle_training(TrainingMessage(run_id, request).to_json())
