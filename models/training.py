"""One training run: dataset from S3, fit, evaluate, write a version, promotion gate.

A plain function with explicit dependencies (store, registry, a progress
callback); the Celery ``train`` task and the tests call it the same way.
Every run writes a version — ``model.keras``, ``card.json`` with metrics,
``history.json`` and a training-curves PNG (plus a sample grid for a
generator). The card says why training stopped and after how many optimizer steps
(``stopped_because``, ``steps_trained``, ``best_epoch`` and the ``stopping`` record of
:mod:`models.stopping`). The first version of a name is promoted; a later one only when its
main metric is at least CURRENT's minus ``tolerance``, otherwise it is kept as
``rejected``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bucketvision.infra.errors import UserError
from bucketvision.infra.messages import TrainingRequest
from bucketvision.infra.s3 import S3Store
from bucketvision.models.datasets import load_dataset
from bucketvision.models.families import family
from bucketvision.models.family import TrainedModel, TrainOptions
from bucketvision.models.plots import training_curves_png
from bucketvision.models.registry import (
    ModelNotFound,
    ModelRef,
    ModelRegistry,
    RegistryError,
    now_iso,
)
from bucketvision.models.shadow import ShadowError, start_shadow

log = logging.getLogger("bucketvision.training")

Progress = Callable[[dict[str, Any]], None]
PROMOTE_MODES = ("auto", "always", "never")
STOP_FIELDS = ("stopped_because", "steps_trained", "best_epoch")  # from models.stopping


@dataclass(frozen=True)
class TrainingOutcome:
    ref: ModelRef
    metrics: dict[str, Any]
    promoted: bool
    decision: str
    seconds: float
    shadowing: bool = False  # it passed the gate and runs in CURRENT's shadow first


def promotion_decision(
    main_metric: str,
    value: float | None,
    current: ModelRef | None,
    tolerance: float,
    mode: str = "auto",
) -> tuple[bool, str]:
    """Whether a new version becomes CURRENT, and why (higher metrics are better)."""
    if mode == "always":
        return True, "promoted: --promote always"
    if mode == "never":
        return False, "kept as a candidate: --promote never"
    if current is None:
        return True, "promoted: the first version of this model"
    if value is None:
        return False, f"kept as a candidate: this version has no {main_metric} to compare"
    previous = current.card.get("metrics", {}).get(main_metric)
    if not isinstance(previous, (int, float)):
        return True, f"promoted: CURRENT {current} has no {main_metric} to compare with"
    if value >= previous - tolerance:
        return True, (
            f"promoted: {main_metric} {value:.4f} >= CURRENT {current}'s {previous:.4f}"
            f" - tolerance {tolerance}"
        )
    return False, (
        f"rejected: {main_metric} {value:.4f} < CURRENT {current}'s {previous:.4f}"
        f" - tolerance {tolerance}; CURRENT stays {current.version}"
    )


def shadow_decision(decision: str, request: TrainingRequest, current: ModelRef | None) -> str:
    """Why a version the gate passed is not promoted yet: it first runs in CURRENT's shadow."""
    wanted = "" if request.shadow_agreement is None else f" >= {request.shadow_agreement}"
    return (
        f"shadowing: {decision.removeprefix('promoted: ')}; promoted if its next "
        f"{request.shadow_jobs} shadow job(s) agree with CURRENT {current}{wanted}"
    )


def _start_shadow(
    registry: ModelRegistry, ref: ModelRef, request: TrainingRequest, decision: str
) -> tuple[str, bool]:
    """Put the new version in CURRENT's shadow: the decision (changed if it cannot run) and
    whether the shadow runs."""
    try:
        start_shadow(
            registry, ref, jobs=request.shadow_jobs, min_agreement=request.shadow_agreement
        )
    except ShadowError as error:
        decision = f"kept as a candidate: it cannot run in CURRENT's shadow: {error}"
        card = registry.card(ref.name, ref.version)
        registry.save_card(ref.name, ref.version, {**card, "decision": decision})
        return decision, False
    return decision, True


def status_of(decision: str) -> str:
    """The card status of a version that was not promoted: rejected by the gate, else candidate."""
    return "rejected" if decision.startswith("rejected") else "candidate"


def _progress_callback(report: Progress) -> Any:
    import keras

    class ReportEpochs(keras.callbacks.Callback):  # type: ignore[misc]
        """Reports each finished epoch (and its logs) to the run's progress."""

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            values = {key: round(float(value), 6) for key, value in (logs or {}).items()}
            epochs = self.params.get("epochs") if self.params else None
            report({"stage": "training", "epoch": epoch + 1, "epochs": epochs, "logs": values})

    return ReportEpochs()


