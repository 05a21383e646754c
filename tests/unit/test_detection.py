"""Unit tests of the detection family: targets, decoding, mAP, a smoke fit, serving."""

from __future__ import annotations

import io
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bucketvision.models.detection.decode import Detections, box_iou, decode_output
from bucketvision.models.detection.metrics import average_precisions, best_score_threshold
from bucketvision.models.family import DatasetInfo, TrainOptions
from bucketvision.models.imaging import Placement

LABELS = ["circle", "square", "triangle"]


def _output(peaks: list[tuple[int, int, int, float, float, float]], size: int = 32) -> np.ndarray:
    """A raw output with (class, cell y, cell x, score, width, height) peaks, offset 0.5."""
    output = np.zeros((size, size, len(LABELS) + 4), np.float32)
    for label, y, x, score, width, height in peaks:
        output[y, x, label] = score
        output[y, x, 3:] = (width, height, 0.5, 0.5)
    return output


def test_modules_import_without_tensorflow() -> None:
    code = (
        "import sys\n"
        "import bucketvision.models.detection.builders\n"
        "import bucketvision.models.detection.targets\n"
        "import bucketvision.models.detection.decode\n"
        "import bucketvision.models.detection.train\n"
        "import bucketvision.models.detection.metrics\n"
        "import bucketvision.models.detection.serve\n"
        "import bucketvision.models.detection.losses\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_targets_put_peaks_at_box_centres() -> None:
    from bucketvision.models.detection.targets import encode_targets

    boxes = np.array([[8, 8, 40, 24], [60, 70, 100, 110]], np.float32)
    target = np.asarray(
        encode_targets(boxes, np.array([1, 2]), image_size=(128, 128), num_classes=3)
    )
    assert target.shape == (32, 32, 8)
    heatmap = target[..., :3]
    assert np.unravel_index(np.argmax(heatmap[..., 1]), (32, 32)) == (4, 6)  # (24, 16) / 4
    assert np.unravel_index(np.argmax(heatmap[..., 2]), (32, 32)) == (22, 20)  # (80, 90) / 4
    assert heatmap[4, 6, 1] == pytest.approx(1.0) and heatmap[22, 20, 2] == pytest.approx(1.0)
    assert heatmap[..., 0].max() == 0.0 and 0.0 < heatmap[4, 7, 1] < 1.0
    np.testing.assert_allclose(target[4, 6, 3:], [8, 4, 0, 0, 1])  # size, offset, mask
    np.testing.assert_allclose(target[22, 20, 3:], [10, 10, 0, 0.5, 1])
    assert target[..., 7].sum() == 2.0
    empty = encode_targets(np.zeros((0, 4)), np.zeros((0,)), image_size=(128, 128), num_classes=3)
    assert not np.asarray(empty).any()


def test_flip_moves_boxes_with_the_pixels() -> None:
    from bucketvision.models.detection.train import DEFAULTS, augment

    image = np.zeros((64, 64, 3), np.float32)
    image[10:20, 4:14] = 1.0
    hp = {**DEFAULTS, "colour_jitter": False}
    flipped = set()
    for _ in range(12):
        out, boxes = augment(image, np.array([[4, 10, 14, 20]], np.float32), hp)
        x0, y0, x1, y1 = np.asarray(boxes)[0].astype(int)
        assert np.asarray(out)[y0:y1, x0:x1].min() == 1.0
        assert np.asarray(out).sum() == image.sum()
        flipped.add(x0)
    assert flipped == {4, 50}


def test_random_zoom_keeps_boxes_on_their_pixels_and_drops_the_hidden_ones() -> None:
    """Each object is painted in its own channel, so its pixels can be found after the zoom.

    A kept box lies on its object's pixels; a dropped one is an object the view cut:
    what is left of it (if anything) touches the frame's edge. The zoom is seeded, so
    the test sees the same views alone as in the suite.
    """
    import tensorflow as tf

    from bucketvision.models.detection.augment import random_zoom

    tf.random.set_seed(7)
    image = np.zeros((64, 64, 3), np.float32)
    image[10:20, 4:14, 0] = 1.0
    image[40:60, 30:50, 1] = 1.0
    boxes = np.array([[4, 10, 14, 20], [30, 40, 50, 60]], np.float32)
    classes = np.array([0, 1], np.int32)
    sides, dropped = set(), 0
    for _ in range(40):
        out, kept, kept_classes = (
            np.asarray(v) for v in random_zoom(image, boxes, classes, jitter=0.4)
        )
        assert out.shape == image.shape and len(kept) == len(kept_classes)
        for (x0, y0, x1, y1), label in zip(kept, kept_classes, strict=True):
            inner = out[int(np.ceil(y0)) + 1 : int(y1) - 1, int(np.ceil(x0)) + 1 : int(x1) - 1]
            assert inner.size and inner[..., label].min() > 0.99  # on the object's pixels
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
            sides.add(round(float(x1 - x0) / (10 if label == 0 else 20), 1))
        for label in set(classes.tolist()) - set(kept_classes.tolist()):
            dropped += 1
            left = out[..., label] > 0.5
            edge = left[0].any() or left[-1].any() or left[:, 0].any() or left[:, -1].any()
            assert not left.any() or edge, f"object {label} dropped while wholly in view"
    assert min(sides) < 0.85 and max(sides) > 1.15  # zoomed out and in
    assert dropped  # the seeded views cut an object at least once
    same = random_zoom(image, boxes, classes, jitter=0.0)
    np.testing.assert_array_equal(np.asarray(same[1]), boxes)


def test_a_streamed_split_never_runs_out_of_data() -> None:
    """Splits of unknown size (the loader's) and counts that overstate them (skipped items)."""
    import warnings

    from bucketvision.models.detection.train import train_detector
    from bucketvision.models.scenes import make_scenes
    from tests.perf.tune_detection import scenes_dataset

    scenes = make_scenes(9, seed=4, width=64, height=64)
    info = DatasetInfo("detect", LABELS, (64, 64, 3), 8, 3)
    options = TrainOptions(
        epochs=2,
        minibatch_size=4,
        verbose=0,
        extra={"widths": [8, 8, 16, 16], "neck_filters": 8, "head_filters": 8},
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trained = train_detector(
            scenes_dataset(scenes, 0, 6), scenes_dataset(scenes, 6), info, options
        )
    assert [str(w.message) for w in caught if "ran out of data" in str(w.message)] == []
    assert len(trained.history["val_loss"]) == 2 and trained.card["steps_trained"] == 4


def test_decode_returns_boxes_classes_and_nms_drops_a_duplicate() -> None:
    output = _output(
        [
            (1, 4, 6, 0.9, 8, 4),  # box (6.5 -+ 4) * 4, (4.5 -+ 2) * 4
            (1, 4, 8, 0.8, 8, 4),  # a second peak 2 cells away: IoU 0.6 -> dropped by NMS
            (2, 20, 20, 0.7, 10, 10),
            (0, 28, 2, 0.2, 4, 4),  # below the score threshold
        ]
    )
    output[4, 7, 1] = 0.5  # a shoulder between the peaks is no peak
    found = decode_output(output, 3, score_threshold=0.3, nms_iou=0.5)
    assert found.classes.tolist() == [1, 2]
    np.testing.assert_allclose(found.scores, [0.9, 0.7], rtol=1e-6)
    np.testing.assert_allclose(found.boxes, [[10, 10, 42, 26], [62, 62, 102, 102]])
    kept_both = decode_output(output, 3, score_threshold=0.3, nms_iou=0.7)
    assert kept_both.classes.tolist() == [1, 1, 2]
    low = decode_output(output, 3, score_threshold=0.1)
    assert 0 in low.classes.tolist()


def _truth(boxes: list[list[float]], classes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    return np.array(boxes, np.float32).reshape(-1, 4), np.array(classes, np.int32)


def _found(boxes: list[list[float]], scores: list[float], classes: list[int]) -> Detections:
    return Detections(
        np.array(boxes, np.float32).reshape(-1, 4),
        np.array(scores, np.float32),
        np.array(classes, np.int32),
    )


TRUTHS = [
    _truth([[0, 0, 20, 20], [40, 40, 60, 60]], [0, 0]),
    _truth([[10, 10, 50, 30]], [1]),
]


def test_map_is_one_for_perfect_detections() -> None:
    found = [_found(t[0].tolist(), [0.9] * len(t[1]), t[1].tolist()) for t in TRUTHS]
    metrics = average_precisions(found, TRUTHS, LABELS)
    assert metrics["map50"] == pytest.approx(1.0) and metrics["map"] == pytest.approx(1.0)
    assert metrics["ap50_circle"] == 1.0 and metrics["ap50_square"] == 1.0
    assert metrics["ap50_triangle"] == 0.0 and metrics["count"] == 2


def test_map_for_half_right_detections_by_hand() -> None:
    truths = TRUTHS[:1]  # two circles
    hit, miss = [0, 0, 20, 20], [80, 80, 100, 100]
    # Hit first: precision 1 up to recall 0.5, nothing beyond -> 51 of 101 points at 1.0.
    metrics = average_precisions([_found([hit, miss], [0.9, 0.8], [0, 0])], truths, LABELS)
    assert metrics["map50"] == pytest.approx(51 / 101) and metrics["map"] == pytest.approx(51 / 101)
    # The false positive ranked first: precision 0.5 at recall 0.5 -> half of that.
    metrics = average_precisions([_found([hit, miss], [0.8, 0.9], [0, 0])], truths, LABELS)
    assert metrics["map50"] == pytest.approx(0.5 * 51 / 101)
    # A box of IoU 0.64 counts at IoU 0.50..0.60 only: 3 of the 10 thresholds.
    loose = [0, 0, 20, 16]
    metrics = average_precisions([_found([loose], [0.9], [0])], truths, LABELS)
    assert box_iou(loose, hit)[0, 0] == pytest.approx(0.8)
    assert metrics["map50"] == pytest.approx(51 / 101)
    assert metrics["map"] == pytest.approx(0.7 * 51 / 101)


def test_map_is_zero_when_classes_are_wrong() -> None:
    found = [_found(t[0].tolist(), [0.9] * len(t[1]), [2] * len(t[1])) for t in TRUTHS]
    metrics = average_precisions(found, TRUTHS, LABELS)
    assert metrics["map50"] == 0.0 and metrics["map"] == 0.0


def test_best_score_threshold_separates_hits_from_noise() -> None:
    truths = TRUTHS[:1]
    found = [_found([[0, 0, 20, 20], [40, 40, 60, 60], [80, 80, 99, 99]], [0.9, 0.6, 0.2], [0] * 3)]
    assert best_score_threshold(found, truths, 3) == 0.25  # the lowest with F1 = 1
    assert best_score_threshold([], [], 3) == 0.3


@pytest.fixture(scope="module")
def trained() -> Any:
    """A detector fitted for two steps on a few scenes (a smoke fit, not a useful model)."""
    from bucketvision.models.detection.train import train_detector
    from bucketvision.models.scenes import make_scenes
    from tests.perf.tune_detection import scenes_dataset

    scenes = make_scenes(12, seed=3)
    info = DatasetInfo("detect", LABELS, (128, 128, 3), 8, 4)
    options = TrainOptions(epochs=1, minibatch_size=4, steps_per_epoch=2, verbose=0)
    return train_detector(scenes_dataset(scenes, 0, 8), scenes_dataset(scenes, 8), info, options)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Keras's own saving under NumPy 2
def test_smoke_fit_saves_and_reloads_in_safe_mode(trained: Any, tmp_path: Any) -> None:
    import keras

    card = trained.card
    assert card["input_shape"] == [128, 128, 3] and card["labels"] == LABELS
    assert card["stride"] == 4 and card["resize"] == "letterbox" and card["preprocess"] == "unit"
    assert 0.0 < card["score_threshold"] < 1.0 and card["hyperparameters"]["epochs"] == 1
    assert "loss" in trained.history and "val_loss" in trained.history
    assert card["stopped_because"] == "epochs requested reached" and card["steps_trained"] == 2
    assert card["best_epoch"] == 1 and card["stopping"]["monitor"] == "val_loss"
    path = tmp_path / "model.keras"
    trained.model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    pixels = np.random.default_rng(0).random((2, 128, 128, 3)).astype(np.float32)
    np.testing.assert_allclose(
        loaded.predict(pixels, verbose=0), trained.model.predict(pixels, verbose=0), atol=1e-5
    )


def test_served_result_maps_boxes_back_to_a_letterboxed_image(trained: Any) -> None:
    from bucketvision.models.detection.serve import ServedDetector

    served = ServedDetector(trained.model, trained.card, forward_batch=2)
    assert (served.task, served.mode, served.size, served.resize) == (
        "detect",
        "RGB",
        (128, 128),
        "letterbox",
    )
    outputs = served.infer(np.zeros((3, 128, 128, 3), np.uint8))  # a padded partial batch
    assert len(outputs) == 3 and outputs[0].shape == (32, 32, 7)

    placement = Placement.plan(256, 128, (128, 128), "letterbox")  # scale 0.5, pad_y 32
    assert (placement.scale_x, placement.pad_x, placement.pad_y) == (0.5, 0, 32)
    # Cell (x 5, y 11) + offset 0.5, size 8 x 4 cells: input box (6, 38)-(38, 54) pixels,
    # in the original (x / 0.5, (y - 32) / 0.5): (12, 12)-(76, 44).
    output = _output([(2, 11, 5, 0.95, 8, 4)])
    preview = np.full((128, 256, 3), 200, np.uint8)
    image = SimpleNamespace(
        pixels=np.zeros((128, 128, 3), np.uint8), placement=placement, preview=preview
    )
    item = served.result(output, image)
    assert item.result == {
        "detections": [{"label": "triangle", "score": 0.95, "box": [12.0, 12.0, 76.0, 44.0]}]
    }
    (file,) = item.files
    assert (file.suffix, file.field) == (".annotated.png", "annotated")
    drawn = np.asarray(Image.open(io.BytesIO(file.data)).convert("RGB"))
    assert drawn.shape[1] / drawn.shape[0] == 2.0 and (drawn != 200).any()
    no_preview = served.result(output, SimpleNamespace(**{**vars(image), "preview": None}))
    drawn = Image.open(io.BytesIO(no_preview.files[0].data))
    assert drawn.size[0] / drawn.size[1] == 2.0  # the crop of the letterbox content


def test_the_annotated_png_is_the_original_photo_with_boxes_in_its_pixels(
    trained: Any, store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the worker's pipeline, a 640 x 427 photo: annotations on the photo itself.

    The model sees a 128 x 128 letterbox of it; the annotated PNG must not be that (small,
    padded) input but the photo at its own size and aspect ratio, untouched away from
    the box, with the box drawn where the result says it is, in the photo's pixels.
    """
    from concurrent.futures import ThreadPoolExecutor

    from sklearn.datasets import load_sample_images

    from bucketvision.infra.s3 import S3Uri
    from bucketvision.models.detection.annotate import PALETTE
    from bucketvision.models.detection.serve import ServedDetector
    from bucketvision.worker.pipeline import BatchMessage, Limits, run_batch

    path = next(name for name in load_sample_images().filenames if name.endswith("china.jpg"))
    with open(path, "rb") as file:
        data = file.read()
    photo = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert photo.shape == (427, 640, 3)  # non-square: letterboxed with pad_y 21 at 128 x 128
    store.put_bytes("unit-bucket", "in/china.jpg", data, "image/jpeg")

    served = ServedDetector(trained.model, trained.card, forward_batch=2)
    # Cell (x 6, y 8) + offset 0.5, size 8 x 4 cells: input box (10, 26)-(42, 42) pixels;
    # in the photo (x / 0.2, (y - 21) / 0.2): (50, 25)-(210, 105), in its top-left corner.
    output = _output([(2, 8, 6, 0.9, 8, 4)])
    monkeypatch.setattr(served, "infer", lambda pixels: [output] * len(pixels))
    message = BatchMessage(
        "J1", 0, "detect", ["in/china.jpg"], S3Uri("unit-bucket", "in/"),
        S3Uri("unit-bucket", "out/"), "detector@v1",
    )  # fmt: skip
    with ThreadPoolExecutor(max_workers=2) as pool:
        outcome = run_batch(
            message,
            store=store,
            load_model=lambda reference: served,
            pool=pool,
            limits=Limits(max_pixels=10_000_000, max_bytes=10_000_000),
            attempt=1,
        )

    (line,) = outcome.lines
    assert line["status"] == "ok", line["error"]
    (found,) = line["result"]["detections"]
    np.testing.assert_allclose(found["box"], [50, 25, 210, 105], atol=1.0)
    annotated = store.get_bytes("unit-bucket", line["result"]["annotated"])
    drawn = np.asarray(Image.open(io.BytesIO(annotated)).convert("RGB"))
    assert drawn.shape == photo.shape  # the photo's size, not the model's 128 x 128 input
    # Away from the box and its caption, the photo's own pixels.
    np.testing.assert_array_equal(drawn[130:], photo[130:])
    np.testing.assert_array_equal(drawn[:, 300:], photo[:, 300:])
    # The box's left edge is drawn at x = 50 of the photo, in the class's colour.
    x0 = round(found["box"][0])
    assert (drawn[40:90, x0 + 1] == PALETTE[2]).all()
    assert not (photo[40:90, x0 + 1] == PALETTE[2]).all()


def test_evaluate_detector_keeps_the_histogram_of_each_images_best_served_box(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bucketvision.models.detection import metrics as detection_metrics

    found = [
        _found([[0, 0, 8, 8], [2, 2, 9, 9]], [0.95, 0.5], [0, 1]),  # best 0.95
        _found([[0, 0, 8, 8]], [0.35], [0]),  # served at 0.3: best 0.35
        _found([[0, 0, 8, 8]], [0.1], [0]),  # below the card's 0.3: no served box
    ]
    truths = [*TRUTHS, TRUTHS[0]]
    monkeypatch.setattr(detection_metrics, "predict", lambda *args: (found, truths))
    card = {"labels": LABELS, "score_threshold": 0.3}
    metrics = detection_metrics.evaluate_detector(None, card, None)
    histogram = [0] * 10
    histogram[9] += 1
    histogram[3] += 1
    assert metrics["confidence_histogram"] == histogram and "map50" in metrics
