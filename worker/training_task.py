"""The ``train`` task's body: run one training and keep its record up to date.

A plain function behind the thin Celery task. Progress (stage, epoch, the
epoch's logs) goes to the run's record in Redis, which ``bucketvision train
--wait`` follows. A failed run is recorded with the reason and not retried:
a bad dataset will not get better by training again. What it returns names the
model, its task and the run's ``outcome`` (promoted, rejected, failed, skipped)
for the task hooks' metrics.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

from bucketvision.infra.messages import TrainingMessage
from bucketvision.infra.training_runs import RunNotFound, TrainingRuns
from bucketvision.infra.vocabulary import FINAL_STATES
from bucketvision.models.training import TrainingOutcome, run_training
from bucketvision.models.weights import local_weights
from bucketvision.worker.reports import TrainingReport
from bucketvision.worker.runtime import get_runtime

log = logging.getLogger("bucketvision.training")


def training_outcome(outcome: TrainingOutcome) -> str:
    """The run's outcome label: promoted, shadow (promoted later, if it agrees) or rejected."""
    if outcome.promoted:
        return "promoted"
    return "shadow" if outcome.shadowing else "rejected"


def handle_training(body: dict[str, Any]) -> TrainingReport:
    """Train as the :class:`TrainingMessage` in ``body`` asks and record the outcome."""
    runtime = get_runtime()
    message = TrainingMessage.from_json(body)
    run_id, request = message.run_id, message.request
    runs = TrainingRuns(runtime.jobs.redis)
    about = TrainingReport(request.name, request.task, "queued", run_id=run_id)
    try:
        ended = runs.get(run_id).get("state") in FINAL_STATES
    except RunNotFound:  # the record expired or was never made: run it and record it
        ended = False
    if ended:
        log.info("training run %s already ended; not running it again", run_id)
        return replace(about, state="ended")
    holder = runs.lock(request.name, run_id)
    if holder == run_id:
        log.warning("training run %s is still going on another worker; redelivery dropped", run_id)
        return replace(about, state="running elsewhere")
    if holder is not None:
        reason = f"another training run of {request.name} is going ({holder}); not started twice"
        log.warning("training run %s skipped: %s", run_id, reason)
        runs.update(run_id, state="skipped", error=reason, finished_at=time.time())
        return replace(about, state="skipped", outcome="skipped", reason=reason)
    runs.update(run_id, state="running", started_at=time.time(), worker=runtime.identity)

    def progress(event: dict[str, Any]) -> None:
        fields = {key: value for key, value in event.items() if key in ("epoch", "epochs", "logs")}
        if "counts" in event:
            fields["counts"] = event["counts"]
        runs.update(run_id, stage=event.get("stage"), **fields)
        runs.renew(request.name, run_id)

    try:
        with local_weights(runtime.store, dict(request.extra)) as extra:
            outcome = run_training(
                replace(request, extra=extra),
                store=runtime.store,
                registry=runtime.registry,
                progress=progress,
            )
    except Exception as error:
        log.exception("training run %s failed", run_id)
        runs.update(
            run_id,
            state="failed",
            error=f"{type(error).__name__}: {error}",
            finished_at=time.time(),
        )
        return replace(about, state="failed", outcome="failed", reason=str(error))
    finally:
        runs.unlock(request.name, run_id)
    runs.update(
        run_id,
        state="finished",
        stage="finished",
        version=str(outcome.ref),
        promoted=outcome.promoted,
        decision=outcome.decision,
        metrics=outcome.metrics,
        seconds=round(outcome.seconds, 1),
        finished_at=time.time(),
    )
    return replace(
        about,
        state="finished",
        version=str(outcome.ref),
        outcome=training_outcome(outcome),
        metrics=outcome.metrics,
    )
