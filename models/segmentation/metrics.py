"""Evaluating a segmenter: a confusion matrix over the whole set, then IoU and accuracy.

Why a confusion matrix over every pixel of the set rather than per-image scores:
per-image IoU is undefined for classes absent from an image and over-weights tiny
objects; the whole-set matrix is the PASCAL VOC / COCO-stuff definition. A class
with zero union (absent from both truth and prediction in the whole set) has no
IoU: it is reported as ``None`` and left out of the mean, as in VOC and in
``keras.metrics.MeanIoU``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bucketvision.infra.confidence import confidence_histogram

MAIN_METRIC = "miou"
EVAL_BATCH = 32


def confusion_matrix(truth: np.ndarray, prediction: np.ndarray, num_classes: int) -> np.ndarray:
    """``[num_classes, num_classes]`` int64 counts, rows = truth, columns = prediction."""
    truth = np.asarray(truth, dtype=np.int64).ravel()
    prediction = np.asarray(prediction, dtype=np.int64).ravel()
    if truth.shape != prediction.shape:
        raise ValueError(f"truth has {truth.size} pixels, prediction {prediction.size}")
    if truth.size and (truth.max() >= num_classes or prediction.max() >= num_classes):
        raise ValueError(f"class ids must be below {num_classes}")
    counts = np.bincount(truth * num_classes + prediction, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def scores_from_confusion(matrix: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """miou, pixel_accuracy, per_class_iou {label: iou or None} from a confusion matrix."""
    matrix = np.asarray(matrix, dtype=np.float64)
    hits = np.diag(matrix)
    union = matrix.sum(axis=0) + matrix.sum(axis=1) - hits
    present = union > 0
    iou = np.divide(hits, union, out=np.zeros_like(hits), where=present)
    total = matrix.sum()
    return {
        "miou": float(iou[present].mean()) if present.any() else 0.0,
        "pixel_accuracy": float(hits.sum() / total) if total else 0.0,
        "per_class_iou": {
            label: (float(value) if ok else None)
            for label, value, ok in zip(labels, iou, present, strict=True)
        },
    }


def predict_ids(
    model: Any, card: dict[str, Any], batch_size: int = EVAL_BATCH, *, confidence: bool = False
) -> Any:
    """A compiled ``uint8 [B, H, W, C] -> int32 [B, H, W]`` class-id forward pass.

    ``confidence``: it returns ``(ids, confidence [B])`` instead, the mean over each image's
    pixels of the top class probability (what a job's ``confidence`` is).
    """
    import tensorflow as tf

    from bucketvision.models.pixels import scale_pixels

    preprocess = card.get("preprocess", "unit")
    height, width, channels = card["input_shape"]

    @tf.function(
        input_signature=[tf.TensorSpec([None, height, width, channels], tf.uint8)],
        jit_compile=False,
        reduce_retracing=True,
    )
    def forward(pixels: Any) -> Any:
        probabilities = model(scale_pixels(pixels, preprocess), training=False)
        ids = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        if confidence:
            return ids, tf.reduce_mean(tf.reduce_max(probabilities, axis=-1), axis=[1, 2])
        return ids

    return forward


def evaluate_segmenter(
    model: Any, card: dict[str, Any], val_ds: Any, *, batch_size: int = EVAL_BATCH
) -> dict[str, Any]:
    """Score ``model`` on unbatched ``(image uint8, mask uint8)`` elements of ``val_ds``.

    Returns ``miou`` (the main metric: mean IoU over all classes, background included),
    ``pixel_accuracy``, ``per_class_iou`` {label: iou or None}, ``count`` (images) and
    ``confidence_histogram`` (of each image's mean top pixel probability: jobs' drift).
    """
    import tensorflow as tf

    labels = list(card["labels"])
    forward = predict_ids(model, card, batch_size, confidence=True)
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    count = 0
    confidences: list[float] = []
    batches = val_ds.map(lambda image, mask: (tf.cast(image, tf.uint8), mask)).batch(batch_size)
    for images, masks in batches:
        ids, confidence = forward(images)
        prediction = ids.numpy()
        matrix += confusion_matrix(masks.numpy(), prediction, len(labels))
        count += int(prediction.shape[0])
        confidences += [float(value) for value in confidence.numpy()]
    scores = scores_from_confusion(matrix, labels)
    return {**scores, "count": count, "confidence_histogram": confidence_histogram(confidences)}
