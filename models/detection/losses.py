"""The CenterNet training loss on the packed output and target tensors.

``y_pred`` is the model's ``[B, h, w, C + 4]`` (heatmap probabilities, size,
offset) and ``y_true`` the encoded ``[B, h, w, C + 5]`` of
:mod:`models.detection.targets` (heatmap, size, offset, centre mask).

- heatmap: CenterNet's penalty-reduced pixel-wise focal loss (alpha 2, beta 4):
  negatives near a centre are down-weighted by ``(1 - gaussian)^4``, so the
  detector is not punished for a peak one cell off;
- size and offset: L1 at the centre cells only;
- plus a GIoU term between the box rebuilt from the predicted size and offset
  and the true box at the centre cells, which weighs an error relative to the
  object's size (a 2 px error matters on a 12 px shape, not on a 50 px one).

Every term is summed over the batch and divided by the number of objects, so
images with many objects count for more, as in CenterNet. The functions are
plain Python over ``keras.ops`` and are only used in ``compile``: the model
saved for serving is uncompiled, so nothing here needs to be serializable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

EPSILON = 1e-4


def _split(y_true: Any, y_pred: Any, num_classes: int) -> tuple[Any, ...]:
    from keras import ops

    heat_true, heat_pred = y_true[..., :num_classes], y_pred[..., :num_classes]
    size_true, size_pred = (
        y_true[..., num_classes : num_classes + 2],
        y_pred[..., num_classes : num_classes + 2],
    )
    off_true = y_true[..., num_classes + 2 : num_classes + 4]
    off_pred = y_pred[..., num_classes + 2 : num_classes + 4]
    mask = y_true[..., num_classes + 4 :]
    count = ops.maximum(ops.sum(mask), 1.0)
    return heat_true, heat_pred, size_true, size_pred, off_true, off_pred, mask, count


def focal_heatmap_loss(heat_true: Any, heat_pred: Any, count: Any) -> Any:
    """CenterNet's focal loss on sigmoid probabilities, normalised by the object count."""
    from keras import ops

    pred = ops.clip(heat_pred, EPSILON, 1.0 - EPSILON)
    positive = ops.cast(heat_true >= 1.0 - 1e-6, pred.dtype)
    pos_loss = -ops.log(pred) * ops.square(1.0 - pred) * positive
    neg_weight = ops.power(1.0 - heat_true, 4.0)
    neg_loss = -ops.log(1.0 - pred) * ops.square(pred) * neg_weight * (1.0 - positive)
    return (ops.sum(pos_loss) + ops.sum(neg_loss)) / count


def giou_loss(
    size_true: Any, size_pred: Any, off_true: Any, off_pred: Any, mask: Any, count: Any
) -> Any:
    """Mean ``1 - GIoU`` at the centre cells (boxes relative to the cell, stride units)."""
    from keras import ops

    def corners(size: Any, offset: Any) -> tuple[Any, Any, Any, Any]:
        half = ops.maximum(size, 0.0) / 2.0
        return (
            offset[..., 0] - half[..., 0],
            offset[..., 1] - half[..., 1],
            offset[..., 0] + half[..., 0],
            offset[..., 1] + half[..., 1],
        )

    tx0, ty0, tx1, ty1 = corners(size_true, off_true)
    px0, py0, px1, py1 = corners(size_pred, off_pred)
    inter = ops.maximum(ops.minimum(tx1, px1) - ops.maximum(tx0, px0), 0.0) * ops.maximum(
        ops.minimum(ty1, py1) - ops.maximum(ty0, py0), 0.0
    )
    union = (tx1 - tx0) * (ty1 - ty0) + (px1 - px0) * (py1 - py0) - inter
    iou = inter / ops.maximum(union, 1e-6)
    hull = (ops.maximum(tx1, px1) - ops.minimum(tx0, px0)) * (
        ops.maximum(ty1, py1) - ops.minimum(ty0, py0)
    )
    giou = iou - (hull - union) / ops.maximum(hull, 1e-6)
    return ops.sum((1.0 - giou) * mask[..., 0]) / count


def make_losses(
    num_classes: int,
    *,
    size_weight: float = 0.1,
    offset_weight: float = 1.0,
    giou_weight: float = 1.0,
) -> tuple[Callable[[Any, Any], Any], list[Callable[[Any, Any], Any]]]:
    """``(loss, metrics)`` for ``compile``: the weighted total and its four parts."""
    from keras import ops

    def heatmap(y_true: Any, y_pred: Any) -> Any:
        heat_true, heat_pred, *_, count = _split(y_true, y_pred, num_classes)
        return focal_heatmap_loss(heat_true, heat_pred, count)

    def size(y_true: Any, y_pred: Any) -> Any:
        _, _, size_true, size_pred, _, _, mask, count = _split(y_true, y_pred, num_classes)
        return ops.sum(ops.abs(size_true - size_pred) * mask) / count

    def offset(y_true: Any, y_pred: Any) -> Any:
        *_, off_true, off_pred, mask, count = _split(y_true, y_pred, num_classes)
        return ops.sum(ops.abs(off_true - off_pred) * mask) / count

    def giou(y_true: Any, y_pred: Any) -> Any:
        _, _, size_true, size_pred, off_true, off_pred, mask, count = _split(
            y_true, y_pred, num_classes
        )
        return giou_loss(size_true, size_pred, off_true, off_pred, mask, count)

    def centernet_loss(y_true: Any, y_pred: Any) -> Any:
        total = heatmap(y_true, y_pred)
        total = total + size_weight * size(y_true, y_pred)
        total = total + offset_weight * offset(y_true, y_pred)
        if giou_weight:
            total = total + giou_weight * giou(y_true, y_pred)
        return total

    return centernet_loss, [heatmap, size, offset, giou]
