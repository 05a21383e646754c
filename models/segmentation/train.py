"""Training a U-Net segmenter on unbatched ``(image uint8 [S,S,3], mask uint8 [S,S])`` data.

The default recipe is a compact U-Net, AdamW, cross-entropy plus soft Dice (Dice keeps
the rare classes from drowning in the background), and label-preserving augmentation:
a random zoom (:mod:`models.zoom`) and flips of image and mask together, colour jitter;
see ``tests/perf/tune_segmentation.py`` (the project's scenes) and ``make bench-real``
(scenes of another style). Without ``--epochs`` it trains until the validation loss
stops improving, within a step and a time budget, and keeps the best weights; the
learning rate warms up, then is annealed over the budget (:mod:`models.stopping`). On
two CPU cores a step of 16 images at 128 x 128 takes about 0.3-0.8 s, so the step budget
(4,000) ends a run on a few hundred images in 20-55 minutes. TensorFlow and Keras are
imported inside functions.

``options.extra`` may override: ``base_filters``, ``depth``, ``convs_per_block``,
``dice_weight``, ``weight_decay``, ``scale_jitter`` (0: no zoom), ``augment`` ("none",
"flips" = left-right and up-down, "dihedral" = flips and 90-degree turns of square
images, for overhead or synthetic imagery), ``colour_jitter`` (bool), and the stopping
keys of :data:`models.stopping.STOP_KEYS` (``patience``, ``max_steps``, ``max_seconds``,
...).
"""

from __future__ import annotations

from typing import Any

from bucketvision.models.family import DatasetInfo, TrainedModel, TrainOptions
from bucketvision.models.stopping import STOP_KEYS, StopDefaults

DEFAULTS: dict[str, Any] = {
    "epochs": None,  # None: until the validation loss stops improving (models.stopping)
    "batch_size": 16,
    "learning_rate": 3e-3,
    "base_filters": 8,
    "depth": 4,
    "convs_per_block": 2,
    "dice_weight": 1.0,
    "weight_decay": 1e-4,
    "augment": "flips",
    "colour_jitter": True,
    "scale_jitter": 0.4,  # zoom by 1/1.4 to 1.4 at a random place (models.zoom)
}
# No plateau halving (lr_patience 0): the validation loss is noisy for the first few
# hundred steps (the classes are learnt after the background), and a halving there left
# one run at mIoU 0.37; the cosine over the budget anneals the rate instead. The budget
# is in steps, not seconds: a 540 s budget gave 338 steps on a loaded machine and mIoU
# 0.19 on scenes of another style. The classes emerge only after 500-700 steps at the
# peak rate, so the cosine needs a long horizon: annealed over 2,500 steps a run ended at
# a held-out mIoU of 0.85, where the rate held near its peak for 2,000 steps reached a
# validation mIoU of 0.96 (`make bench-real`, tests/perf/tune_real.py): the gap between
# validation and held-out figures is what the random zoom (scale_jitter) is for. A short
# warm-up keeps the first steps at the peak rate from upsetting the fresh batch norms.
# The hour is a backstop (4,000 steps take 20-55 minutes on two CPU cores).
STOPPING = StopDefaults(
    patience=8, lr_patience=0, max_steps=4000, max_seconds=3600.0, warmup_steps=100
)
AUGMENT_MODES = ("none", "flips", "dihedral")
SHUFFLE_BYTES = 256 << 20  # bound on the shuffle buffer, whatever the image size


