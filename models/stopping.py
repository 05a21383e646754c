"""Training until the validation metric stops improving, within a step and a time budget.

Shared by the classify, detect and segment fits (the GAN keeps its own schedule and only
reports through :func:`fixed_schedule_fields`). A family states its defaults in a
:class:`StopDefaults`; :func:`plan_stopping` turns them and the user's options into a
:class:`StopPlan` (how many epochs to ask ``fit`` for, how long an epoch is); the
:class:`AdaptiveStop` callback built from it then, during ``fit``:

- after every epoch, keeps the weights of the best ``monitor`` value seen (``val_loss``,
  or ``loss`` when there is no validation split);
- stops after ``patience`` epochs without improvement, at ``max_steps`` optimizer steps
  or after ``max_seconds`` of training, whichever comes first;
- restores the best weights at the end, and records why it stopped;
- sets the learning rate before every step (:meth:`StopTracker.learning_rate`): the
  peak, times a linear warm-up over ``warmup_steps``, times a plateau factor (halved
  after each ``lr_patience`` epochs without improvement: the run's length follows the
  data), times a cosine of the budget spent (the larger of the steps' and the seconds'
  fraction), so a run cut by its budget, even by a slow or busy machine's clock, ends
  with an annealed learning rate rather than mid-descent. With ``--epochs`` the epochs
  requested are the budget: a cosine over them.

Without ``--epochs`` a run is open-ended: an epoch is one pass over the training split or
``min_epoch_steps`` steps, whichever is more (the training pipeline repeats), so patience
means about the same on 600 images as on 6,000. With ``--epochs`` the user's count is
honoured: epochs are whole passes, there is no default step or time budget (an explicit
``max_steps``/``max_seconds`` still applies), and early stopping with patience and the
restore of the best weights still apply (``patience: 0`` turns them off).

``options.extra`` keys read here (:data:`STOP_KEYS`): ``patience``, ``lr_patience``,
``max_steps``, ``max_seconds``, ``min_epoch_steps``, ``warmup_steps``, ``min_delta``.
The card's ``stopping`` entry holds the :meth:`AdaptiveStop.summary`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

from bucketvision.models.family import TrainOptions

STOP_KEYS: tuple[str, ...] = ("patience", "lr_patience", "max_steps", "max_seconds")
STOP_KEYS += ("min_epoch_steps", "warmup_steps", "min_delta")
STEP_BUDGET = "step budget reached"
TIME_BUDGET = "time budget reached"
EPOCHS_REACHED = "epochs requested reached"
LR_FACTOR = 0.5  # the plateau factor's step
MIN_LR_FRACTION = 1e-3  # the plateau factor never goes below this
FINAL_LR_FRACTION = 0.01  # the cosine of the budget ends at this fraction


def no_improvement(monitor: str, patience: int) -> str:
    """The stop reason of early stopping."""
    return f"no improvement in {monitor} for {patience} epochs"


@dataclass(frozen=True)
class StopDefaults:
    """A family's defaults for open-ended training (each may be overridden in ``extra``)."""

    patience: int = 8
    lr_patience: int = 3
    max_steps: int = 4000
    max_seconds: float = 480.0
    min_epoch_steps: int = 50
    warmup_steps: int = 0
    min_delta: float = 0.0


@dataclass(frozen=True)
class StopPlan:
    """What ``fit`` is asked for, and what :class:`AdaptiveStop` enforces."""

    epochs: int  # fit(epochs=...): the most epochs the run may take
    steps_per_epoch: int
    max_steps: int | None
    max_seconds: float | None
    patience: int  # 0: no early stopping
    lr_patience: int  # 0: the learning rate stays
    warmup_steps: int
    min_delta: float
    monitor: str
    epochs_requested: bool


