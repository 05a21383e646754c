"""models.agreement: how far two results for one image agree, per task."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from bucketvision.models.agreement import box_iou, detection_agreement, item_agreement
from bucketvision.models.family import ItemFile, ItemResult


def _box(label: str, box: list[float], score: float = 0.9) -> dict[str, object]:
    return {"label": label, "box": box, "score": score}


def _mask_result(ids: np.ndarray) -> ItemResult:
    buffer = io.BytesIO()
    Image.fromarray(ids.astype(np.uint8)).save(buffer, "PNG")
    return ItemResult({"mask": None}, [ItemFile(".mask.png", buffer.getvalue(), field="mask")])


def test_classify_agrees_on_the_top_label_only() -> None:
    same = item_agreement("classify", ItemResult({"label": "3"}), ItemResult({"label": "3"}))
    other = item_agreement("classify", ItemResult({"label": "3"}), ItemResult({"label": "8"}))
    assert (same, other) == (1.0, 0.0)


def test_box_iou() -> None:
    assert box_iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert box_iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(50 / 150)
    assert box_iou([0, 0, 10, 10], [20, 20, 30, 30]) == 0.0


def test_detection_agreement_is_the_f1_of_a_one_to_one_match() -> None:
    current = [_box("circle", [0, 0, 10, 10]), _box("square", [50, 50, 70, 70])]
    assert detection_agreement([], []) == 1.0
    assert detection_agreement(current, current) == 1.0
    shifted = [_box("circle", [1, 1, 11, 11]), _box("square", [90, 90, 99, 99])]
    assert detection_agreement(current, shifted) == pytest.approx(2 * 1 / 4)
    relabelled = [_box("square", [0, 0, 10, 10])]  # the right place, the wrong class
    assert detection_agreement(current, relabelled) == 0.0
    doubled = [_box("circle", [0, 0, 10, 10]), _box("circle", [0, 0, 10, 10], 0.5)]
    assert detection_agreement(current[:1], doubled) == pytest.approx(2 * 1 / 3)  # matched once
    assert detection_agreement(current, []) == 0.0


def test_segment_agreement_is_the_share_of_pixels_given_the_same_class() -> None:
    ours = np.zeros((10, 20), np.uint8)
    theirs = ours.copy()
    theirs[:5, :4] = 2  # 20 of 200 pixels differ
    assert item_agreement("segment", _mask_result(ours), _mask_result(theirs)) == 0.9
    with pytest.raises(ValueError, match="differ in size"):
        item_agreement("segment", _mask_result(ours), _mask_result(ours[:5]))


def test_generate_has_no_agreement() -> None:
    with pytest.raises(ValueError, match="no agreement"):
        item_agreement("generate", ItemResult({}), ItemResult({}))
