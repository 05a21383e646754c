"""Training a classifier on in-memory arrays (the demo's seed CNN on synthetic digits)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TrainedClassifier:
    model: Any
    accuracy: float
    loss: float
    epochs: int
    seconds: float


def train_seed_cnn(
    images: np.ndarray,
    labels: np.ndarray,
    validation: tuple[np.ndarray, np.ndarray],
    *,
    epochs: int = 3,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    seed: int = 0,
    verbose: int = 1,
) -> TrainedClassifier:
    """Fit the seed CNN on 28x28 grey ``images`` (uint8) and evaluate on ``validation``."""
    import time

    import keras

    from models.cnn import build_seed_cnn, compile_classifier

    keras.utils.set_random_seed(seed)
    x = images.astype("float32")[..., np.newaxis] / 255.0
    x_val = validation[0].astype("float32")[..., np.newaxis] / 255.0
    model = compile_classifier(
        build_seed_cnn((28, 28, 1), int(labels.max()) + 1), learning_rate=learning_rate
    )
    start = time.perf_counter()
    model.fit(x, labels, batch_size=batch_size, epochs=epochs, verbose=verbose, shuffle=True)
    seconds = time.perf_counter() - start
    loss, accuracy = model.evaluate(x_val, validation[1], batch_size=256, verbose=0)
    return TrainedClassifier(model, float(accuracy), float(loss), epochs, seconds)
