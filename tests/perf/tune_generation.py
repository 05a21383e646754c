"""Tune / check the generation family: a conditional DCGAN on 4,000 synthetic digits.

Run as ``.venv/bin/python -m tests.perf.tune_generation [--seed N] [--epochs E]``.
Trains with the DEFAULTS of ``train_generator`` (only what is given on the command
line is overridden), then scores 200 samples (20 per digit) with an INDEPENDENT
judge: the seed CNN trained on ``make_digits(6000, seed=99)`` for 3 epochs, which
must reach 99% on its own held-out digits. Prints the metrics and the training
seconds (GAN fit alone and the whole ``train_generator`` call, which also fits
the family's own judge) and saves the sample grid to /tmp/gan_samples.png.

Target: mean_confidence >= 0.9 (aim 0.95), all 10 digits, in under 10 minutes
on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _dataset(images: Any, labels: Any) -> Any:
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((images[..., None], labels.astype("int32")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=0, help="training seed (TrainOptions.seed)")
    parser.add_argument("--epochs", type=int, default=None, help="override the default epochs")
    parser.add_argument("--extra", default="{}", help="JSON TrainOptions.extra overrides")
    parser.add_argument("--output", default="/tmp/gan_samples.png")
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args()

    import keras

    from bucketvision.models.digits import make_digits
    from bucketvision.models.family import DatasetInfo, TrainOptions
    from bucketvision.models.generation import MAIN_METRIC, evaluate_generator, train_generator
    from tests.helpers import train_digits

    start = time.perf_counter()
    judge_images, judge_labels = make_digits(6000, seed=99)
    held_out = make_digits(1000, seed=98)
    independent = train_digits(judge_images, judge_labels, epochs=3, seed=99)
    predicted = independent.model.predict(held_out[0][..., None], verbose=0).argmax(axis=1)
    accuracy = float((predicted == held_out[1]).mean())
    print(f"independent judge: held-out accuracy {accuracy:.4f}")
    if accuracy < 0.99:
        raise SystemExit("the independent judge is below 99% on its held-out digits")

    train_images, train_labels = make_digits(4000, seed=1)
    val_images, val_labels = make_digits(500, seed=2)
    info = DatasetInfo(
        task="generate",
        labels=[str(d) for d in range(10)],
        input_shape=(28, 28, 1),
        train_count=len(train_images),
        val_count=len(val_images),
    )
    print(f"data ready in {time.perf_counter() - start:.0f} s")

    class FitClock(keras.callbacks.Callback):
        def on_train_begin(self, logs: Any = None) -> None:
            self.begin = time.perf_counter()

        def on_train_end(self, logs: Any = None) -> None:
            self.seconds = time.perf_counter() - self.begin

    clock = FitClock()
    options = TrainOptions(
        epochs=args.epochs,
        seed=args.seed,
        verbose=args.verbose,
        callbacks=[clock],
        extra=json.loads(args.extra),
    )
    began = time.perf_counter()
    trained = train_generator(
        _dataset(train_images, train_labels), _dataset(val_images, val_labels), info, options
    )
    total = time.perf_counter() - began

    metrics = evaluate_generator(trained.model, trained.card, judge=independent.model, seed=7)
    own = evaluate_generator(trained.model, trained.card, judge=trained.judge, seed=7)
    with open(args.output, "wb") as handle:
        handle.write(trained.samples_png or b"")

    print(f"hyperparameters: {trained.card['hyperparameters']}")
    print(f"last epoch: { {k: round(v[-1], 4) for k, v in trained.history.items()} }")
    print(f"{MAIN_METRIC} (independent judge): {metrics[MAIN_METRIC]:.4f}")
    print(f"classes_present: {metrics['classes_present']}")
    print(f"class_evenness: {metrics['class_evenness']:.4f}")
    print(f"label_agreement: {metrics['label_agreement']:.4f}")
    per_class = {k: round(v, 3) for k, v in metrics["per_class_confidence"].items()}
    print(f"per_class_confidence: {per_class}")
    print(
        f"own judge: accuracy {trained.card['judge_accuracy']:.4f},"
        f" {MAIN_METRIC} {own[MAIN_METRIC]:.4f}, agreement {own['label_agreement']:.4f}"
    )
    print(
        f"GAN fit seconds: {clock.seconds:.0f}; train_generator seconds: {total:.0f}"
        f" (wall clock; inflated when other jobs share the CPU)"
    )
    print(f"sample grid: {args.output}")


if __name__ == "__main__":
    main()
