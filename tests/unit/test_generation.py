"""Unit tests of the generation family (models.generation): small networks, a few steps."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from bucketvision.models.digits import make_digits
from bucketvision.models.family import DatasetInfo, TrainOptions
from bucketvision.models.generation import (
    MAIN_METRIC,
    ServedGenerator,
    encode_png,
    evaluate_generator,
    train_generator,
)
from bucketvision.models.generation.builders import build_discriminator, build_generator
from bucketvision.models.generation.imaging import to_uint8
from bucketvision.models.generation.metrics import judge_samples, train_judge
from bucketvision.models.generation.train import default_epochs

DIGITS = [str(d) for d in range(10)]
TINY = {"g_filters": 8, "d_filters": 8, "latent_dim": 8, "judge": False}


class WeightWatch(keras.callbacks.Callback):
    """Copies the GAN's generator and discriminator weights before and after fit."""

    def on_train_begin(self, logs: Any = None) -> None:
        self.before = self._snapshot()

    def on_train_end(self, logs: Any = None) -> None:
        self.after = self._snapshot()

    def _snapshot(self) -> dict[str, list[np.ndarray]]:
        gan = self.model
        return {
            "generator": [w.numpy() for w in gan.generator.trainable_weights],
            "discriminator": [w.numpy() for w in gan.discriminator.trainable_weights],
        }


def _dataset(count: int, labelled: bool) -> Any:
    images, labels = make_digits(count, seed=3)
    labels = labels.astype("int32") if labelled else np.full(count, -1, "int32")
    return tf.data.Dataset.from_tensor_slices((images[..., None], labels))


def _train(labelled: bool, watch: WeightWatch | None = None) -> Any:
    info = DatasetInfo("generate", DIGITS if labelled else [], (28, 28, 1), 40, 20)
    options = TrainOptions(
        epochs=1,
        minibatch_size=16,
        steps_per_epoch=2,
        verbose=0,
        callbacks=[watch] if watch else [],
        extra=TINY,
    )
    return train_generator(_dataset(40, labelled), _dataset(20, labelled), info, options)


@pytest.fixture(scope="module")
def watched() -> tuple[Any, WeightWatch]:
    watch = WeightWatch()
    return _train(True, watch), watch


