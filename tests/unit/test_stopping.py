"""Training until the validation metric stops improving, within budgets (models.stopping),
and input pipelines that never run dry (models.feeding)."""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np
import pytest

from bucketvision.models.family import TrainOptions
from bucketvision.models.stopping import (
    EPOCHS_REACHED,
    STEP_BUDGET,
    TIME_BUDGET,
    StopDefaults,
    StopPlan,
    StopTracker,
    adaptive_stop,
    fixed_schedule_fields,
    no_improvement,
    plan_stopping,
)


def _plan(**changes: Any) -> StopPlan:
    base = {
        "epochs": 100,
        "steps_per_epoch": 10,
        "max_steps": None,
        "max_seconds": None,
        "patience": 3,
        "lr_patience": 0,
        "warmup_steps": 0,
        "min_delta": 0.0,
        "monitor": "val_loss",
        "epochs_requested": False,
    }
    return StopPlan(**{**base, **changes})


def test_default_plan_is_open_ended_within_the_step_budget() -> None:
    defaults = StopDefaults(max_steps=1000, min_epoch_steps=50)
    small = plan_stopping(
        TrainOptions(), defaults, train_count=600, batch_size=32, has_validation=True
    )
    # 600 items are 19 batches: an epoch is stretched to 50 steps, 20 epochs fill 1,000.
    assert (small.steps_per_epoch, small.epochs, small.max_steps) == (50, 20, 1000)
    assert small.monitor == "val_loss" and not small.epochs_requested
    big = plan_stopping(
        TrainOptions(), defaults, train_count=6400, batch_size=32, has_validation=False
    )
    assert (big.steps_per_epoch, big.epochs, big.monitor) == (200, 5, "loss")


def test_requested_epochs_are_whole_passes_without_default_budgets() -> None:
    defaults = StopDefaults(max_steps=1000, max_seconds=60.0)
    plan = plan_stopping(
        TrainOptions(epochs=7), defaults, train_count=600, batch_size=32, has_validation=True
    )
    assert (plan.epochs, plan.steps_per_epoch) == (7, 19)
    assert plan.max_steps is None and plan.max_seconds is None and plan.epochs_requested
    capped = plan_stopping(
        TrainOptions(epochs=7, extra={"max_steps": 30, "patience": 0}),
        defaults,
        train_count=600,
        batch_size=32,
        has_validation=True,
    )
    assert capped.max_steps == 30 and capped.patience == 0


def test_extra_overrides_the_family_defaults() -> None:
    options = TrainOptions(extra={"patience": 2, "max_seconds": 5, "min_epoch_steps": 1})
    plan = plan_stopping(
        options, StopDefaults(), train_count=64, batch_size=32, has_validation=True
    )
    assert (plan.patience, plan.max_seconds, plan.steps_per_epoch) == (2, 5.0, 2)


def test_tracker_stops_after_patience_epochs_without_improvement() -> None:
    tracker = StopTracker(_plan(patience=3, lr_patience=2))
    verdicts = [tracker.after_epoch(v) for v in (1.0, 0.8, 0.9, 0.85, 0.81)]
    assert verdicts == ["best", "best", "wait", "lower_lr", "stop"]
    summary = tracker.summary()
    assert summary["stopped_because"] == no_improvement("val_loss", 3)
    assert summary["stopped_because"] == "no improvement in val_loss for 3 epochs"
    assert (summary["best_epoch"], summary["best_value"], summary["epochs_trained"]) == (2, 0.8, 5)


def test_tracker_treats_nan_as_no_improvement_and_patience_zero_never_stops() -> None:
    tracker = StopTracker(_plan(patience=0))
    assert [tracker.after_epoch(v) for v in (1.0, float("nan"), None, 2.0)] == [
        "best",
        "wait",
        "wait",
        "wait",
    ]
    assert tracker.reason is None and tracker.summary()["stopped_because"] == EPOCHS_REACHED


def test_tracker_budgets_and_the_first_reason_stands() -> None:
    tracker = StopTracker(_plan(max_steps=3))
    assert [tracker.after_step() for _ in range(3)] == [None, None, STEP_BUDGET]
    assert tracker.stop(EPOCHS_REACHED) == STEP_BUDGET
    timed = StopTracker(_plan(max_seconds=0.05))
    assert timed.after_step() is None
    time.sleep(0.06)
    assert timed.after_step() == TIME_BUDGET


