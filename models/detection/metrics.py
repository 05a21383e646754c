"""COCO-style average precision for the detector, and the serving threshold it implies.

Why COCO's recipe: ``map50`` (AP at IoU 0.5, the main metric) and ``map``
(AP averaged over IoU 0.50:0.05:0.95) are what users compare detectors by.
Per class and IoU threshold, every detection down to ``EVAL_SCORE_THRESHOLD``
(not only those above the serving threshold, or recall would be capped) is
matched greedily in score order to the unmatched ground truth box of its image
with the highest IoU; AP is the mean over 101 recall points of the interpolated
(monotone) precision. A class without ground truth is left out of the mean.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from bucketvision.infra.confidence import confidence_histogram
from bucketvision.models.detection import MAIN_METRIC
from bucketvision.models.detection.decode import Detections, box_iou

__all__ = ["MAIN_METRIC", "evaluate_detector"]

IOU_THRESHOLDS = np.round(np.arange(0.5, 0.951, 0.05), 2)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
EVAL_SCORE_THRESHOLD = 0.01
THRESHOLD_CANDIDATES = np.round(np.arange(0.15, 0.651, 0.05), 2)

Truth = tuple[np.ndarray, np.ndarray]  # boxes float32 [n, 4], classes int32 [n]


def match_flags(
    detections: Detections, truth: Truth, label: int, thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int]:
    """One image, one class: scores, true-positive flags ``[dets, thresholds]``, truth count."""
    picked = detections.classes == label
    scores = detections.scores[picked]
    order = np.argsort(-scores, kind="stable")
    scores, boxes = scores[order], detections.boxes[picked][order]
    truth_boxes = truth[0][truth[1] == label]
    flags = np.zeros((len(scores), len(thresholds)), dtype=bool)
    if len(scores) and len(truth_boxes):
        overlaps = box_iou(boxes, truth_boxes)
        for column, threshold in enumerate(thresholds):
            taken = np.zeros(len(truth_boxes), dtype=bool)
            for row in range(len(scores)):
                candidates = np.where(taken, -1.0, overlaps[row])
                best = int(np.argmax(candidates))
                if candidates[best] >= threshold:
                    taken[best] = True
                    flags[row, column] = True
    return scores, flags, len(truth_boxes)


def interpolated_ap(scores: np.ndarray, flags: np.ndarray, positives: int) -> float:
    """COCO 101-point AP of one class at one IoU threshold from pooled detections."""
    if positives == 0:
        return float("nan")
    if len(scores) == 0:
        return 0.0
    order = np.argsort(-scores, kind="mergesort")
    hits = flags[order].astype(np.float64)
    true_positives = np.cumsum(hits)
    recall = true_positives / positives
    precision = true_positives / np.arange(1, len(hits) + 1)
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # the monotone envelope
    where = np.searchsorted(recall, RECALL_POINTS, side="left")
    sampled = np.where(where < len(precision), precision[np.minimum(where, len(hits) - 1)], 0.0)
    return float(sampled.mean())


def _pooled(
    detections: Sequence[Detections], truths: Sequence[Truth], label: int, thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int]:
    parts = [match_flags(d, t, label, thresholds) for d, t in zip(detections, truths, strict=True)]
    scores = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0)
    flags = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, len(thresholds)), bool)
    return scores, flags, sum(p[2] for p in parts)


def average_precisions(
    detections: Sequence[Detections], truths: Sequence[Truth], labels: Sequence[str]
) -> dict[str, float]:
    """``map50``, ``map``, ``ap50_<label>`` per class and ``count`` (images)."""
    table = np.full((len(labels), len(IOU_THRESHOLDS)), np.nan)
    for label in range(len(labels)):
        scores, flags, positives = _pooled(detections, truths, label, IOU_THRESHOLDS)
        for column in range(len(IOU_THRESHOLDS)):
            table[label, column] = interpolated_ap(scores, flags[:, column], positives)
    present = ~np.isnan(table[:, 0])
    metrics = {
        "map50": float(table[present, 0].mean()) if present.any() else 0.0,
        "map": float(table[present].mean()) if present.any() else 0.0,
    }
    for label, name in enumerate(labels):
        metrics[f"ap50_{name}"] = float(table[label, 0]) if present[label] else 0.0
    metrics["count"] = float(len(truths))
    return metrics


def best_score_threshold(
    detections: Sequence[Detections],
    truths: Sequence[Truth],
    num_classes: int,
    default: float = 0.3,
) -> float:
    """The candidate threshold with the best F1 at IoU 0.5 (``default`` without truth).

    Greedy matching in score order means dropping the detections below a
    threshold never changes the matches above it, so one matching serves all.
    """
    pooled = [_pooled(detections, truths, c, IOU_THRESHOLDS[:1]) for c in range(num_classes)]
    positives = sum(p[2] for p in pooled)
    if positives == 0:
        return default
    scores = np.concatenate([p[0] for p in pooled])
    hits = np.concatenate([p[1][:, 0] for p in pooled])
    best, best_f1 = default, 0.0
    for threshold in THRESHOLD_CANDIDATES:
        kept = scores >= threshold
        true_positives = float(hits[kept].sum())
        f1 = 2 * true_positives / max(float(kept.sum()) + positives, 1.0)
        if f1 > best_f1 + 1e-9:
            best, best_f1 = float(threshold), f1
    return best


def predict(
    model: Any, card: dict[str, Any], dataset: Any, *, forward_batch: int = 32
) -> tuple[list[Detections], list[Truth]]:
    """Detections (down to ``EVAL_SCORE_THRESHOLD``) and truths of an unbatched dataset."""
    from bucketvision.models.detection.serve import ServedDetector

    served = ServedDetector(model, card, forward_batch)
    detections: list[Detections] = []
    truths: list[Truth] = []
    images: list[np.ndarray] = []

    def flush() -> None:
        if images:
            for output in served.infer(np.stack(images)):
                detections.append(served.detect(output, score_threshold=EVAL_SCORE_THRESHOLD))
            images.clear()

    elements: Iterable[Any] = dataset.as_numpy_iterator()
    for image, boxes, classes in elements:
        images.append(image)
        truths.append((np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(classes)))
        if len(images) == forward_batch:
            flush()
    flush()
    return detections, truths


def evaluate_detector(model: Any, card: dict[str, Any], val_ds: Any) -> dict[str, Any]:
    """COCO-style metrics of ``model`` on an unbatched ``(image, boxes, classes)`` dataset.

    Also ``confidence_histogram``: of each image's best box score among the boxes a worker
    would return (at the card's score threshold), the reference of jobs' drift.
    """
    from bucketvision.models.detection.serve import DEFAULT_SCORE_THRESHOLD

    detections, truths = predict(model, card, val_ds)
    metrics: dict[str, Any] = dict(average_precisions(detections, truths, list(card["labels"])))
    threshold = float(card.get("score_threshold", DEFAULT_SCORE_THRESHOLD))
    served = (np.asarray(found.scores, np.float64) for found in detections)
    best = [float(scores.max()) for scores in served if (scores >= threshold).any()]
    return {**metrics, "confidence_histogram": confidence_histogram(best)}
