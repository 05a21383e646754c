"""How far two models agree on one image: what a shadow run measures per item.

A candidate that runs in the shadow of CURRENT (:mod:`models.shadow`) is judged by how
often it says what CURRENT says on the same decoded image, as a number in [0, 1]:

- classify: 1 when the top labels are the same, else 0;
- detect: the F1 of matching the two sets of boxes (same label, IoU >= 0.5, greedily by
  score): 2 x matched / (boxes of one + boxes of the other); 1 when neither found any;
- segment: the share of the original's pixels given the same class by both masks.

Works on the item results and files the served families return (``models.family``),
so every output format a card declares compares the same way.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from bucketvision.models.family import ItemResult

MATCH_IOU = 0.5


def box_iou(first: Sequence[float], second: Sequence[float]) -> float:
    """Intersection over union of two ``x_min, y_min, x_max, y_max`` boxes."""
    width = min(first[2], second[2]) - max(first[0], second[0])
    height = min(first[3], second[3]) - max(first[1], second[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    area = (first[2] - first[0]) * (first[3] - first[1])
    area += (second[2] - second[0]) * (second[3] - second[1])
    return float(inter / (area - inter)) if area > inter else 0.0


def detection_agreement(current: list[dict[str, Any]], candidate: list[dict[str, Any]]) -> float:
    """F1 of the greedy one-to-one match of ``candidate``'s boxes to ``current``'s."""
    if not current and not candidate:
        return 1.0
    unmatched = list(current)
    matched = 0
    for box in sorted(candidate, key=lambda found: -float(found["score"])):
        best, best_iou = None, MATCH_IOU
        for index, other in enumerate(unmatched):
            if other["label"] != box["label"]:
                continue
            overlap = box_iou(box["box"], other["box"])
            if overlap >= best_iou:
                best, best_iou = index, overlap
        if best is not None:
            unmatched.pop(best)
            matched += 1
    return 2.0 * matched / (len(current) + len(candidate))


def _mask(result: ItemResult) -> np.ndarray:
    from PIL import Image

    (mask,) = (file for file in result.files if file.field == "mask")
    with Image.open(io.BytesIO(mask.data)) as image:
        return np.asarray(image)


def item_agreement(task: str, current: ItemResult, candidate: ItemResult) -> float:
    """How far ``candidate``'s result for one image agrees with ``current``'s, in [0, 1]."""
    if task == "classify":
        return float(current.result.get("label") == candidate.result.get("label"))
    if task == "detect":
        return detection_agreement(
            list(current.result.get("detections") or []),
            list(candidate.result.get("detections") or []),
        )
    if task == "segment":
        ours, theirs = _mask(current), _mask(candidate)
        if ours.shape != theirs.shape:
            raise ValueError(f"the masks differ in size: {ours.shape} and {theirs.shape}")
        return float(np.mean(ours == theirs))
    raise ValueError(f"no agreement is defined for {task} models")
