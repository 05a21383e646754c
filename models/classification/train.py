"""Fitting a classifier on unbatched ``(image uint8 [H, W, C], label int32 [])`` datasets.

:func:`train_classifier` picks the model from the data: 28x28x1 images get the seed
digit CNN, anything else the compact residual network, and
``options.extra["backbone"]`` a ``keras.applications`` backbone. The input
pipeline caches, shuffles, repeats, batches, augments (random shifts/rotations/zoom;
horizontal flips only for RGB photos, never digits) and prefetches. Training uses Adam;
without ``--epochs`` it runs until the validation loss stops improving, within a step
and a time budget, and keeps the weights of the best validation epoch; the learning
rate is halved on plateaus and annealed over the budget (:mod:`models.stopping`).
XLA stays off: on this CPU it is several times slower.

``options.extra`` keys: ``architecture`` ("seed_cnn", "compact" or "backbone"),
``backbone``, ``weights`` (``imagenet`` or a local ``.weights.h5`` file),
``weights_source`` (where that file came from, e.g. its ``s3://`` URI, for the card),
``trainable_backbone``, ``augment`` (bool), ``flip`` (bool), ``width`` and ``blocks``
(compact), ``cache`` (bool), and the stopping keys of :data:`models.stopping.STOP_KEYS`
(``patience``, ``max_steps``, ``max_seconds``, ...).
"""

from __future__ import annotations

import math
from typing import Any

from bucketvision.models.classification.augment import make_augmenter
from bucketvision.models.family import DatasetInfo, TrainedModel, TrainOptions
from bucketvision.models.stopping import STOP_KEYS, StopDefaults

DIGIT_SHAPE = (28, 28, 1)
# Defaults per architecture: batch size, peak learning rate, and when to stop (a step
# budget, so a busy machine trains as far as a quiet one; the hour is a backstop). seed_cnn is
# tuned on synthetic digits (tests/perf/tune_classification.py) and scikit-learn's scanned
# digits (make bench-real); compact was only sanity-checked on synthetic 48x48 colour
# digits and backbone is the usual from-scratch recipe.
DEFAULTS: dict[str, dict[str, Any]] = {
    "seed_cnn": {"batch_size": 64, "learning_rate": 2e-3},
    "compact": {"batch_size": 32, "learning_rate": 2e-3},
    "backbone": {"batch_size": 32, "learning_rate": 1e-3},
}
STOPPING: dict[str, StopDefaults] = {
    "seed_cnn": StopDefaults(patience=10, lr_patience=4, max_steps=6000, max_seconds=3600.0),
    "compact": StopDefaults(patience=8, lr_patience=3, max_steps=5000, max_seconds=3600.0),
    "backbone": StopDefaults(patience=8, lr_patience=3, max_steps=5000, max_seconds=3600.0),
}
COMPACT_WIDTH = 32
COMPACT_BLOCKS = (1, 2, 2, 2)
_CACHE_LIMIT_BYTES = 1 << 30  # cache decoded uint8 images in memory up to 1 GiB
_EXTRA_KEYS = {
    "architecture",
    "backbone",
    "weights",
    "weights_source",
    "trainable_backbone",
    "augment",
    "flip",
    "width",
    "blocks",
    "cache",
    *STOP_KEYS,
}


def choose_architecture(info: DatasetInfo, extra: dict[str, Any]) -> str:
    """The architecture for ``info``: extra["architecture"], a backbone, digits or compact."""
    if "architecture" in extra:
        architecture = str(extra["architecture"])
        if architecture not in DEFAULTS:
            raise ValueError(f"unknown architecture {architecture!r}; expected {list(DEFAULTS)}")
        return architecture
    if extra.get("backbone"):
        return "backbone"
    return "seed_cnn" if tuple(info.input_shape) == DIGIT_SHAPE else "compact"


def build_model(architecture: str, info: DatasetInfo, settings: dict[str, Any]) -> Any:
    """An uncompiled model of ``architecture`` for ``info``'s shape and labels.

    ``settings`` are the run's hyperparameters (see :func:`_settings`): ``width`` and
    ``blocks`` for compact, ``backbone``, ``weights``, ``trainable_backbone`` for backbone.
    """
    from bucketvision.models.classification.builders import (
        build_backbone_classifier,
        build_compact_classifier,
        build_mnist_cnn,
    )

    height, width, channels = (int(v) for v in info.input_shape)
    shape = (height, width, channels)
    classes = len(info.labels)
    if architecture == "seed_cnn":
        return build_mnist_cnn(shape, classes, rescale=True)
    if architecture == "compact":
        return build_compact_classifier(
            shape, classes, width=settings["width"], blocks=tuple(settings["blocks"])
        )
    return build_backbone_classifier(
        shape,
        classes,
        backbone=settings["backbone"],
        weights=settings["weights"],
        trainable_backbone=settings["trainable_backbone"],
    )


def _pipeline(
    dataset: Any,
    *,
    batch_size: int,
    training: bool,
    augmenter: Any,
    seed: int,
    cache: bool,
    shuffle_buffer: int,
) -> Any:
    """Cache, shuffle, repeat (training), batch, cast to float32 0-255, augment, prefetch.

    The training batches never end (``fit`` is given ``steps_per_epoch``); the validation
    batches are one pass over a split whose size tf.data knows (models.feeding).
    """
    import tensorflow as tf

    autotune = tf.data.AUTOTUNE
    ds = dataset.map(lambda image, label: (image, tf.cast(label, tf.int32)))
    if cache:
        ds = ds.cache()
    if training:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.batch(batch_size)

    def to_float(images: Any, labels: Any) -> tuple[Any, Any]:
        x = tf.cast(images, tf.float32)
        if augmenter is not None:
            x = augmenter(x, training=True)
        return x, labels

    return ds.map(to_float, num_parallel_calls=autotune).prefetch(autotune)


