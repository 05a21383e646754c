"""models.scenes: synthetic shape scenes with tight boxes and class-id masks."""

from __future__ import annotations

import numpy as np
import pytest

from bucketvision.models.scenes import SHAPE_CLASSES, Scenes, make_scenes

COUNT = 24


@pytest.fixture(scope="module")
def scenes() -> Scenes:
    return make_scenes(COUNT, seed=7)


@pytest.fixture(scope="module")
def wide_scenes() -> Scenes:
    return make_scenes(12, seed=11, width=96, height=64)


def test_shapes_and_dtypes(scenes: Scenes) -> None:
    assert scenes.images.shape == (COUNT, 128, 128, 3)
    assert scenes.images.dtype == np.uint8
    assert scenes.masks.shape == (COUNT, 128, 128)
    assert scenes.masks.dtype == np.uint8
    assert len(scenes.boxes) == len(scenes.classes) == COUNT
    for boxes, classes in zip(scenes.boxes, scenes.classes, strict=True):
        assert boxes.dtype == np.float32 and boxes.shape == (len(classes), 4)
        assert classes.dtype == np.int32
    assert scenes.labels == SHAPE_CLASSES
    assert scenes.mask_labels == ["background", "circle", "square", "triangle"]


def test_a_non_square_size(wide_scenes: Scenes) -> None:
    assert wide_scenes.images.shape == (12, 64, 96, 3)
    assert wide_scenes.masks.shape == (12, 64, 96)
    for boxes in wide_scenes.boxes:
        assert np.all(boxes[:, [0, 2]] >= 0) and np.all(boxes[:, [0, 2]] <= 96)
        assert np.all(boxes[:, [1, 3]] >= 0) and np.all(boxes[:, [1, 3]] <= 64)


def test_the_same_seed_gives_the_same_scenes(scenes: Scenes) -> None:
    again = make_scenes(COUNT, seed=7)
    np.testing.assert_array_equal(again.images, scenes.images)
    np.testing.assert_array_equal(again.masks, scenes.masks)
    for first, second in zip(scenes.boxes, again.boxes, strict=True):
        np.testing.assert_array_equal(first, second)
    for first, second in zip(scenes.classes, again.classes, strict=True):
        np.testing.assert_array_equal(first, second)


def test_a_prefix_of_the_same_seed_is_the_same() -> None:
    few, more = make_scenes(3, seed=5), make_scenes(6, seed=5)
    np.testing.assert_array_equal(few.images, more.images[:3])
    np.testing.assert_array_equal(few.masks, more.masks[:3])


def test_different_seeds_give_different_scenes(scenes: Scenes) -> None:
    other = make_scenes(COUNT, seed=8)
    assert not np.array_equal(other.images, scenes.images)
    assert not np.array_equal(other.masks, scenes.masks)
    differing = sum(
        not np.array_equal(a, b) for a, b in zip(scenes.images, other.images, strict=True)
    )
    assert differing == COUNT


def test_one_to_four_shapes_per_scene(scenes: Scenes) -> None:
    counts = [len(classes) for classes in scenes.classes]
    assert all(1 <= count <= 4 for count in counts)
    assert len(set(counts)) > 1  # the number varies between scenes


def test_the_shapes_range_is_honoured() -> None:
    single = make_scenes(6, seed=3, shapes=(1, 1))
    assert [len(classes) for classes in single.classes] == [1] * 6


def test_mask_ids_are_background_or_a_class(scenes: Scenes) -> None:
    assert set(np.unique(scenes.masks).tolist()) <= {0, 1, 2, 3}
    for mask in scenes.masks:
        assert np.any(mask == 0)  # some background in every scene
        assert np.any(mask > 0)  # and at least one shape


def test_classes_index_the_labels(scenes: Scenes) -> None:
    every = np.concatenate(scenes.classes)
    assert every.min() >= 0 and every.max() < len(SHAPE_CLASSES)
    assert set(every.tolist()) == {0, 1, 2}  # every class appears across 24 scenes


def test_custom_labels() -> None:
    two = make_scenes(6, seed=4, labels=("circle", "square"))
    assert two.labels == ("circle", "square")
    assert set(np.unique(two.masks).tolist()) <= {0, 1, 2}
    assert all(np.all(classes < 2) for classes in two.classes)


def _check_tight_boxes(scenes: Scenes) -> None:
    height, width = scenes.masks.shape[1:]
    for image_index, (boxes, classes) in enumerate(zip(scenes.boxes, scenes.classes, strict=True)):
        mask = scenes.masks[image_index]
        covered = np.zeros_like(mask, dtype=bool)
        for box, category in zip(boxes, classes, strict=True):
            assert np.all(box == np.round(box)), "boxes are whole pixels"
            x0, y0, x1, y1 = (int(v) for v in box)
            assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
            inside = mask[y0:y1, x0:x1] == category + 1
            assert inside.any()
            # tight: each edge row / column of the box touches a pixel of the class
            assert inside[0].any(), (image_index, box)
            assert inside[-1].any(), (image_index, box)
            assert inside[:, 0].any(), (image_index, box)
            assert inside[:, -1].any(), (image_index, box)
            covered[y0:y1, x0:x1] |= mask[y0:y1, x0:x1] == category + 1
        # every shape pixel lies in a box of its class
        np.testing.assert_array_equal(covered, mask > 0)


def test_boxes_are_tight_around_their_class_pixels(scenes: Scenes) -> None:
    _check_tight_boxes(scenes)


def test_boxes_are_tight_in_a_non_square_scene(wide_scenes: Scenes) -> None:
    _check_tight_boxes(wide_scenes)


def test_boxes_do_not_overlap(scenes: Scenes, wide_scenes: Scenes) -> None:
    for batch in (scenes, wide_scenes):
        for boxes in batch.boxes:
            for i in range(len(boxes)):
                for j in range(i + 1, len(boxes)):
                    a, b = boxes[i], boxes[j]
                    overlap = a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
                    assert not overlap, (a, b)


def test_each_shape_stands_out_from_the_background_around_it(scenes: Scenes) -> None:
    """Shapes get a colour far from the background under them, so a model can see them."""
    for image, mask, boxes, classes in zip(
        scenes.images, scenes.masks, scenes.boxes, scenes.classes, strict=True
    ):
        pixels = image.astype(np.float32)
        for box, category in zip(boxes, classes, strict=True):
            x0, y0, x1, y1 = (int(v) for v in box)
            region, ids = pixels[y0:y1, x0:x1], mask[y0:y1, x0:x1]
            shape = region[ids == category + 1].mean(axis=0)
            around = region[ids == 0]
            if len(around) < 20:
                continue
            assert np.linalg.norm(shape - around.mean(axis=0)) > 30