def test_fixed_schedule_fields_say_why_the_gan_stopped() -> None:
    fields = fixed_schedule_fields(steps=60, epochs=3, epochs_requested=False, seconds=1.0)
    assert (fields["stopped_because"], fields["steps_trained"]) == (STEP_BUDGET, 60)
    asked = fixed_schedule_fields(steps=60, epochs=3, epochs_requested=True, seconds=1.0)
    assert asked["stopped_because"] == EPOCHS_REACHED and asked["best_epoch"] == 3


# --- the Keras callback on a tiny model -----------------------------------------------


def _tiny_model(learning_rate: float = 0.05) -> Any:
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate), loss="mse")
    return model


def _data(count: int = 32) -> Any:
    import tensorflow as tf

    x = np.linspace(-1, 1, count, dtype=np.float32)[:, None]
    return tf.data.Dataset.from_tensor_slices((x, 3 * x + 1)).batch(8).repeat()


class ValLossScript:
    """Replaces val_loss in the logs with scripted values (runs before AdaptiveStop)."""

    def __new__(cls, values: list[float]) -> Any:
        import keras

        class Script(keras.callbacks.Callback):  # type: ignore[misc]
            def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
                assert logs is not None
                logs["val_loss"] = values[epoch]

        return Script()


def test_callback_restores_the_weights_of_the_best_epoch() -> None:
    model = _tiny_model()
    weights_at_end: list[Any] = []

    class Snapshot:
        def __new__(cls) -> Any:
            import keras

            class Keep(keras.callbacks.Callback):  # type: ignore[misc]
                def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
                    weights_at_end.append([w.copy() for w in self.model.get_weights()])

            return Keep()

    stop = adaptive_stop(_plan(epochs=6, patience=3))
    scripted = ValLossScript([5.0, 4.0, 1.0, 3.0, 2.0, 2.5, 9.0])
    model.fit(
        _data(),
        epochs=6,
        steps_per_epoch=4,
        callbacks=[scripted, stop, Snapshot()],
        verbose=0,
        shuffle=False,
    )
    summary = stop.summary()
    # Epoch 3 was best; 4, 5, 6 did not improve: patience 3 stops after epoch 6.
    assert summary["stopped_because"] == "no improvement in val_loss for 3 epochs"
    assert (summary["best_epoch"], summary["epochs_trained"], summary["steps_trained"]) == (
        3,
        6,
        24,
    )
    for restored, best in zip(model.get_weights(), weights_at_end[2], strict=True):
        np.testing.assert_array_equal(restored, best)
    assert not np.array_equal(model.get_weights()[0], weights_at_end[-1][0])
    fields = stop.card_fields()
    assert fields["stopped_because"] == summary["stopped_because"]
    assert fields["steps_trained"] == 24 and fields["best_epoch"] == 3


def test_callback_honours_the_step_budget_mid_epoch_and_lowers_the_rate() -> None:
    model = _tiny_model()
    stop = adaptive_stop(_plan(epochs=50, max_steps=13, patience=0, lr_patience=1))
    scripted = ValLossScript([1.0] * 50)  # never improves after the first epoch
    history = model.fit(
        _data(), epochs=50, steps_per_epoch=4, callbacks=[scripted, stop], verbose=0, shuffle=False
    )
    summary = stop.summary()
    assert summary["stopped_because"] == STEP_BUDGET and summary["steps_trained"] == 13
    assert summary["epochs_trained"] == 4  # the fourth epoch was cut after one step
    # The rate of each epoch's last step (steps 3, 7, 11, 12 of 13): the cosine of the
    # budget, halved after every epoch without improvement.
    expected = [
        0.05 * plateau * (0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * step / 13)))
        for plateau, step in ((1, 3), (1, 7), (0.5, 11), (0.25, 12))
    ]
    assert history.history["learning_rate"] == pytest.approx(expected, rel=1e-5)


