"""Training the detector: input pipeline, augmentation, loss, ``fit`` and the card.

Why this recipe (measured on 128 px scenes, 2 CPU cores; see tests/perf/tune_detection.py):
Adam with a one-epoch linear warm-up then cosine decay converges in a few minutes;
horizontal flips (boxes flipped with the image) and colour jitter keep the small
network from memorising the backgrounds. Targets are encoded after augmentation,
in the ``tf.data`` map, so the training step sees dense tensors only. The
serving threshold is the one with the best F1 on the validation split.

The model returned is a fresh, uncompiled copy of the trained network: plain
Keras layers only, so it saves and reloads in safe mode without the training loss.
"""

from __future__ import annotations

import math
from typing import Any

from bucketvision.models.detection.losses import make_losses
from bucketvision.models.detection.targets import GAUSSIAN_ALPHA, encode_targets
from bucketvision.models.family import DatasetInfo, TrainedModel, TrainOptions

STRIDE = 4
PREPROCESS = "unit"
CACHE_LIMIT_BYTES = 1_500_000_000  # cache decoded uint8 splits in memory below this

DEFAULTS: dict[str, Any] = {
    "epochs": 14,
    "batch_size": 32,
    "learning_rate": 2e-3,
    "warmup_epochs": 1.0,
    "weight_decay": 1e-4,
    "widths": (16, 32, 64, 128),
    "blocks": (0, 1, 1, 1),
    "neck_filters": 64,
    "head_filters": 32,
    "size_weight": 0.1,
    "offset_weight": 1.0,
    "giou_weight": 1.0,
    "gaussian_alpha": GAUSSIAN_ALPHA,
    "flip_horizontal": True,
    "flip_vertical": False,
    "colour_jitter": True,
}
BUILDER_KEYS = ("widths", "blocks", "neck_filters", "head_filters")
LOSS_KEYS = ("size_weight", "offset_weight", "giou_weight")


def hyperparameters(options: TrainOptions) -> dict[str, Any]:
    """DEFAULTS, overridden by ``options.extra`` and the generic options that are set."""
    unknown = set(options.extra) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown detection options {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    chosen = {**DEFAULTS, **options.extra, **options.overrides()}
    for key in ("widths", "blocks"):
        chosen[key] = tuple(int(v) for v in chosen[key])
    return chosen


def augment(image: Any, boxes: Any, hp: dict[str, Any]) -> tuple[Any, Any]:
    """Random flips (boxes follow) and colour jitter of a unit-scaled ``[S, S, 3]`` image."""
    import tensorflow as tf

    height = tf.cast(tf.shape(image)[0], tf.float32)
    width = tf.cast(tf.shape(image)[1], tf.float32)
    if hp["flip_horizontal"]:
        image, boxes = tf.cond(
            tf.random.uniform([]) < 0.5,
            lambda: (
                image[:, ::-1, :],
                tf.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1),
            ),
            lambda: (image, boxes),
        )
    if hp["flip_vertical"]:
        image, boxes = tf.cond(
            tf.random.uniform([]) < 0.5,
            lambda: (
                image[::-1, :, :],
                tf.stack([boxes[:, 0], height - boxes[:, 3], boxes[:, 2], height - boxes[:, 1]], 1),
            ),
            lambda: (image, boxes),
        )
    if hp["colour_jitter"]:
        image = tf.image.random_brightness(image, 0.1)
        image = tf.image.random_contrast(image, 0.8, 1.2)
        image = tf.image.random_saturation(image, 0.8, 1.2)
        image = tf.image.random_hue(image, 0.03)
        image = tf.clip_by_value(image, 0.0, 1.0)
    return image, boxes


def make_pipeline(
    dataset: Any,
    info: DatasetInfo,
    hp: dict[str, Any],
    *,
    training: bool,
    seed: int = 0,
    count: int,
) -> Any:
    """Batches of ``(scaled image, encoded target)``; training ones shuffled, augmented, endless."""
    import tensorflow as tf

    from bucketvision.models.pixels import scale_pixels

    height, width, channels = info.input_shape
    num_classes = len(info.labels)

    def prepare(image: Any, boxes: Any, classes: Any) -> tuple[Any, Any]:
        image = tf.ensure_shape(scale_pixels(image, PREPROCESS), [height, width, channels])
        boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])
        if training:
            image, boxes = augment(image, boxes, hp)
        target = encode_targets(
            boxes,
            classes,
            image_size=(height, width),
            num_classes=num_classes,
            stride=STRIDE,
            alpha=hp["gaussian_alpha"],
        )
        return image, target

    if count * height * width * channels < CACHE_LIMIT_BYTES:
        dataset = dataset.cache()
    if training:
        dataset = dataset.shuffle(min(max(count, 1), 4096), seed=seed).repeat()
    dataset = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(hp["batch_size"], drop_remainder=training).prefetch(tf.data.AUTOTUNE)