def _settings(architecture: str, info: DatasetInfo, options: TrainOptions) -> dict[str, Any]:
    """The hyperparameters of this run: the options where set, else the defaults."""
    extra = dict(options.extra)
    unknown = set(extra) - _EXTRA_KEYS
    if unknown:
        raise ValueError(
            f"unknown classification options {sorted(unknown)}; known {sorted(_EXTRA_KEYS)}"
        )
    defaults = DEFAULTS[architecture]
    rgb = int(info.input_shape[2]) == 3
    image_bytes = math.prod(int(v) for v in info.input_shape)
    settings: dict[str, Any] = {
        "epochs": options.epochs,
        "batch_size": options.minibatch_size or defaults["batch_size"],
        "learning_rate": options.learning_rate or defaults["learning_rate"],
        "optimizer": "adam",
        "schedule": "plateau",
        "augment": bool(extra.get("augment", True)),
        "flip": bool(extra.get("flip", rgb and architecture != "seed_cnn")),
        "cache": bool(
            extra.get(
                "cache", image_bytes * (info.train_count + info.val_count) <= _CACHE_LIMIT_BYTES
            )
        ),
        "seed": options.seed,
        "steps_per_epoch": options.steps_per_epoch,
    }
    # A smoke run (steps_per_epoch) reads part of the data: caching it would only warn.
    settings["cache"] = settings["cache"] and options.steps_per_epoch is None
    if architecture == "compact":
        settings["width"] = int(extra.get("width", COMPACT_WIDTH))
        settings["blocks"] = [int(n) for n in extra.get("blocks", COMPACT_BLOCKS)]
    if architecture == "backbone":
        settings["backbone"] = str(extra.get("backbone") or "MobileNetV2")
        settings["weights"] = extra.get("weights")
        settings["weights_source"] = extra.get("weights_source") or settings["weights"]
        trainable = extra.get("trainable_backbone")
        settings["trainable_backbone"] = (
            settings["weights"] is None if trainable is None else bool(trainable)
        )
    return settings


def train_classifier(
    train_ds: Any, val_ds: Any, info: DatasetInfo, options: TrainOptions
) -> TrainedModel:
    """Fit a classifier for ``info`` and return it with its history and card.

    ``train_ds``/``val_ds`` are unbatched ``(image uint8 [H, W, C], label int32 [])``;
    ``options`` fields left ``None`` take the architecture's tuned :data:`DEFAULTS`, and
    without ``options.epochs`` the run stops as :data:`STOPPING` says. The model takes
    raw 0-255 float pixels (it rescales inside), so the card says ``"preprocess": "raw"``.
    """
    import keras

    from bucketvision.models.feeding import sized
    from bucketvision.models.stopping import adaptive_stop, plan_stopping

    architecture = choose_architecture(info, options.extra)
    settings = _settings(architecture, info, options)
    keras.utils.set_random_seed(options.seed)
    model = build_model(architecture, info, settings)
    batch_size = int(settings["batch_size"])
    train_ds, train_count = sized(train_ds)
    val_ds, val_count = sized(val_ds)
    if train_count < 1:
        raise ValueError("the training split is empty: nothing to train a classifier on")
    if options.steps_per_epoch and val_count:  # a smoke run: a few validation batches
        val_count = min(val_count, options.steps_per_epoch * batch_size)
        val_ds = val_ds.take(val_count)
    augmenter = None
    if settings["augment"]:
        digits = architecture == "seed_cnn"
        augmenter = make_augmenter(digits=digits, flip=settings["flip"], seed=options.seed)
    common = {"batch_size": batch_size, "seed": options.seed, "cache": settings["cache"]}
    train = _pipeline(
        train_ds,
        training=True,
        augmenter=augmenter,
        shuffle_buffer=max(1, min(train_count, 10_000)),
        **common,
    )
    validation = None
    if val_count > 0:
        validation = _pipeline(val_ds, training=False, augmenter=None, shuffle_buffer=1, **common)
    plan = plan_stopping(
        options,
        STOPPING[architecture],
        train_count=train_count,
        batch_size=batch_size,
        has_validation=validation is not None,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=float(settings["learning_rate"])),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=False,
    )
    stop = adaptive_stop(plan)
    fitted = model.fit(
        train,
        validation_data=validation,
        epochs=plan.epochs,
        steps_per_epoch=plan.steps_per_epoch,
        callbacks=[stop, *options.callbacks],
        verbose=options.verbose,
        shuffle=False,  # the pipeline shuffles; fit cannot shuffle a tf.data.Dataset
    )
    history = {key: [float(v) for v in values] for key, values in fitted.history.items()}
    card = {
        "task": "classify",
        "input_shape": [int(v) for v in info.input_shape],
        "labels": list(info.labels),
        "preprocess": "raw",
        "outputs": "probabilities",
        "architecture": architecture if architecture != "backbone" else settings["backbone"],
        "hyperparameters": _recorded(settings),
        "epochs_trained": len(history.get("loss", [])),
        **stop.card_fields(),
    }
    return TrainedModel(model=model, history=history, card=card)


def _recorded(settings: dict[str, Any]) -> dict[str, Any]:
    """The hyperparameters for the card: weights named as given, not by a worker's temp copy."""
    recorded = dict(settings)
    if "weights_source" in recorded:
        recorded["weights"] = recorded.pop("weights_source")
    return recorded