def plan_stopping(
    options: TrainOptions,
    defaults: StopDefaults,
    *,
    train_count: int,
    batch_size: int,
    has_validation: bool,
) -> StopPlan:
    """The plan of a run over ``train_count`` items in minibatches of ``batch_size``."""
    extra = options.extra
    chosen = replace(defaults, **{key: extra[key] for key in STOP_KEYS if key in extra})
    passes = max(1, math.ceil(max(train_count, 1) / max(batch_size, 1)))
    requested = options.epochs is not None
    max_steps = int(chosen.max_steps) if chosen.max_steps else None
    max_seconds = float(chosen.max_seconds) if chosen.max_seconds else None
    if requested:
        max_steps = int(extra["max_steps"]) if extra.get("max_steps") else None
        max_seconds = float(extra["max_seconds"]) if extra.get("max_seconds") else None
        steps = options.steps_per_epoch or passes
        epochs = int(options.epochs or 1)
    else:
        steps = options.steps_per_epoch or max(passes, int(chosen.min_epoch_steps))
        epochs = math.ceil(max_steps / steps) if max_steps else 10_000
    return StopPlan(
        epochs=max(1, epochs),
        steps_per_epoch=max(1, steps),
        max_steps=max_steps,
        max_seconds=max_seconds,
        patience=max(0, int(chosen.patience)),
        lr_patience=max(0, int(chosen.lr_patience)),
        warmup_steps=max(0, int(chosen.warmup_steps)),
        min_delta=float(chosen.min_delta),
        monitor="val_loss" if has_validation else "loss",
        epochs_requested=requested,
    )


@dataclass
class StopTracker:
    """The decisions of :class:`AdaptiveStop`, free of Keras: counts, best value, reason."""

    plan: StopPlan
    steps: int = 0
    epochs: int = 0
    best: float | None = None
    best_epoch: int = 0
    wait: int = 0
    reason: str | None = None
    started: float = field(default_factory=time.perf_counter)

    plateau: float = 1.0  # the plateau factor of the learning rate

    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def spent(self) -> float:
        """The fraction of the budget spent: steps, seconds or requested epochs, the most."""
        plan = self.plan
        fractions = [self.steps / max(1, plan.epochs * plan.steps_per_epoch)]
        if plan.max_steps:
            fractions.append(self.steps / plan.max_steps)
        if plan.max_seconds:
            fractions.append(self.seconds() / plan.max_seconds)
        return min(1.0, max(fractions))

    def learning_rate(self, peak: float) -> float:
        """The rate of the next step: ``peak`` x warm-up x plateau x cosine of the budget."""
        warmup = self.plan.warmup_steps
        warm = min(1.0, (self.steps + 1) / warmup) if warmup else 1.0
        cosine = 0.5 * (1.0 + math.cos(math.pi * self.spent()))
        anneal = FINAL_LR_FRACTION + (1.0 - FINAL_LR_FRACTION) * cosine
        return peak * warm * self.plateau * anneal

    def after_step(self) -> str | None:
        """Count a step; the reason to stop now when a budget is spent."""
        self.steps += 1
        if self.plan.max_steps and self.steps >= self.plan.max_steps:
            return self.stop(STEP_BUDGET)
        if self.plan.max_seconds and self.seconds() >= self.plan.max_seconds:
            return self.stop(TIME_BUDGET)
        return None

    def after_epoch(self, value: float | None) -> str:
        """Judge an epoch's monitored value: "best", "stop", "lower_lr" or "wait"."""
        self.epochs += 1
        finite = value is not None and math.isfinite(float(value))
        if finite and (self.best is None or float(value) < self.best - self.plan.min_delta):
            self.best, self.best_epoch, self.wait = float(value), self.epochs, 0
            return "best"
        self.wait += 1
        if self.plan.patience and self.wait >= self.plan.patience:
            self.stop(no_improvement(self.plan.monitor, self.plan.patience))
            return "stop"
        if self.plan.lr_patience and self.wait % self.plan.lr_patience == 0:
            self.plateau = max(self.plateau * LR_FACTOR, MIN_LR_FRACTION)
            return "lower_lr"
        return "wait"

    def stop(self, reason: str) -> str:
        """Record ``reason`` unless an earlier one stands; returns the standing reason."""
        if self.reason is None:
            self.reason = reason
        return self.reason

    def summary(self) -> dict[str, Any]:
        """What the card records: why training stopped, how long, the best epoch."""
        return {
            "stopped_because": self.reason or EPOCHS_REACHED,
            "steps_trained": self.steps,
            "epochs_trained": self.epochs,
            "best_epoch": self.best_epoch or self.epochs,
            "monitor": self.plan.monitor,
            "best_value": None if self.best is None else round(self.best, 6),
            "seconds": round(self.seconds(), 1),
            "budget": {
                "max_steps": self.plan.max_steps,
                "max_seconds": self.plan.max_seconds,
                "patience": self.plan.patience,
                "steps_per_epoch": self.plan.steps_per_epoch,
            },
        }