def learning_rate_schedule(hp: dict[str, Any], steps_per_epoch: int) -> Any:
    """Linear warm-up to ``learning_rate`` over ``warmup_epochs``, then cosine decay to 1%."""
    import keras

    total = max(1, hp["epochs"] * steps_per_epoch)
    warmup = min(int(hp["warmup_epochs"] * steps_per_epoch), total - 1)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=hp["learning_rate"] * 0.01 if warmup else hp["learning_rate"],
        decay_steps=total - warmup,
        alpha=0.01,
        warmup_target=hp["learning_rate"] if warmup else None,
        warmup_steps=warmup,
    )


def _card(input_shape: tuple[int, ...], labels: list[str], hp: dict[str, Any]) -> dict[str, Any]:
    """The served detector's card: its input, classes, decoding and output layout."""
    num_classes = len(labels)
    return {
        "task": "detect",
        "input_shape": list(input_shape),
        "labels": list(labels),
        "preprocess": PREPROCESS,
        "resize": "letterbox",
        "stride": STRIDE,
        "score_threshold": 0.3,
        "nms_iou": 0.5,
        "max_detections": 100,
        "architecture": "centernet: residual conv backbone to stride 16, FPN to stride 4, "
        "heads heatmap (sigmoid per class) + size + offset",
        "outputs": {
            "heatmap": [0, num_classes],
            "size": [num_classes, num_classes + 2],
            "offset": [num_classes + 2, num_classes + 4],
        },
        "hyperparameters": {k: list(v) if isinstance(v, tuple) else v for k, v in hp.items()},
    }


def train_detector(
    train_ds: Any, val_ds: Any, info: DatasetInfo, options: TrainOptions
) -> TrainedModel:
    """Fit a CenterNet-style detector on unbatched ``(image, boxes, classes)`` datasets."""
    import keras

    from bucketvision.models.detection.builders import build_detector
    from bucketvision.models.detection.metrics import best_score_threshold, predict

    hp = hyperparameters(options)
    if info.train_count < 1:
        raise ValueError("the training split is empty: nothing to train a detector on")
    keras.utils.set_random_seed(options.seed)
    num_classes = len(info.labels)
    input_shape = tuple(int(v) for v in info.input_shape)
    builder_options = {key: hp[key] for key in BUILDER_KEYS}
    model = build_detector(input_shape, num_classes, **builder_options)
    steps = options.steps_per_epoch or max(1, math.ceil(info.train_count / hp["batch_size"]))
    train = make_pipeline(
        train_ds, info, hp, training=True, seed=options.seed, count=info.train_count
    )
    val_count = info.val_count
    if options.steps_per_epoch and val_ds is not None:
        val_count = min(val_count, options.steps_per_epoch * hp["batch_size"])
        val_ds = val_ds.take(val_count)
    validation = (
        make_pipeline(val_ds, info, hp, training=False, count=val_count)
        if val_ds is not None and val_count > 0
        else None
    )
    loss, metrics = make_losses(num_classes, **{key: hp[key] for key in LOSS_KEYS})
    model.compile(
        optimizer=keras.optimizers.AdamW(
            learning_rate=learning_rate_schedule(hp, steps),
            weight_decay=hp["weight_decay"],
            global_clipnorm=10.0,
        ),
        loss=loss,
        metrics=metrics,
        jit_compile=False,
    )
    val_steps = math.ceil(val_count / hp["batch_size"]) if validation is not None else None
    history = model.fit(
        train,
        epochs=hp["epochs"],
        steps_per_epoch=steps,
        shuffle=False,  # the pipeline shuffles
        validation_data=validation,
        validation_steps=val_steps,
        callbacks=list(options.callbacks),
        verbose=options.verbose,
    )
    served = build_detector(input_shape, num_classes, **builder_options)
    served.set_weights(model.get_weights())
    card = _card(input_shape, info.labels, hp)
    if validation is not None:
        detections, truths = predict(served, card, val_ds, forward_batch=hp["batch_size"])
        card["score_threshold"] = best_score_threshold(detections, truths, num_classes)
    return TrainedModel(
        model=served,
        history={k: [float(v) for v in values] for k, values in history.history.items()},
        card=card,
    )
