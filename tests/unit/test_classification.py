"""The classification family: builders, a smoke train + safe reload, metrics, serving."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bucketvision.models.classification.backbones import backbone_preprocessing
from bucketvision.models.classification.metrics import MAIN_METRIC, classification_metrics
from bucketvision.models.classification.train import choose_architecture
from bucketvision.models.family import DatasetInfo, ItemResult, TrainOptions

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

DIGIT_LABELS = [str(d) for d in range(10)]


def _dataset(images: np.ndarray, labels: np.ndarray) -> Any:
    return tf.data.Dataset.from_tensor_slices((images.astype(np.uint8), labels.astype(np.int32)))


def _identity_model(shape: tuple[int, int, int]) -> Any:
    """Flatten -> Dense with an identity kernel: output i is input pixel i (logits)."""
    size = int(np.prod(shape))
    inputs = keras.Input(shape=shape)
    dense = keras.layers.Dense(size, use_bias=False)
    outputs = dense(keras.layers.Flatten()(inputs))
    dense.set_weights([np.eye(size, dtype="float32")])
    return keras.Model(inputs, outputs)


def test_importing_the_family_does_not_import_tensorflow() -> None:
    code = (
        "import sys\n"
        "import bucketvision.models.classification\n"
        "import bucketvision.models.classification.builders\n"
        "import bucketvision.models.classification.augment\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


def test_builders_give_the_right_shapes_and_probabilities() -> None:
    from bucketvision.models.classification.builders import (
        build_compact_classifier,
        build_mnist_cnn,
    )

    digits = build_mnist_cnn(rescale=True)
    assert tuple(digits.input_shape) == (None, 28, 28, 1)
    assert tuple(digits.output_shape) == (None, 10)
    assert digits.layers[1].name == "unit_scale"  # raw 0-255 in, the seed's layers after
    compact = build_compact_classifier((64, 64, 3), 4, width=8, blocks=(1, 1))
    assert tuple(compact.output_shape) == (None, 4)
    small = build_compact_classifier((32, 32, 1), 3, width=8)
    raw = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 1)).astype("float32")
    probabilities = np.asarray(small(raw, training=False))
    assert probabilities.shape == (2, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError):
        build_compact_classifier((32, 32, 3), 3, blocks=())


def test_backbone_builder_without_weights_handles_grey_small_inputs() -> None:
    from bucketvision.models.classification.builders import build_backbone_classifier

    model = build_backbone_classifier((28, 28, 1), 3, backbone="MobileNetV2", weights=None)
    assert tuple(model.output_shape) == (None, 3)
    assert model.get_layer("upsize") is not None and model.get_layer("grey_to_rgb") is not None
    assert model.get_layer("backbone_scale").get_config()["scale"] == pytest.approx(1 / 127.5)
    assert any(layer.trainable and layer.weights for layer in model.layers[-3:])
    with pytest.raises(ValueError, match="unknown"):
        build_backbone_classifier((32, 32, 3), 2, backbone="NoSuchNet")


def test_backbone_preprocessing_matches_keras_applications() -> None:
    from bucketvision.models.classification.backbones import _preprocessing_layers

    assert backbone_preprocessing("MobileNetV2") == "tf"
    assert backbone_preprocessing("ResNet50V2") == "tf"
    assert backbone_preprocessing("ResNet50") == "caffe"
    assert backbone_preprocessing("DenseNet121") == "torch"
    assert backbone_preprocessing("EfficientNetB0") == "builtin"
    pixels = np.random.default_rng(1).integers(0, 256, (2, 4, 4, 3)).astype("float32")
    for mode, reference in (
        ("caffe", keras.applications.resnet50.preprocess_input),
        ("torch", keras.applications.densenet.preprocess_input),
        ("tf", keras.applications.mobilenet_v2.preprocess_input),
    ):
        inputs = keras.Input(shape=(4, 4, 3))
        model = keras.Model(inputs, _preprocessing_layers(inputs, mode))
        expected = np.asarray(reference(pixels.copy()))
        np.testing.assert_allclose(np.asarray(model(pixels)), expected, rtol=1e-4, atol=1e-3)


def test_choose_architecture() -> None:
    digits = DatasetInfo("classify", DIGIT_LABELS, (28, 28, 1), 10, 2)
    photos = DatasetInfo("classify", ["a", "b"], (96, 96, 3), 10, 2)
    assert choose_architecture(digits, {}) == "seed_cnn"
    assert choose_architecture(photos, {}) == "compact"
    assert choose_architecture(photos, {"backbone": "MobileNetV2"}) == "backbone"
    with pytest.raises(ValueError):
        choose_architecture(photos, {"architecture": "transformer"})


def test_smoke_train_saves_and_reloads_in_safe_mode(tmp_path: Path) -> None:
    from bucketvision.models.classification.metrics import evaluate_classifier
    from bucketvision.models.classification.train import train_classifier
    from bucketvision.models.digits import make_digits

    images, labels = make_digits(40, seed=3)
    images = images[..., np.newaxis]
    info = DatasetInfo("classify", DIGIT_LABELS, (28, 28, 1), 32, 8)
    options = TrainOptions(epochs=2, minibatch_size=8, steps_per_epoch=2, verbose=0)
    trained = train_classifier(
        _dataset(images[:32], labels[:32]), _dataset(images[32:], labels[32:]), info, options
    )
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert len(trained.history[key]) == 2 and all(
            isinstance(v, float) for v in trained.history[key]
        )
    card = trained.card
    assert card["input_shape"] == [28, 28, 1] and card["labels"] == DIGIT_LABELS
    assert card["preprocess"] == "raw" and card["architecture"] == "seed_cnn"
    assert json.loads(json.dumps(card)) == card  # the registry stores the card as JSON
    assert card["hyperparameters"]["batch_size"] == 8 and card["hyperparameters"]["flip"] is False
    assert card["stopped_because"] == "epochs requested reached" and card["steps_trained"] == 4
    path = tmp_path / "model.keras"
    trained.model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    batch = images[:4].astype("float32")
    np.testing.assert_allclose(
        np.asarray(reloaded(batch, training=False)),
        np.asarray(trained.model(batch, training=False)),
        atol=1e-5,
    )
    metrics = evaluate_classifier(reloaded, card, _dataset(images, labels))
    assert metrics["count"] == 40 and 0.0 <= metrics[MAIN_METRIC] <= 1.0


def test_smoke_train_of_the_compact_rgb_model() -> None:
    from bucketvision.models.classification.train import train_classifier

    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (12, 32, 32, 3))
    labels = np.arange(12) % 3
    info = DatasetInfo("classify", ["a", "b", "c"], (32, 32, 3), 12, 0)
    options = TrainOptions(
        epochs=1,
        minibatch_size=4,
        steps_per_epoch=1,
        verbose=0,
        extra={"width": 8, "blocks": [1, 1]},
    )
    trained = train_classifier(
        _dataset(images, labels), _dataset(images[:0], labels[:0]), info, options
    )
    assert trained.card["architecture"] == "compact" and trained.card["hyperparameters"]["flip"]
    assert trained.card["hyperparameters"]["blocks"] == [1, 1]
    assert tuple(trained.model.output_shape) == (None, 3) and len(trained.history["loss"]) == 1
    with pytest.raises(ValueError, match="unknown classification options"):
        train_classifier(
            _dataset(images, labels), _dataset(images, labels), info, TrainOptions(extra={"lr": 1})
        )


def _streamed(images: np.ndarray, labels: np.ndarray) -> Any:
    """Elements of unknown size, like a split the loader streams from S3."""

    def generate() -> Any:
        for image, label in zip(images, labels, strict=True):
            yield image.astype(np.uint8), np.int32(label)

    return tf.data.Dataset.from_generator(
        generate,
        output_signature=(
            tf.TensorSpec(images.shape[1:], tf.uint8),
            tf.TensorSpec((), tf.int32),
        ),
    )


def test_default_training_on_a_streamed_split_stops_by_itself_and_never_runs_dry() -> None:
    import warnings

    from bucketvision.models.classification.train import train_classifier
    from bucketvision.models.digits import make_digits

    images, labels = make_digits(30, seed=5)
    images = images[..., np.newaxis]
    info = DatasetInfo("classify", DIGIT_LABELS, (28, 28, 1), 40, 10)  # overstated counts
    options = TrainOptions(
        minibatch_size=8, verbose=0, extra={"max_steps": 9, "min_epoch_steps": 4}
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trained = train_classifier(
            _streamed(images[:24], labels[:24]), _streamed(images[24:], labels[24:]), info, options
        )
    assert [str(w.message) for w in caught if "ran out of data" in str(w.message)] == []
    card = trained.card
    assert card["stopped_because"] == "step budget reached" and card["steps_trained"] == 9
    assert len(trained.history["val_loss"]) == 3  # epochs of 4 steps, the third cut short
    assert card["stopping"]["budget"]["steps_per_epoch"] == 4
    assert card["hyperparameters"]["schedule"] == "plateau"


def test_metrics_of_a_hand_made_confusion_case() -> None:
    labels = ["cat", "dog", "fox"]
    true = [0, 0, 0, 1, 1, 2, 2, 2]
    predicted = [0, 0, 1, 1, 0, 0, 1, 1]  # "fox" is never predicted
    metrics = classification_metrics(true, predicted, labels)
    assert metrics["confusion_matrix"] == [[2, 1, 0], [1, 1, 0], [1, 2, 0]]
    assert metrics["accuracy"] == pytest.approx(3 / 8)
    assert metrics["count"] == 8
    assert metrics["per_class"]["cat"] == {"precision": 0.5, "recall": 2 / 3, "support": 3}
    assert metrics["per_class"]["dog"] == {"precision": 0.25, "recall": 0.5, "support": 2}
    assert metrics["per_class"]["fox"] == {"precision": 0.0, "recall": 0.0, "support": 3}
    with pytest.raises(ValueError):
        classification_metrics([0, 3], [0, 0], labels)


def test_evaluate_classifier_runs_the_model_on_the_dataset() -> None:
    from bucketvision.models.classification.metrics import evaluate_classifier

    true = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    predicted = np.array([0, 0, 1, 1, 0, 0, 1, 1])
    images = (np.eye(3)[predicted] * 200).reshape(8, 1, 1, 3)  # pixel i lights -> class i
    card = {"input_shape": [1, 1, 3], "labels": ["cat", "dog", "fox"], "preprocess": "unit"}
    metrics = evaluate_classifier(_identity_model((1, 1, 3)), card, _dataset(images, true))
    histogram = metrics.pop("confidence_histogram")  # the card's, for drift
    assert metrics == classification_metrics(true, predicted, card["labels"])
    assert histogram == [0] * 7 + [8, 0, 0]  # every top "probability" is 200 / 255


def test_served_result_schema_top_k_order_and_padding() -> None:
    from bucketvision.models.classification.serve import ServedClassifier

    labels = ["a", "b", "c", "d", "e", "f", "g"]
    card = {"input_shape": [1, 7, 1], "labels": labels, "preprocess": "unit", "outputs": "logits"}
    served = ServedClassifier(_identity_model((1, 7, 1)), card, forward_batch=4)
    assert (served.task, served.mode, served.size, served.resize) == (
        "classify",
        "L",
        (7, 1),
        "stretch",
    )
    served.warm_up()
    first = np.array([10, 50, 30, 70, 0, 20, 60], dtype=np.uint8)
    pixels = np.stack([np.roll(first, shift) for shift in range(6)]).reshape(6, 1, 7, 1)
    outputs = served.infer(pixels)  # 6 images: one full batch of 4 and a padded one
    assert outputs.shape == (6, 7)
    np.testing.assert_allclose(outputs.sum(axis=1), 1.0, atol=1e-9)
    logits = pixels.reshape(6, 7) / 255.0
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(outputs, expected, rtol=1e-5)
    item = served.result(outputs[0], None)
    assert isinstance(item, ItemResult) and item.files == []
    assert set(item.result) == {"label", "score", "top_k"}
    assert [entry["label"] for entry in item.result["top_k"]] == ["d", "g", "b", "c", "f"]
    scores = [entry["score"] for entry in item.result["top_k"]]
    assert scores == sorted(scores, reverse=True)
    assert item.result["label"] == "d" and item.result["score"] == scores[0]
    assert served.result(outputs[1], None).result["label"] == "e"  # rolled by one


def test_served_top_k_is_capped_by_the_label_count() -> None:
    from bucketvision.models.classification.serve import ServedClassifier

    card = {"input_shape": [1, 1, 3], "labels": ["x", "y", "z"], "outputs": "probabilities"}
    served = ServedClassifier(_identity_model((1, 1, 3)), card, forward_batch=2)
    assert served.mode == "RGB" and served.preprocess == "raw"
    result = served.result(np.array([0.2, 0.7, 0.1]), None).result
    assert result == {
        "label": "y",
        "score": 0.7,
        "top_k": [
            {"label": "y", "score": 0.7},
            {"label": "x", "score": 0.2},
            {"label": "z", "score": 0.1},
        ],
    }