def hyperparameters(options: TrainOptions) -> dict[str, Any]:
    """The effective recipe: DEFAULTS, then ``options.extra``, then the explicit options.

    The stopping keys of ``options.extra`` are read by :func:`models.stopping.plan_stopping`.
    """
    unknown = set(options.extra) - set(DEFAULTS) - set(STOP_KEYS)
    if unknown:
        raise ValueError(f"unknown segmentation options: {sorted(unknown)}")
    params = {**DEFAULTS, **options.extra, **options.overrides()}
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

    from bucketvision.models.zoom import zoom_image_and_mask

    image = tf.cast(image, tf.float32)
    image, mask = zoom_image_and_mask(image, tf.cast(mask, tf.uint8), float(params["scale_jitter"]))
    mask = mask[..., tf.newaxis]
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
    train_ds: Any, val_ds: Any, counts: tuple[int, int], params: dict[str, Any], seed: int
) -> tuple[Any, Any]:
    """An endless augmented training pipeline, and one pass of validation batches.

    ``counts`` are the (train, val) sizes, known to tf.data (:func:`models.feeding.sized`).
    Nothing is cached here: :mod:`models.datasets` already caches what it streams from
    S3, and in-memory tensors need no cache; a second cache would double the memory.
    """
    import tensorflow as tf

    height, width, channels = train_ds.element_spec[0].shape
    batch_size = int(params["batch_size"])
    element_bytes = int(height) * int(width) * (int(channels) + 1)
    shuffle = max(1, min(counts[0] or 1024, 4096, SHUFFLE_BYTES // element_bytes))
    train = (
        train_ds.shuffle(shuffle, seed=seed, reshuffle_each_iteration=True)
        .map(lambda i, m: _augment(i, m, params, seed), num_parallel_calls=tf.data.AUTOTUNE)
        .batch(batch_size, drop_remainder=counts[0] >= batch_size)
        .repeat()
        .prefetch(tf.data.AUTOTUNE)
    )
    if not counts[1]:
        return train, None
    val = val_ds.map(_prepare, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
    return train, val.prefetch(tf.data.AUTOTUNE)


def _compiled_unet(info: DatasetInfo, params: dict[str, Any]) -> Any:
    """The U-Net of ``params``, compiled with AdamW, the Dice loss, accuracy and mean IoU."""
    import keras

    from bucketvision.models.segmentation.builders import build_unet

    num_classes = len(info.labels)
    model = build_unet(
        tuple(info.input_shape),
        num_classes,
        base_filters=int(params["base_filters"]),
        depth=int(params["depth"]),
        convs_per_block=int(params["convs_per_block"]),
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(
            float(params["learning_rate"]), weight_decay=float(params["weight_decay"])
        ),
        loss=segmentation_loss(num_classes, float(params["dice_weight"])),
        metrics=[
            keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
            keras.metrics.MeanIoU(num_classes, sparse_y_pred=False, name="miou"),
        ],
        jit_compile=False,
    )
    return model


def train_segmenter(
    train_ds: Any, val_ds: Any, info: DatasetInfo, options: TrainOptions
) -> TrainedModel:
    """Fit a U-Net on ``train_ds``; the history has loss, accuracy and miou (and val_*).

    Without ``options.epochs`` it trains until the validation loss stops improving, within
    the budget of :data:`STOPPING` (:mod:`models.stopping`). The returned model is an
    uncompiled functional model sharing the trained layers, so
    ``keras.saving.load_model(path, safe_mode=True)`` never needs the custom loss.
    """
    import keras

    from bucketvision.models.feeding import sized
    from bucketvision.models.stopping import adaptive_stop, plan_stopping

    params = hyperparameters(options)
    keras.utils.set_random_seed(options.seed)
    train_ds, train_count = sized(train_ds)
    val_ds, val_count = sized(val_ds)
    if options.steps_per_epoch and val_count:  # a smoke run: a few validation batches
        val_count = min(val_count, options.steps_per_epoch * int(params["batch_size"]))
        val_ds = val_ds.take(val_count)
    if train_count < 1:
        raise ValueError("the training split is empty: nothing to train a segmenter on")
    train, val = make_pipelines(train_ds, val_ds, (train_count, val_count), params, options.seed)
    plan = plan_stopping(
        options,
        STOPPING,
        train_count=train_count,
        batch_size=int(params["batch_size"]),
        has_validation=val is not None,
    )
    model = _compiled_unet(info, params)
    stop = adaptive_stop(plan)
    fitted = model.fit(
        train,
        validation_data=val,
        epochs=plan.epochs,
        steps_per_epoch=plan.steps_per_epoch,
        callbacks=[stop, *options.callbacks],
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
        **stop.card_fields(),
    }
    return TrainedModel(model=served, history=history, card=card)