def test_callback_warms_the_learning_rate_up_then_anneals_it() -> None:
    model = _tiny_model(learning_rate=0.08)
    seen: list[float] = []

    class Rates:
        def __new__(cls) -> Any:
            import keras

            class Watch(keras.callbacks.Callback):  # type: ignore[misc]
                def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
                    seen.append(float(self.model.optimizer.learning_rate.numpy()))

            return Watch()

    stop = adaptive_stop(_plan(epochs=1, steps_per_epoch=6, warmup_steps=4, patience=0))
    model.fit(
        _data(), epochs=1, steps_per_epoch=6, callbacks=[stop, Rates()], verbose=0, shuffle=False
    )
    tracker = StopTracker(_plan(epochs=1, steps_per_epoch=6, warmup_steps=4))
    expected = []
    for _ in range(6):
        expected.append(tracker.learning_rate(0.08))
        tracker.after_step()
    assert seen == pytest.approx(expected, rel=1e-5)
    assert seen[0] == pytest.approx(0.02, rel=1e-5)  # a quarter of the peak, nothing spent
    assert seen[0] < seen[1] < seen[2] and seen[3] > seen[4] > seen[5]  # warm, then anneal
    assert stop.summary()["stopped_because"] == EPOCHS_REACHED


def test_learning_rate_follows_the_larger_fraction_of_the_budget_spent() -> None:
    tracker = StopTracker(_plan(epochs=100, steps_per_epoch=10, max_steps=100, patience=5))
    assert tracker.learning_rate(1.0) == pytest.approx(1.0)
    tracker.steps = 50
    assert tracker.learning_rate(1.0) == pytest.approx(0.505)  # half the steps: cos = 0
    tracker.steps = 100
    assert tracker.learning_rate(1.0) == pytest.approx(0.01)
    timed = StopTracker(_plan(max_steps=1000, max_seconds=10.0), started=time.perf_counter() - 5)
    assert timed.spent() == pytest.approx(0.5, abs=0.01)  # half the seconds, no steps
    assert timed.learning_rate(1.0) == pytest.approx(0.505, abs=0.02)
    plateau = StopTracker(_plan(lr_patience=2, patience=0, epochs=10**6))
    for value in (1.0, 2.0, 2.0, 2.0, 2.0):
        plateau.after_epoch(value)
    assert plateau.plateau == 0.25 and plateau.learning_rate(1.0) == pytest.approx(0.25)


def test_callback_stops_on_the_time_budget() -> None:
    model = _tiny_model()
    stop = adaptive_stop(_plan(epochs=10_000, max_seconds=0.5, patience=0))
    began = time.perf_counter()
    model.fit(_data(), epochs=10_000, steps_per_epoch=4, callbacks=[stop], verbose=0, shuffle=False)
    assert stop.summary()["stopped_because"] == TIME_BUDGET
    assert time.perf_counter() - began < 10


# --- input pipelines that never run dry ----------------------------------------------


def _streamed(count: int) -> Any:
    """A dataset of unknown size, like the loader's ``from_generator`` splits."""
    import tensorflow as tf

    def generate() -> Any:
        for index in range(count):
            yield np.full((2,), index, np.float32)

    return tf.data.Dataset.from_generator(
        generate, output_signature=tf.TensorSpec((2,), tf.float32)
    )


def test_sized_counts_a_streamed_split_once_and_tells_tf_data() -> None:
    from bucketvision.models.feeding import sized

    dataset, count = sized(_streamed(13))
    assert count == 13 and int(dataset.cardinality()) == 13
    assert int(dataset.batch(4).cardinality()) == 4
    assert sized(None) == (None, 0)


def ran_out_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if "ran out of data" in str(w.message)]


def test_fit_on_a_sized_split_never_runs_dry() -> None:
    """Keras warns 'ran out of data' on an unsized split; never on one counted by sized()."""
    import tensorflow as tf

    from bucketvision.models.feeding import sized

    def pairs(count: int) -> Any:
        return _streamed(count).map(lambda x: (x[:1], x[1:]))

    model = _tiny_model(0.001)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(
            pairs(20).batch(8),
            validation_data=pairs(10).batch(8),
            epochs=2,
            verbose=0,
            shuffle=False,
        )
    assert ran_out_warnings(caught)  # the symptom, on the unsized splits
    train, count = sized(pairs(20))
    val, _ = sized(pairs(10))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(
            train.shuffle(count).repeat().batch(8),
            steps_per_epoch=-(-count // 8),
            validation_data=val.batch(8),
            epochs=3,
            verbose=0,
        )
    assert ran_out_warnings(caught) == []
    del tf
