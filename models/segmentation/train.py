"""Training a U-Net segmenter on unbatched ``(image uint8 [S,S,3], mask uint8 [S,S])`` data.

The default recipe was tuned on :func:`models.scenes.make_scenes` (see
``tests/perf/tune_segmentation.py``) to reach a held-out mean IoU above 0.9 in a
few minutes on two CPU cores: a compact U-Net, Adam with a cosine decay,
cross-entropy plus soft Dice (Dice keeps the rare classes from drowning in the
background), and label-preserving augmentation (flips of image and mask
together, colour jitter). TensorFlow and Keras are imported inside functions.

``options.extra`` may override: ``train_images`` (images shown when
``options.epochs`` is None), ``max_epochs``, ``base_filters``, ``depth``, ``dice_weight``,
``weight_decay``, ``augment`` ("none", "flips" = left-right and up-down,
"dihedral" = flips and 90-degree turns of square images, for overhead or
synthetic imagery),
``colour_jitter`` (bool).
"""

from __future__ import annotations

import math
from typing import Any

from bucketvision.models.family import DatasetInfo, TrainedModel, TrainOptions

DEFAULTS: dict[str, Any] = {
    "epochs": None,  # None: enough epochs to show the model ``train_images`` images
    "train_images": 18000,
    "max_epochs": 100,
    "batch_size": 16,
    "learning_rate": 3e-3,
    "base_filters": 8,
    "depth": 4,
    "dice_weight": 1.0,
    "weight_decay": 1e-4,
    "augment": "flips",
    "colour_jitter": True,
}
AUGMENT_MODES = ("none", "flips", "dihedral")
SHUFFLE_BYTES = 256 << 20  # bound on the shuffle buffer, whatever the image size


def hyperparameters(options: TrainOptions, train_count: int) -> dict[str, Any]:
    """The effective recipe: DEFAULTS, then ``options.extra``, then the explicit options.

    Without an explicit epoch count the number of epochs follows the dataset size, so
    the default schedule costs about the same (``train_images`` presentations, a few
    minutes on two CPU cores at 128 x 128) whether a user uploads 1,000 or 3,000 images.
    """
    unknown = set(options.extra) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown segmentation options: {sorted(unknown)}")
    params = {**DEFAULTS, **options.extra, **options.overrides()}
    if params["epochs"] is None:
        passes = math.ceil(params["train_images"] / max(1, train_count))
        params["epochs"] = max(1, min(int(params["max_epochs"]), passes))
    if params["augment"] not in AUGMENT_MODES:
        raise ValueError(f"augment must be one of {AUGMENT_MODES}, not {params['augment']!r}")
    return params


def segmentation_loss(num_classes: int, dice_weight: float) -> Any:
    """Per-pixel sparse cross-entropy plus ``dice_weight`` x (1 - mean soft Dice over classes).

    Dice is computed over the whole batch per class; classes absent from both truth
    and prediction score 1 (smoothing), so they neither help nor hurt.
    """
    import keras
    from keras import ops

    def loss(y_true: Any, y_pred: Any) -> Any:
        labels = ops.cast(y_true, "int32")
        cross_entropy = ops.mean(keras.losses.sparse_categorical_crossentropy(labels, y_pred))
        if not dice_weight:
            return cross_entropy
        one_hot = ops.one_hot(labels, num_classes, dtype=y_pred.dtype)
        axes = (0, 1, 2)
        overlap = ops.sum(one_hot * y_pred, axis=axes)
        total = ops.sum(one_hot, axis=axes) + ops.sum(y_pred, axis=axes)
        dice = (2.0 * overlap + 1.0) / (total + 1.0)
        return cross_entropy + dice_weight * (1.0 - ops.mean(dice))

    return loss


def _augment(image: Any, mask: Any, params: dict[str, Any], seed: int) -> tuple[Any, Any]:
    """Random geometric transforms of image and mask together, colour jitter on the image."""
    import tensorflow as tf

    image = tf.cast(image, tf.float32)
    mask = tf.cast(mask, tf.uint8)[..., tf.newaxis]
    if params["augment"] != "none":
        stacked = tf.concat([image, tf.cast(mask, tf.float32)], axis=-1)
        stacked = tf.image.random_flip_left_right(stacked, seed=seed)
        stacked = tf.image.random_flip_up_down(stacked, seed=seed + 1)
        if params["augment"] == "dihedral" and image.shape[0] == image.shape[1]:
            turns = tf.random.uniform([], 0, 4, dtype=tf.int32, seed=seed + 2)
            stacked = tf.image.rot90(stacked, turns)
        image, mask = stacked[..., :-1], tf.cast(stacked[..., -1:], tf.uint8)
    if params["colour_jitter"]:
        image = image + tf.random.uniform([], -25.0, 25.0, seed=seed + 3)
        mean = tf.reduce_mean(image, axis=(0, 1), keepdims=True)
        image = (image - mean) * tf.random.uniform([], 0.75, 1.25, seed=seed + 4) + mean
    image = tf.clip_by_value(image, 0.0, 255.0) / 255.0
    return image, mask[..., 0]


