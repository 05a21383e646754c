"""The segmentation family: U-Net shape, IoU maths, a tiny fit that reloads, served masks."""

from __future__ import annotations

import io
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bucketvision.models.family import DatasetInfo, TrainOptions
from bucketvision.models.imaging import Placement, fit_mask
from bucketvision.models.segmentation.metrics import (
    MAIN_METRIC,
    confusion_matrix,
    evaluate_segmenter,
    scores_from_confusion,
)
from bucketvision.models.segmentation.serve import ServedSegmenter, mask_at_original

LABELS = ["background", "circle", "square", "triangle"]


class IdsModel:
    """A fake model: channel 0 of the (unit-scaled) input holds the class id to predict."""

    def __call__(self, x: Any, training: bool = False) -> Any:
        import tensorflow as tf

        ids = tf.cast(tf.round(x[..., 0] * 255.0), tf.int32)
        return tf.one_hot(ids, len(LABELS), dtype=tf.float32) * 0.9 + 0.1 / len(LABELS)


def test_modules_import_without_tensorflow() -> None:
    code = (
        "import sys\n"
        "import bucketvision.models.segmentation.builders\n"
        "import bucketvision.models.segmentation.train\n"
        "import bucketvision.models.segmentation.metrics\n"
        "import bucketvision.models.segmentation.serve\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unet_outputs_a_distribution_per_pixel() -> None:
    from bucketvision.models.segmentation.builders import build_unet

    model = build_unet((32, 48, 3), 5, base_filters=4, depth=3)
    assert tuple(model.output_shape) == (None, 32, 48, 5)
    out = np.asarray(model(np.random.default_rng(0).random((2, 32, 48, 3)), training=False))
    assert out.shape == (2, 32, 48, 5)
    np.testing.assert_allclose(out.sum(axis=-1), 1.0, atol=1e-5)
    odd = build_unet((30, 44, 3), 4, base_filters=4, depth=3)  # padded inside, cropped back
    assert tuple(odd.output_shape) == (None, 30, 44, 4)


# truth / prediction of one 2x3 image; "triangle" (3) is in neither, so it has no IoU
TRUTH = np.array([[0, 0, 1], [1, 2, 2]], dtype=np.uint8)
PREDICTED = np.array([[0, 1, 1], [1, 2, 0]], dtype=np.uint8)


def test_scores_from_a_hand_made_confusion_matrix() -> None:
    matrix = confusion_matrix(TRUTH, PREDICTED, 4)
    assert matrix.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    scores = scores_from_confusion(matrix, LABELS)
    # background 1/3 (1 hit, union 3), circle 2/3, square 1/2, triangle: zero union -> excluded
    assert scores["per_class_iou"] == pytest.approx(
        {"background": 1 / 3, "circle": 2 / 3, "square": 1 / 2, "triangle": None}
    )
    assert scores["miou"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert scores["pixel_accuracy"] == pytest.approx(4 / 6)


def test_evaluate_accumulates_one_matrix_over_every_batch() -> None:
    import tensorflow as tf

    # three 2x3 images, evaluated in batches of 2 (the last one partial)
    truth = np.stack([TRUTH, TRUTH, np.full_like(TRUTH, 3)])
    predicted = np.stack([PREDICTED, TRUTH, np.full_like(TRUTH, 3)])
    images = np.repeat(predicted[..., None], 3, axis=-1)
    card = {"input_shape": [2, 3, 3], "labels": LABELS, "preprocess": "unit"}
    dataset = tf.data.Dataset.from_tensor_slices((images, truth))
    scores = evaluate_segmenter(IdsModel(), card, dataset, batch_size=2)
    expected = scores_from_confusion(
        confusion_matrix(truth, predicted, 4), LABELS
    )  # background 3/5, circle 4/5, square 3/4, triangle 6/6
    assert MAIN_METRIC == "miou" and scores["count"] == 3
    assert scores["miou"] == pytest.approx(expected["miou"])
    assert scores["miou"] == pytest.approx((3 / 5 + 4 / 5 + 3 / 4 + 1) / 4)
    assert scores["pixel_accuracy"] == pytest.approx(16 / 18)
    assert scores["confidence_histogram"] == [0] * 9 + [3]  # top probability 0.925 everywhere


def test_a_two_step_fit_saves_and_reloads_in_safe_mode(tmp_path: Any) -> None:
    import keras
    import tensorflow as tf

    from bucketvision.models.scenes import make_scenes
    from bucketvision.models.segmentation.train import train_segmenter

    scenes = make_scenes(6, seed=3, width=32, height=32)
    data = tf.data.Dataset.from_tensor_slices((scenes.images, scenes.masks))
    info = DatasetInfo("segment", scenes.mask_labels, (32, 32, 3), train_count=4, val_count=2)
    options = TrainOptions(
        epochs=1,
        minibatch_size=2,
        steps_per_epoch=2,
        verbose=0,
        extra={"base_filters": 4, "depth": 2},
    )
    trained = train_segmenter(data.take(4), data.skip(4), info, options)
    assert {"loss", "accuracy", "miou", "val_loss", "val_miou"} <= set(trained.history)
    card = trained.card
    assert card["input_shape"] == [32, 32, 3] and card["labels"] == LABELS
    assert (card["preprocess"], card["resize"], card["architecture"]) == (
        "unit",
        "letterbox",
        "unet",
    )
    assert card["hyperparameters"]["base_filters"] == 4
    path = str(tmp_path / "model.keras")
    trained.model.save(path)
    x = scenes.images[:2].astype("float32") / 255.0
    before = np.asarray(trained.model(x, training=False))
    loaded = keras.saving.load_model(path, safe_mode=True)  # compiled or not: no custom code
    np.testing.assert_allclose(np.asarray(loaded(x, training=False)), before, atol=1e-5)


def _letterboxed(ids: np.ndarray, size: int, pad_id: int) -> tuple[np.ndarray, Placement]:
    """An id image letterboxed like the worker does; padding holds ``pad_id``."""
    height, width = ids.shape
    placement = Placement.plan(width, height, (size, size), "letterbox")
    boxed = np.asarray(fit_mask(Image.fromarray(ids, "L"), placement)).copy()
    inside = np.zeros_like(boxed, dtype=bool)
    placement.crop_content(inside)[...] = True
    boxed[~inside] = pad_id
    return np.repeat(boxed[..., None], 3, axis=-1), placement


def test_served_mask_is_at_the_original_size_without_padding() -> None:
    original = np.zeros((100, 200), dtype=np.uint8)  # 200 wide, 100 high
    original[:, :100] = 1  # left half circle
    original[50:, 100:] = 2  # bottom right quarter square, top right background
    pixels, placement = _letterboxed(original, 128, pad_id=3)  # padding says "triangle"
    assert (placement.pad_x, placement.pad_y, placement.content_size) == (0, 32, (128, 64))
    served = ServedSegmenter(IdsModel(), {"input_shape": [128, 128, 3], "labels": LABELS}, 2)
    assert (served.task, served.mode, served.size, served.resize) == (
        "segment",
        "RGB",
        (128, 128),
        "letterbox",
    )
    served.warm_up()
    outputs = served.infer(np.stack([pixels, pixels, pixels]))  # a partial second batch
    assert len(outputs) == 3 and outputs[2].shape == (128, 128, 4)
    item = served.result(outputs[2], SimpleNamespace(placement=placement))
    assert item.result["mask"] is None and item.result["classes"] == LABELS
    [file] = item.files
    assert (file.suffix, file.field, file.content_type) == (".mask.png", "mask", "image/png")
    mask = Image.open(io.BytesIO(file.data))
    assert (mask.format, mask.mode, mask.size) == ("PNG", "L", (200, 100))
    np.testing.assert_array_equal(np.asarray(mask), original)
    fractions = item.result["pixel_fraction"]
    assert fractions == pytest.approx(
        {"background": 0.25, "circle": 0.5, "square": 0.25, "triangle": 0.0}
    )
    assert sum(fractions.values()) == pytest.approx(1.0, abs=1e-12)


def test_huge_originals_are_smoothed_at_a_bounded_size_then_enlarged() -> None:
    placement = Placement.plan(3000, 1500, (128, 128), "letterbox")
    probabilities = np.zeros((128, 128, 2), dtype=np.float32)
    probabilities[..., 0] = 1.0
    probabilities[:, 64:, 0], probabilities[:, 64:, 1] = 0.0, 1.0  # right half is class 1
    ids = mask_at_original(probabilities, placement)
    assert ids.shape == (1500, 3000) and ids.dtype == np.uint8
    assert (ids[:, 1510:] == 1).all() and (ids[:, :1490] == 0).all()


def _streamed(images: np.ndarray, masks: np.ndarray) -> Any:
    """(image, mask) elements of unknown size, like a split the loader streams from S3."""
    import tensorflow as tf

    def generate() -> Any:
        yield from zip(images, masks, strict=True)

    height, width = masks.shape[1:]
    return tf.data.Dataset.from_generator(
        generate,
        output_signature=(
            tf.TensorSpec((height, width, 3), tf.uint8),
            tf.TensorSpec((height, width), tf.uint8),
        ),
    )


def test_a_streamed_split_never_runs_out_of_data() -> None:
    """The loader's splits have no known size: fit used to read each epoch to the end and
    Keras warned 'Your input ran out of data; interrupting training' every epoch."""
    import warnings

    from bucketvision.models.scenes import make_scenes
    from bucketvision.models.segmentation.train import train_segmenter

    scenes = make_scenes(9, seed=4, width=32, height=32)
    # The counts say 8 and 3, as when an undecodable item was skipped: 6 and 3 are there.
    info = DatasetInfo("segment", scenes.mask_labels, (32, 32, 3), train_count=8, val_count=3)
    options = TrainOptions(
        epochs=3, minibatch_size=4, verbose=0, extra={"base_filters": 4, "depth": 2}
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trained = train_segmenter(
            _streamed(scenes.images[:6], scenes.masks[:6]),
            _streamed(scenes.images[6:], scenes.masks[6:]),
            info,
            options,
        )
    assert [str(w.message) for w in caught if "ran out of data" in str(w.message)] == []
    assert len(trained.history["loss"]) == 3 and len(trained.history["val_loss"]) == 3
    assert trained.card["steps_trained"] == 3 * 2  # 6 items in batches of 4: 2 a pass


def test_default_training_stops_by_itself_and_says_why() -> None:
    from bucketvision.models.scenes import make_scenes
    from bucketvision.models.segmentation.train import train_segmenter

    scenes = make_scenes(8, seed=5, width=32, height=32)
    info = DatasetInfo("segment", scenes.mask_labels, (32, 32, 3), train_count=6, val_count=2)
    options = TrainOptions(
        minibatch_size=2,
        verbose=0,
        extra={"base_filters": 4, "depth": 2, "max_steps": 7, "min_epoch_steps": 3},
    )
    trained = train_segmenter(
        _streamed(scenes.images[:6], scenes.masks[:6]),
        _streamed(scenes.images[6:], scenes.masks[6:]),
        info,
        options,
    )
    card = trained.card
    assert card["stopped_because"] == "step budget reached" and card["steps_trained"] == 7
    assert len(trained.history["loss"]) == 3  # epochs of 3 steps; the third cut at step 7
    assert 1 <= card["best_epoch"] <= 3 and card["stopping"]["monitor"] == "val_loss"
    assert "learning_rate" in trained.history


def test_the_random_zoom_moves_the_mask_with_the_pixels_and_keeps_it_class_ids() -> None:
    """Image and mask get one view: every pixel of class c has object c's colour after it."""
    from bucketvision.models.zoom import zoom_image_and_mask

    image = np.zeros((64, 64, 3), np.float32)
    mask = np.zeros((64, 64), np.uint8)
    image[10:30, 6:26], mask[10:30, 6:26] = 100.0, 1
    image[36:60, 30:58], mask[36:60, 30:58] = 200.0, 2
    areas = set()
    for _ in range(30):
        zoomed, ids = (np.asarray(v) for v in zoom_image_and_mask(image, mask, 0.4))
        assert zoomed.shape == image.shape and ids.shape == mask.shape and ids.dtype == np.uint8
        assert set(np.unique(ids)) <= {0, 1, 2}  # nearest neighbour: no blended ids
        for label, colour in ((1, 100.0), (2, 200.0)):
            where = ids == label
            # Away from the edges (bilinear blends one pixel there) the colours agree.
            inner = where & np.roll(where, 2, 0) & np.roll(where, -2, 0)
            inner &= np.roll(where, 2, 1) & np.roll(where, -2, 1)
            if inner.any():
                np.testing.assert_allclose(zoomed[inner][:, 0], colour, atol=1e-3)
        areas.add(round(float((ids == 1).sum()) / 400, 1))
    assert min(areas) < 0.8 and max(areas) > 1.2  # zoomed out and in
    same_image, same_mask = zoom_image_and_mask(image, mask, 0.0)
    np.testing.assert_array_equal(np.asarray(same_image), image)
    np.testing.assert_array_equal(np.asarray(same_mask), mask)
