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
from typing import Any

from bucketvision.infra.training_runs import TERMINAL_STATES, RunNotFound, TrainingRuns
from bucketvision.models.training import TrainingRequest, run_training
from bucketvision.worker.runtime import get_runtime

log = logging.getLogger("bucketvision.training")


def handle_training(body: dict[str, Any]) -> dict[str, Any]:
    """Train as ``body["request"]`` asks and record the outcome under ``body["run_id"]``."""
    runtime = get_runtime()
    run_id = str(body["run_id"])
    runs = TrainingRuns(runtime.jobs.redis)
    request = TrainingRequest.from_json(dict(body["request"]))
    about = {"run_id": run_id, "model": request.name, "task": request.task}
    try:
        ended = runs.get(run_id).get("state") in TERMINAL_STATES
    except RunNotFound:  # the record expired or was never made: run it and record it
        ended = False
    if ended:
        log.info("training run %s already ended; not running it again", run_id)
        return {**about, "state": "ended"}
    holder = runs.lock(request.name, run_id)
    if holder == run_id:
        log.warning("training run %s is still going on another worker; redelivery dropped", run_id)
        return {**about, "state": "running elsewhere"}
    if holder is not None:
        reason = f"another training run of {request.name} is going ({holder}); not started twice"
        log.warning("training run %s skipped: %s", run_id, reason)
        runs.update(run_id, state="skipped", error=reason, finished_at=time.time())
        return {**about, "state": "skipped", "outcome": "skipped"}
    runs.update(run_id, state="running", started_at=time.time(), worker=runtime.identity)

    def progress(event: dict[str, Any]) -> None:
        fields = {key: value for key, value in event.items() if key in ("epoch", "epochs", "logs")}
        if "counts" in event:
            fields["counts"] = event["counts"]
        runs.update(run_id, stage=event.get("stage"), **fields)
        runs.renew(request.name, run_id)

    try:
        outcome = run_training(
            request, store=runtime.store, registry=runtime.registry, progress=progress
        )
    except Exception as error:
        log.exception("training run %s failed", run_id)
        runs.update(
            run_id,
            state="failed",
            error=f"{type(error).__name__}: {error}",
            finished_at=time.time(),
        )
        return {**about, "state": "failed", "outcome": "failed"}
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
    return {
        **about,
        "state": "finished",
        "version": str(outcome.ref),
        "outcome": "promoted" if outcome.promoted else "rejected",
        "metrics": outcome.metrics,
    }
