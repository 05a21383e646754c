"""Raw detector outputs -> per-image boxes, scores and classes (NumPy only).

Why NumPy: one stride-4 output of a 128 px input is 32 x 32 x (C + 4) floats, so
peak finding and NMS cost microseconds here, and the same code serves the
worker (no TensorFlow needed to decode) and the metrics.

Steps: a peak is a heatmap cell equal to the max of its 3x3 neighbourhood
(CenterNet's max-pool "NMS"); the ``top_k`` highest peaks above
``score_threshold`` become boxes from the size and offset channels at their
cells; then class-wise box NMS drops overlapping duplicates (IoU above
``nms_iou``) that the peak test alone lets through, e.g. two adjacent peaks on
one elongated object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Detections:
    """One image's detections, best first: boxes in input pixels."""

    boxes: np.ndarray  # float32 [n, 4] x_min, y_min, x_max, y_max
    scores: np.ndarray  # float32 [n]
    classes: np.ndarray  # int32 [n]

    def __len__(self) -> int:
        return len(self.scores)


def empty_detections() -> Detections:
    return Detections(
        np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int32)
    )


def local_peaks(heatmap: np.ndarray) -> np.ndarray:
    """Boolean ``[H, W, C]``: cells equal to the max of their 3x3 neighbourhood, per class."""
    height, width = heatmap.shape[:2]
    padded = np.pad(heatmap, ((1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    pooled = heatmap.copy()
    for dy in range(3):
        for dx in range(3):
            np.maximum(pooled, padded[dy : dy + height, dx : dx + width], out=pooled)
    return heatmap >= pooled


def box_iou(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Pairwise IoU ``[len(first), len(second)]`` of x_min, y_min, x_max, y_max boxes."""
    first = np.asarray(first, np.float64).reshape(-1, 4)
    second = np.asarray(second, np.float64).reshape(-1, 4)
    top_left = np.maximum(first[:, None, :2], second[None, :, :2])
    bottom_right = np.minimum(first[:, None, 2:], second[None, :, 2:])
    overlap = np.clip(bottom_right - top_left, 0.0, None).prod(axis=2)
    area_first = np.clip(first[:, 2:] - first[:, :2], 0.0, None).prod(axis=1)
    area_second = np.clip(second[:, 2:] - second[:, :2], 0.0, None).prod(axis=1)
    union = area_first[:, None] + area_second[None, :] - overlap
    return np.where(union > 0, overlap / np.maximum(union, 1e-12), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes kept by greedy NMS, best score first."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while len(order):
        best = int(order[0])
        keep.append(best)
        if len(order) == 1:
            break
        overlaps = box_iou(boxes[best], boxes[order[1:]])[0]
        order = order[1:][overlaps <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def classwise_nms(
    boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_threshold: float
) -> np.ndarray:
    """NMS within each class; the kept indices sorted by score, best first."""
    kept = [
        np.flatnonzero(classes == label)[
            nms(boxes[classes == label], scores[classes == label], iou_threshold)
        ]
        for label in np.unique(classes)
    ]
    if not kept:
        return np.zeros((0,), np.int64)
    indices = np.concatenate(kept)
    return indices[np.argsort(-scores[indices], kind="stable")]


def decode_output(
    output: np.ndarray,
    num_classes: int,
    *,
    stride: int = 4,
    score_threshold: float = 0.3,
    nms_iou: float = 0.5,
    max_detections: int = 100,
    top_k: int = 100,
) -> Detections:
    """Detections of one raw output ``[H/stride, W/stride, C + 4]`` (layout in builders)."""
    output = np.asarray(output, dtype=np.float32)
    heatmap = output[..., :num_classes]
    peaks = local_peaks(heatmap) & (heatmap >= score_threshold)
    ys, xs, labels = np.nonzero(peaks)
    if len(ys) == 0:
        return empty_detections()
    scores = heatmap[ys, xs, labels]
    if len(scores) > top_k:
        best = np.argpartition(-scores, top_k - 1)[:top_k]
        ys, xs, labels, scores = ys[best], xs[best], labels[best], scores[best]
    regression = output[ys, xs, num_classes : num_classes + 4]
    width, height = np.maximum(regression[:, 0], 0.0), np.maximum(regression[:, 1], 0.0)
    centre_x = xs + regression[:, 2]
    centre_y = ys + regression[:, 3]
    boxes = np.stack(
        [centre_x - width / 2, centre_y - height / 2, centre_x + width / 2, centre_y + height / 2],
        axis=1,
    ) * float(stride)
    limits = np.array([output.shape[1], output.shape[0]] * 2, np.float32) * stride
    boxes = np.clip(boxes, 0.0, limits).astype(np.float32)
    keep = classwise_nms(boxes, scores, labels, nms_iou)[:max_detections]
    return Detections(boxes[keep], scores[keep].astype(np.float32), labels[keep].astype(np.int32))


def decode_batch(outputs: np.ndarray, num_classes: int, **options: Any) -> list[Detections]:
    """:func:`decode_output` for each output of a batch (same keyword options)."""
    return [decode_output(output, num_classes, **options) for output in outputs]