def adaptive_stop(plan: StopPlan) -> Any:
    """An :class:`AdaptiveStop` callback for ``plan`` (imports Keras)."""
    return _callback_class()(plan)


def _callback_class() -> Any:
    import keras

    class AdaptiveStop(keras.callbacks.Callback):  # type: ignore[misc]
        """Learning rate, early stopping, budgets, best weights (the module doc)."""

        def __init__(self, plan: StopPlan) -> None:
            super().__init__()
            self.plan = plan
            self.tracker = StopTracker(plan)
            self.best_weights: list[Any] | None = None
            self.peak_lr = 0.0

        def _lr(self) -> float:
            return float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

        def _set_lr(self, value: float) -> None:
            self.model.optimizer.learning_rate = value

        def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
            self.tracker = StopTracker(self.plan)
            self.peak_lr = self._lr()

        def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            self._set_lr(self.tracker.learning_rate(self.peak_lr))

        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            if self.tracker.after_step() is not None:
                self.model.stop_training = True

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            logs = logs if logs is not None else {}
            logs["learning_rate"] = self._lr()  # the rate of the epoch's last step
            verdict = self.tracker.after_epoch(logs.get(self.plan.monitor))
            if verdict == "best":
                self.best_weights = self.model.get_weights()
            elif verdict == "stop":
                self.model.stop_training = True

        def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
            self.tracker.stop(EPOCHS_REACHED)  # unless an earlier reason stands
            if self.best_weights is not None and self.tracker.best_epoch != self.tracker.epochs:
                self.model.set_weights(self.best_weights)
            self.best_weights = None  # the model holds them now; free the copy

        def summary(self) -> dict[str, Any]:
            return self.tracker.summary()

        def card_fields(self) -> dict[str, Any]:
            """The card's ``stopped_because``, ``steps_trained``, ``best_epoch`` and
            ``stopping`` (the whole summary)."""
            return card_fields(self.tracker.summary())

    return AdaptiveStop


def card_fields(summary: dict[str, Any]) -> dict[str, Any]:
    """The card fields of a stopping ``summary``: three at the top level, and all of it."""
    return {
        "stopped_because": summary["stopped_because"],
        "steps_trained": summary["steps_trained"],
        "best_epoch": summary["best_epoch"],
        "stopping": summary,
    }


def fixed_schedule_fields(
    *, steps: int, epochs: int, epochs_requested: bool, seconds: float
) -> dict[str, Any]:
    """The card fields of a run that follows a fixed schedule (the GAN): all its epochs.

    Without ``--epochs`` the schedule's length is a step budget, so that is why it stopped.
    """
    return card_fields(
        {
            "stopped_because": EPOCHS_REACHED if epochs_requested else STEP_BUDGET,
            "steps_trained": steps,
            "epochs_trained": epochs,
            "best_epoch": epochs,
            "monitor": None,
            "best_value": None,
            "seconds": round(seconds, 1),
        }
    )