def _prepare(image: Any, mask: Any) -> tuple[Any, Any]:
    """Validation elements: unit-scaled image, mask as is."""
    import tensorflow as tf

    return tf.cast(image, tf.float32) / 255.0, tf.cast(mask, tf.uint8)


def make_pipelines(
    train_ds: Any, val_ds: Any, info: DatasetInfo, params: dict[str, Any], seed: int
) -> tuple[Any, Any]:
    """Batched, augmented training and validation datasets.

    Nothing is cached here: :mod:`models.datasets` already caches what it streams from
    S3, and in-memory tensors need no cache; a second cache would double the memory.
    """
    import tensorflow as tf

    height, width, channels = info.input_shape
    batch_size = int(params["batch_size"])
    element_bytes = height * width * (channels + 1)
    shuffle = max(1, min(info.train_count or 1024, 4096, SHUFFLE_BYTES // element_bytes))
    train = (
        train_ds.shuffle(shuffle, seed=seed, reshuffle_each_iteration=True)
        .map(lambda i, m: _augment(i, m, params, seed), num_parallel_calls=tf.data.AUTOTUNE)
        .batch(batch_size, drop_remainder=info.train_count >= batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    val = val_ds.map(_prepare, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
    return train, val.prefetch(tf.data.AUTOTUNE)


def train_segmenter(
    train_ds: Any, val_ds: Any, info: DatasetInfo, options: TrainOptions
) -> TrainedModel:
    """Fit a U-Net on ``train_ds``; the history has loss, accuracy and miou (and val_*).

    The returned model is an uncompiled functional model sharing the trained layers,
    so ``keras.saving.load_model(path, safe_mode=True)`` never needs the custom loss.
    """
    import keras

    from bucketvision.models.segmentation.builders import build_unet

    params = hyperparameters(options, info.train_count)
    num_classes = len(info.labels)
    keras.utils.set_random_seed(options.seed)
    train, val = make_pipelines(train_ds, val_ds, info, params, options.seed)
    batch_size = int(params["batch_size"])
    epochs = int(params["epochs"])
    steps = options.steps_per_epoch or max(1, math.ceil(max(info.train_count, 1) / batch_size))
    if options.steps_per_epoch:
        train = train.repeat()
    val_steps = max(1, math.ceil(max(info.val_count, 1) / batch_size))
    if options.steps_per_epoch:
        val_steps = min(val_steps, options.steps_per_epoch)

    model = build_unet(
        tuple(info.input_shape),
        num_classes,
        base_filters=int(params["base_filters"]),
        depth=int(params["depth"]),
    )
    schedule = keras.optimizers.schedules.CosineDecay(
        float(params["learning_rate"]), decay_steps=max(1, steps * epochs), alpha=0.02
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=float(params["weight_decay"])),
        loss=segmentation_loss(num_classes, float(params["dice_weight"])),
        metrics=[
            keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
            keras.metrics.MeanIoU(num_classes, sparse_y_pred=False, name="miou"),
        ],
        jit_compile=False,
    )
    fitted = model.fit(
        train,
        validation_data=val if info.val_count else None,  # a tiny set may hold none out
        epochs=epochs,
        steps_per_epoch=steps if options.steps_per_epoch else None,
        validation_steps=val_steps if options.steps_per_epoch else None,
        callbacks=list(options.callbacks),
        shuffle=False,  # the pipeline shuffles; Keras cannot shuffle a tf.data.Dataset
        verbose=options.verbose,
    )
    history = {key: [float(v) for v in values] for key, values in fitted.history.items()}
    served = keras.Model(model.input, model.output, name=model.name)
    height, width, channels = info.input_shape
    card = {
        "input_shape": [int(height), int(width), int(channels)],
        "labels": list(info.labels),
        "preprocess": "unit",
        "resize": "letterbox",
        "architecture": "unet",
        "hyperparameters": {**params, "seed": options.seed},
    }
    return TrainedModel(model=served, history=history, card=card)
