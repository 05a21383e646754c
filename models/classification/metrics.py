"""Evaluating a classifier: accuracy (the main metric), per-class precision/recall, confusion.

The forward pass runs over batches of 256 through one ``tf.function`` with a
``None`` batch dimension (traced once, no XLA), which is much faster than
``model.predict`` on many small batches. The counting is plain numpy in
:func:`classification_metrics`, so it can be checked by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bucketvision.infra.confidence import confidence_histogram
from bucketvision.models.classification.preprocess import scale_pixels

MAIN_METRIC = "accuracy"
EVAL_BATCH = 256


def classification_metrics(
    true: Sequence[int] | np.ndarray, predicted: Sequence[int] | np.ndarray, labels: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/support and the confusion matrix.

    The confusion matrix has rows = true class and columns = predicted class, in the
    order of ``labels``. A class that is never predicted has precision 0.0, a class
    with no examples recall 0.0 (and support 0); accuracy of no items is 0.0.
    """
    true_ids = np.asarray(true, dtype=np.int64).reshape(-1)
    predicted_ids = np.asarray(predicted, dtype=np.int64).reshape(-1)
    if true_ids.shape != predicted_ids.shape:
        raise ValueError(f"{true_ids.size} true labels but {predicted_ids.size} predictions")
    classes = len(labels)
    for name, ids in (("true", true_ids), ("predicted", predicted_ids)):
        if ids.size and (ids.min() < 0 or ids.max() >= classes):
            raise ValueError(
                f"{name} class ids must be in [0, {classes}); got {ids.min()}..{ids.max()}"
            )
    confusion = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(confusion, (true_ids, predicted_ids), 1)
    correct = np.diag(confusion)
    support = confusion.sum(axis=1)
    predicted_count = confusion.sum(axis=0)
    per_class = {
        label: {
            "precision": float(correct[i] / predicted_count[i]) if predicted_count[i] else 0.0,
            "recall": float(correct[i] / support[i]) if support[i] else 0.0,
            "support": int(support[i]),
        }
        for i, label in enumerate(labels)
    }
    count = int(true_ids.size)
    return {
        "accuracy": float(correct.sum() / count) if count else 0.0,
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
        "count": count,
    }


def predict_classes(
    model: Any, card: dict[str, Any], dataset: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true ids, predicted ids, top probabilities) for an unbatched ``(image uint8, label)``
    dataset of a model whose outputs are probabilities."""
    import tensorflow as tf

    height, width, channels = (int(v) for v in card["input_shape"])
    preprocess = str(card.get("preprocess", "raw"))

    def forward(images: Any) -> Any:
        probabilities = model(scale_pixels(images, preprocess), training=False)
        return tf.argmax(probabilities, axis=-1), tf.reduce_max(probabilities, axis=-1)

    compiled = tf.function(
        forward,
        input_signature=[tf.TensorSpec((None, height, width, channels), tf.uint8)],
        jit_compile=False,
    )
    true_parts: list[np.ndarray] = []
    predicted_parts: list[np.ndarray] = []
    top_parts: list[np.ndarray] = []
    batches = dataset.batch(EVAL_BATCH).prefetch(tf.data.AUTOTUNE)
    for images, labels in batches:
        predicted, top = compiled(tf.cast(images, tf.uint8))
        predicted_parts.append(predicted.numpy())
        top_parts.append(top.numpy())
        true_parts.append(labels.numpy())
    if not true_parts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.float32)
    return np.concatenate(true_parts), np.concatenate(predicted_parts), np.concatenate(top_parts)


def evaluate_classifier(model: Any, card: dict[str, Any], val_ds: Any) -> dict[str, Any]:
    """Metrics of ``model`` on ``val_ds`` (unbatched ``(image uint8 [H, W, C], label)``).

    Returns ``accuracy`` (:data:`MAIN_METRIC`), ``per_class`` ({label: precision, recall,
    support}), ``confusion_matrix`` (rows true, columns predicted), ``count`` and
    ``confidence_histogram``, the histogram of top probabilities that jobs' drift is
    measured against (:mod:`infra.confidence`).
    """
    true_ids, predicted_ids, top = predict_classes(model, card, val_ds)
    metrics = classification_metrics(true_ids, predicted_ids, list(card["labels"]))
    return {**metrics, "confidence_histogram": confidence_histogram(top.tolist())}