def test_generation_imports_no_tensorflow() -> None:
    code = (
        "import sys\n"
        "import bucketvision.models.generation\n"
        "bad = {'tensorflow', 'keras'} & set(sys.modules)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3), (64, 64, 3)])
@pytest.mark.parametrize("classes", [None, 4])
def test_builders_shapes(shape: tuple[int, int, int], classes: int | None) -> None:
    generator = build_generator(16, shape, classes, base_filters=8)
    discriminator = build_discriminator(shape, classes, base_filters=8)
    z = np.zeros((2, 16), np.float32)
    labels = np.array([[0], [3]], np.int32)
    images = np.asarray(generator([z, labels] if classes else z))
    assert tuple(images.shape) == (2, *shape)
    assert float(np.max(np.abs(images))) <= 1.0
    assert len(generator.inputs) == (2 if classes else 1)
    logits = discriminator([images, labels] if classes else images)
    assert tuple(logits.shape) == (2, 1)


def test_builders_refuse_odd_shapes() -> None:
    with pytest.raises(ValueError, match="divisible"):
        build_generator(8, (27, 27, 1))


def test_fit_steps_change_both_networks(watched: tuple[Any, WeightWatch]) -> None:
    trained, watch = watched
    for network in ("generator", "discriminator"):
        pairs = zip(watch.before[network], watch.after[network], strict=True)
        assert any(not np.allclose(a, b) for a, b in pairs), f"{network} did not change"
    assert set(trained.history) >= {"d_loss", "g_loss", "d_real", "d_fake"}
    assert all(len(values) == 1 for values in trained.history.values())


def test_card_and_samples(watched: tuple[Any, WeightWatch]) -> None:
    trained, _ = watched
    card = trained.card
    assert card["conditional"] is True and card["labels"] == DIGITS
    assert card["image_shape"] == [28, 28, 1] and card["latent_dim"] == 8
    assert card["preprocess"] == "symmetric" and card["architecture"] == "dcgan"
    assert card["hyperparameters"]["steps_per_epoch"] == 2
    assert card["stopped_because"] == "epochs requested reached" and card["steps_trained"] == 2
    assert card["best_epoch"] == 1 and card["stopping"]["epochs_trained"] == 1
    grid = Image.open(io.BytesIO(trained.samples_png))
    assert grid.size[1] > grid.size[0] / 2  # ten rows (one per class) of ten
    assert [tuple(i.shape) for i in trained.model.inputs] == [(None, 8), (None, 1)]


def test_unlabelled_trains_unconditional() -> None:
    trained = _train(False)
    assert trained.card["conditional"] is False and trained.card["labels"] == []
    assert len(trained.model.inputs) == 1 and trained.judge is None


def test_generator_saves_and_reloads_safely(
    watched: tuple[Any, WeightWatch], tmp_path: Path
) -> None:
    model = watched[0].model
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    inputs = [np.random.default_rng(0).standard_normal((3, 8)).astype("float32"), [[1], [2], [3]]]
    inputs[1] = np.asarray(inputs[1], np.int32)
    np.testing.assert_allclose(loaded(inputs), model(inputs), atol=1e-5)


def test_served_generator_is_deterministic_per_seed(watched: tuple[Any, WeightWatch]) -> None:
    trained = watched[0]
    served = ServedGenerator(trained.model, trained.card, forward_batch=4)
    served.warm_up()
    first = served.generate([11, 12, 11, 13, 14, 15], [2, 2, 2, None, 0, 9])
    assert len(first) == 6 and first[0].dtype == np.uint8 and first[0].shape == (28, 28, 1)
    np.testing.assert_array_equal(first[0], first[2])  # same seed and label
    assert not np.array_equal(first[0], first[1])  # another seed
    alone = served.generate([11], [2])[0]  # other batch neighbours, other padding
    np.testing.assert_array_equal(alone, first[0])
    assert not np.array_equal(served.generate([11], [3])[0], alone)  # another class
    with pytest.raises(ValueError, match="out of range"):
        served.generate([1], [10])
    png = Image.open(io.BytesIO(encode_png(alone)))
    assert png.size == (28, 28) and png.mode == "L"


def _constant_judge(probabilities: np.ndarray) -> Any:
    """A keras 'classifier' that gives every image the same probabilities."""
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(
        len(probabilities), kernel_initializer="zeros", bias_initializer="zeros"
    )(x)
    model = keras.Model(inputs, keras.layers.Softmax()(x))
    model.layers[-2].bias.assign(np.log(probabilities).astype("float32"))
    return model


def test_evaluate_with_a_judge_that_always_says_three(
    watched: tuple[Any, WeightWatch],
) -> None:
    trained = watched[0]
    probabilities = np.full(10, 0.2 / 9)
    probabilities[3] = 0.8
    metrics = evaluate_generator(
        trained.model, trained.card, judge=_constant_judge(probabilities), samples=200
    )
    assert metrics[MAIN_METRIC] == pytest.approx(0.8, abs=1e-5)
    assert metrics["classes_present"] == 1
    assert metrics["class_evenness"] == 0.0
    assert metrics["label_agreement"] == pytest.approx(0.1)  # 20 of 200 requested a 3
    assert metrics["per_class_confidence"] == {"3": pytest.approx(0.8, abs=1e-5)}
    assert metrics["samples"] == 200


def test_judge_samples_even_and_skewed() -> None:
    even = np.eye(10)[np.arange(200) % 10] * 0.9 + 0.01
    metrics = judge_samples(even, np.arange(200) % 10, DIGITS)
    assert metrics["classes_present"] == 10
    assert metrics["class_evenness"] == pytest.approx(1.0)
    assert metrics["label_agreement"] == 1.0
    assert metrics[MAIN_METRIC] == pytest.approx(0.91)
    skewed = np.eye(10)[[0] * 150 + [1] * 50]
    metrics = judge_samples(skewed, None, DIGITS)
    assert metrics["classes_present"] == 2 and "label_agreement" not in metrics
    expected = -(0.75 * np.log(0.75) + 0.25 * np.log(0.25)) / np.log(10)
    assert metrics["class_evenness"] == pytest.approx(expected)


def test_train_judge_fits_the_seed_cnn() -> None:
    judge, accuracy = train_judge(_dataset(60, True), 10, _dataset(20, True), epochs=1)
    assert tuple(judge.inputs[0].shape) == (None, 28, 28, 1)
    probabilities = np.asarray(judge(np.zeros((2, 28, 28, 1), np.float32)))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert accuracy is not None and 0.0 <= accuracy <= 1.0


def test_default_epochs_bound_the_steps() -> None:
    assert default_epochs(62, 1860) == 30  # 4,000 images at batch 64
    assert default_epochs(937, 1860) == 2  # 60,000 images
    assert default_epochs(1, 1860) == 30  # tiny sets: at most 30 epochs
    assert default_epochs(5000, 1860) == 1


def test_pixel_mapping() -> None:
    np.testing.assert_array_equal(to_uint8(np.array([-1.0, 0.0, 1.0, 2.0])), [0, 128, 255, 255])
    with pytest.raises(ValueError):
        encode_png(np.zeros((4, 4), np.float32))