def _current(registry: ModelRegistry, name: str, task: str) -> ModelRef | None:
    try:
        current = registry.resolve(name)
    except ModelNotFound:
        return None
    if current.card.get("task") != task:
        raise RegistryError(
            f"model {name!r} is a {current.card.get('task')} model; train a {task} model "
            "under another name"
        )
    return current


def _files(trained: Any, history: dict[str, list[float]], title: str) -> dict[str, Any]:
    files = {
        "history.json": (json.dumps(history, indent=1).encode(), "application/json"),
        "training_curves.png": (training_curves_png(history, title), "image/png"),
    }
    if trained.samples_png:
        files["samples.png"] = (trained.samples_png, "image/png")
    return files


def _announce(
    report: Progress, ref: ModelRef, card: dict[str, Any], promote: bool, seconds: float
) -> None:
    """Log and report the finished run: its main metric, steps and why it stopped."""
    stopped = {key: card.get(key) for key in STOP_FIELDS}
    metrics = card["metrics"]
    log.info(
        "trained %s: %s in %.0f s, %s steps, stopped: %s (%s)",
        ref,
        metrics.get(card["main_metric"]),
        seconds,
        stopped["steps_trained"],
        stopped["stopped_because"],
        card["decision"],
    )
    finished = {"stage": "finished", "version": str(ref), "promoted": promote, "metrics": metrics}
    report({**finished, **stopped})


def run_training(
    request: TrainingRequest,
    *,
    store: S3Store,
    registry: ModelRegistry,
    progress: Progress | None = None,
) -> TrainingOutcome:
    """Train, evaluate and register a new version of ``request.name``."""
    report = progress or (lambda event: None)
    if request.promote not in PROMOTE_MODES:
        raise UserError(f"--promote must be one of {', '.join(PROMOTE_MODES)}")
    entry = family(request.task)
    current = _current(registry, request.name, request.task)
    started = time.perf_counter()
    report({"stage": "loading", "dataset": request.dataset})
    # Our S3 loader, not Hugging Face's (bandit B615).
    loaded = load_dataset(  # nosec B615
        store, request.dataset, request.task, image_size=request.image_size
    )
    report({"stage": "training", "epoch": 0, "counts": loaded.layout.counts()})
    options = TrainOptions(
        epochs=request.epochs,
        minibatch_size=request.minibatch_size,
        learning_rate=request.learning_rate,
        seed=request.seed,
        callbacks=[_progress_callback(report)],
        steps_per_epoch=request.steps_per_epoch,
        extra=dict(request.extra),
    )
    trained: TrainedModel = entry.resolve("fit")(loaded.train, loaded.val, loaded.info, options)
    training_seconds = time.perf_counter() - started
    report({"stage": "evaluating", "split": loaded.layout.evaluation_split})
    score = entry.resolve("score")
    metrics = score(trained.model, trained.card, loaded.evaluation, **trained.scoring_inputs())
    histogram = metrics.pop("confidence_histogram", None)  # the card's, for drift
    raw_value = metrics.get(entry.main_metric)
    value = float(raw_value) if isinstance(raw_value, int | float) else None
    promote, decision = promotion_decision(
        entry.main_metric, value, current, request.tolerance, request.promote
    )
    shadowing = promote and current is not None and request.shadow_jobs > 0
    shadowing = shadowing and request.promote == "auto"
    if shadowing:
        promote, decision = False, shadow_decision(decision, request, current)
    report({"stage": "registering", "decision": decision})
    history = {key: [float(v) for v in values] for key, values in trained.history.items()}
    card = {
        **trained.card,
        "task": request.task,
        "metrics": metrics,
        **({"confidence_histogram": histogram} if histogram else {}),
        "main_metric": entry.main_metric,
        "dataset": loaded.info.uri,
        "dataset_counts": loaded.layout.counts(),
        "evaluated_on": loaded.layout.evaluation_split,
        "skipped_items": len(loaded.skipped),
        "trained_at": now_iso(),
        "training_seconds": round(training_seconds, 1),
        "epochs_run": max((len(values) for values in history.values()), default=0),
        "decision": decision,
        "format": "keras",
    }
    shown = "n/a" if value is None else f"{value:.4f}"
    title = f"{request.name} ({request.task}) — {entry.main_metric} {shown}"
    with tempfile.TemporaryDirectory(prefix="bv-train-") as directory:
        path = os.path.join(directory, "model.keras")
        trained.model.save(path)
        ref = registry.add_version(
            request.name,
            path,
            card,
            promote=promote,
            status=None if promote else status_of(decision),
            files=_files(trained, history, title),
        )
    if shadowing:
        decision, shadowing = _start_shadow(registry, ref, request, decision)
    seconds = time.perf_counter() - started
    _announce(report, ref, card, promote, seconds)
    return TrainingOutcome(ref, metrics, promote, decision, seconds, shadowing)
