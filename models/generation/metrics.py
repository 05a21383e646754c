"""Judging a generator with a classifier: confidence, coverage, evenness, label agreement.

A GAN has no held-out loss worth reading, so quality is measured the way the
Inception Score does, with a classifier of our own ("the judge"): samples that
look like real members of a class get confident predictions (``mean_confidence``,
the main metric), and a generator that covers every class (no mode collapse)
spreads its predictions evenly (``classes_present``, ``class_evenness``).

The judge is a classifier ``keras.Model`` whose input is ``[H, W, C]`` pixels
scaled ``x / 255`` (for digits the seed CNN on 28x28x1) and whose output is one
probability per class, in the order of the card's ``labels``. ``train_judge``
fits the seed CNN of :mod:`models.cnn` on the generator's *training* data;
:func:`models.generation.train.train_generator` calls it and hands the judge back
on ``TrainedGenerator.judge``. Samples are resized / converted to the judge's
input when the shapes differ.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bucketvision.models.generation.imaging import to_uint8

MAIN_METRIC = "mean_confidence"


def sample_images(
    generator: Any, latent_dim: int, labels: np.ndarray | None, count: int, seed: int
) -> np.ndarray:
    """``count`` uint8 samples from ``z ~ N(0, I)`` drawn with ``np.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((count, latent_dim)).astype(np.float32)
    inputs: Any = z if labels is None else [z, np.asarray(labels, np.int32).reshape(-1, 1)]
    return to_uint8(generator.predict(inputs, batch_size=100, verbose=0))


def train_judge(
    dataset: Any,
    num_classes: int,
    val_ds: Any = None,
    *,
    epochs: int = 3,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    seed: int = 0,
    verbose: int = 0,
) -> tuple[Any, float | None]:
    """Fit the seed CNN on a labelled unbatched ``(image uint8, label int32)`` dataset.

    Images are scaled ``x / 255``; unlabelled elements (label < 0) are skipped.
    Returns ``(judge, accuracy on val_ds or None)``.
    """
    import keras
    import tensorflow as tf

    from bucketvision.models.cnn import build_mnist_cnn, compile_classifier

    def prepare(ds: Any, shuffle: bool) -> Any:
        """Labelled elements scaled x/255, cached, shuffled element by element (datasets
        often arrive sorted by class), batched; counted once so that Keras knows the
        epoch length the filter hid from it (and does not warn about running out)."""
        ds = (
            ds.filter(lambda _image, label: label >= 0)
            .map(lambda image, label: (tf.cast(image, tf.float32) / 255.0, label))
            .cache()
        )
        count = int(ds.reduce(0, lambda count, _element: count + 1))
        if shuffle:
            ds = ds.shuffle(max(count, 1), seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size)
        return ds.apply(tf.data.experimental.assert_cardinality(-(-count // batch_size)))

    keras.utils.set_random_seed(seed)
    image_shape = tuple(int(v) for v in dataset.element_spec[0].shape)
    judge = compile_classifier(
        build_mnist_cnn(image_shape, num_classes, name="judge"), learning_rate=learning_rate
    )
    train = prepare(dataset, shuffle=True).prefetch(2)
    judge.fit(train, epochs=epochs, verbose=verbose, shuffle=False)
    accuracy = None
    if val_ds is not None:
        accuracy = float(
            judge.evaluate(prepare(val_ds, shuffle=False), verbose=0, return_dict=True)["accuracy"]
        )
    return judge, accuracy


def fit_to_judge(images: np.ndarray, judge_shape: tuple[int, int, int]) -> np.ndarray:
    """uint8 samples resized / converted to the judge's ``(H, W, C)``, as floats ``x / 255``."""
    from PIL import Image

    height, width, channels = judge_shape
    if images.shape[1:] != (height, width, channels):
        converted = []
        for image in images:
            picture = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
            picture = picture.convert("L" if channels == 1 else "RGB").resize((width, height))
            converted.append(np.asarray(picture).reshape(height, width, channels))
        images = np.stack(converted)
    return images.astype(np.float32) / 255.0


def judge_samples(
    probabilities: np.ndarray, requested: np.ndarray | None, labels: list[str]
) -> dict[str, Any]:
    """The metrics for judge ``probabilities`` (N x K) of N samples (see module doc)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    count, classes = probabilities.shape
    names = list(labels) if len(labels) == classes else [str(i) for i in range(classes)]
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    histogram = np.bincount(predicted, minlength=classes)
    shares = histogram[histogram > 0] / count
    entropy = max(0.0, float(-(shares * np.log(shares)).sum()))
    metrics: dict[str, Any] = {
        MAIN_METRIC: float(confidence.mean()),
        "classes_present": int((histogram > 0).sum()),
        "class_evenness": entropy / float(np.log(classes)) if classes > 1 else 1.0,
        "per_class_confidence": {
            names[k]: float(confidence[predicted == k].mean())
            for k in range(classes)
            if histogram[k]
        },
        "predicted_counts": {names[k]: int(histogram[k]) for k in range(classes)},
        "samples": int(count),
    }
    if requested is not None:
        requested = np.asarray(requested).reshape(-1)
        agree = predicted == requested
        metrics["label_agreement"] = float(agree.mean())
        metrics["per_class_agreement"] = {
            names[k]: float(agree[requested == k].mean())
            for k in range(classes)
            if (requested == k).any()
        }
    return metrics


def evaluate_generator(
    model: Any,
    card: dict[str, Any],
    val_ds: Any = None,
    *,
    judge: Any = None,
    samples: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """Draw ``samples`` images (evenly over classes when conditional) and judge them.

    ``judge`` is normally ``TrainedGenerator.judge``; when it is None and the card
    has at least two labels, a seed-CNN judge is fitted on ``val_ds`` here (slower,
    and weaker than one fitted on the training split). Without labels there is
    nothing to judge against: the result then has ``MAIN_METRIC`` = None.
    """
    labels = list(card.get("labels") or [])
    conditional = bool(card.get("conditional"))
    requested = np.arange(samples) % len(labels) if conditional else None
    images = sample_images(model, int(card["latent_dim"]), requested, samples, seed)
    if judge is None and len(labels) >= 2 and val_ds is not None:
        judge, _ = train_judge(val_ds, len(labels), seed=seed)
    if judge is None:
        return {MAIN_METRIC: None, "samples": samples, "judge": "none"}
    judge_shape = tuple(int(v) for v in judge.inputs[0].shape[1:])
    probabilities = judge.predict(fit_to_judge(images, judge_shape), batch_size=100, verbose=0)
    return judge_samples(np.asarray(probabilities), requested, labels)
