"""Training the detector: input pipeline, augmentation, loss, ``fit`` and the card.

Why this recipe (measured on 128 px scenes, 2 CPU cores; see tests/perf/tune_detection.py
and ``make bench-real``): AdamW in minibatches of 16, trained as long as the validation
loss improves within a step and a time budget, keeping the best weights; the learning
rate warms up, is halved on plateaus and annealed over the budget (:mod:`models.stopping`).
On a few hundred scenes the network memorises them within a few hundred steps, so every
scene is shown at a random zoom and place (:func:`models.detection.augment.random_zoom`:
mAP@0.5 0.63 -> 0.95 on 540 scenes of another style), with horizontal flips (boxes
flipped with the image) and colour jitter. Targets are encoded after augmentation,
in the ``tf.data`` map, so the training step sees dense tensors only. The
serving threshold is the one with the best F1 on the validation split.

The model returned is a fresh, uncompiled copy of the trained network: plain
Keras layers only, so it saves and reloads in safe mode without the training loss.
"""

from __future__ import annotations

from typing import Any

from bucketvision.models.detection.augment import augment, random_zoom
from bucketvision.models.detection.losses import make_losses
from bucketvision.models.detection.targets import GAUSSIAN_ALPHA, encode_targets
from bucketvision.models.family import DatasetInfo, TrainedModel, TrainOptions
from bucketvision.models.stopping import STOP_KEYS, StopDefaults

STRIDE = 4
PREPROCESS = "unit"
CACHE_LIMIT_BYTES = 1_500_000_000  # cache decoded uint8 splits in memory below this

DEFAULTS: dict[str, Any] = {
    "epochs": None,  # None: until the validation loss stops improving (models.stopping)
    "batch_size": 16,  # more updates per image seen: better on a few hundred scenes
    "learning_rate": 2e-3,
    "weight_decay": 1e-4,
    "widths": (16, 32, 64, 128),
    "blocks": (0, 1, 1, 1),
    "neck_filters": 64,
    "head_filters": 32,
    "size_weight": 0.1,
    "offset_weight": 1.0,
    "giou_weight": 1.0,
    "gaussian_alpha": GAUSSIAN_ALPHA,
    "scale_jitter": 0.4,  # zoom by 1/1.4 to 1.4 at a random place (augment.random_zoom)
    "flip_horizontal": True,
    "flip_vertical": False,
    "colour_jitter": True,
}
# No plateau halving (lr_patience 0): the cosine over the budget anneals the rate, and a
# halving in the noisy first epochs only slows it down. The budget is in steps, so a run
# learns as much on a loaded machine as on a quiet one (600 scenes of another style
# reached mAP@0.5 0.96 in about 3,200 steps, `make bench-real`); the hour is a backstop,
# about 3,500 steps of 0.5 s on two CPU cores, seconds a step on a GPU.
STOPPING = StopDefaults(
    patience=8, lr_patience=0, max_steps=3500, max_seconds=3600.0, warmup_steps=60
)
BUILDER_KEYS = ("widths", "blocks", "neck_filters", "head_filters")
LOSS_KEYS = ("size_weight", "offset_weight", "giou_weight")


def hyperparameters(options: TrainOptions) -> dict[str, Any]:
    """DEFAULTS, overridden by ``options.extra`` and the generic options that are set."""
    known = set(DEFAULTS) | set(STOP_KEYS)
    unknown = set(options.extra) - known
    if unknown:
        raise ValueError(f"unknown detection options {sorted(unknown)}; known: {sorted(known)}")
    chosen = {**DEFAULTS, **options.extra, **options.overrides()}
    for key in ("widths", "blocks"):
        chosen[key] = tuple(int(v) for v in chosen[key])
    return chosen


def make_pipeline(
    dataset: Any,
    info: DatasetInfo,
    hp: dict[str, Any],
    *,
    training: bool,
    seed: int = 0,
    count: int,
) -> Any:
    """Batches of ``(scaled image, encoded target)``.

    Training batches are shuffled, augmented, of one size, and endless (``fit`` gets
    ``steps_per_epoch``); validation batches are one pass over a dataset whose size
    tf.data knows (:func:`models.feeding.sized`), so Keras never reads past its end.
    """
    import tensorflow as tf

    from bucketvision.models.pixels import scale_pixels

    height, width, channels = info.input_shape
    num_classes = len(info.labels)

    def prepare(image: Any, boxes: Any, classes: Any) -> tuple[Any, Any]:
        image = tf.ensure_shape(scale_pixels(image, PREPROCESS), [height, width, channels])
        boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])
        if training:
            image, boxes, classes = random_zoom(image, boxes, classes, float(hp["scale_jitter"]))
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
    batch_size = hp["batch_size"] if not training else min(hp["batch_size"], max(count, 1))
    return dataset.batch(batch_size, drop_remainder=training).prefetch(tf.data.AUTOTUNE)


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
    """Fit a CenterNet-style detector on unbatched ``(image, boxes, classes)`` datasets.

    Without ``options.epochs`` it trains until the validation loss stops improving,
    within the budget of :data:`STOPPING` (:mod:`models.stopping`).
    """
    import keras

    from bucketvision.models.detection.builders import build_detector
    from bucketvision.models.detection.metrics import best_score_threshold, predict
    from bucketvision.models.feeding import sized
    from bucketvision.models.stopping import adaptive_stop, plan_stopping

    hp = hyperparameters(options)
    train_ds, train_count = sized(train_ds)
    val_ds, val_count = sized(val_ds)
    if train_count < 1:
        raise ValueError("the training split is empty: nothing to train a detector on")
    keras.utils.set_random_seed(options.seed)
    num_classes = len(info.labels)
    input_shape = tuple(int(v) for v in info.input_shape)
    builder_options = {key: hp[key] for key in BUILDER_KEYS}
    model = build_detector(input_shape, num_classes, **builder_options)
    train = make_pipeline(train_ds, info, hp, training=True, seed=options.seed, count=train_count)
    if options.steps_per_epoch and val_count:  # a smoke run: a few validation batches
        val_count = min(val_count, options.steps_per_epoch * hp["batch_size"])
        val_ds = val_ds.take(val_count)
    validation = (
        make_pipeline(val_ds, info, hp, training=False, count=val_count) if val_count else None
    )
    plan = plan_stopping(
        options,
        STOPPING,
        train_count=train_count,
        batch_size=hp["batch_size"],
        has_validation=validation is not None,
    )
    loss, metrics = make_losses(num_classes, **{key: hp[key] for key in LOSS_KEYS})
    model.compile(
        optimizer=keras.optimizers.AdamW(
            learning_rate=hp["learning_rate"],
            weight_decay=hp["weight_decay"],
            global_clipnorm=10.0,
        ),
        loss=loss,
        metrics=metrics,
        jit_compile=False,
    )
    stop = adaptive_stop(plan)
    history = model.fit(
        train,
        epochs=plan.epochs,
        steps_per_epoch=plan.steps_per_epoch,
        shuffle=False,  # the pipeline shuffles
        validation_data=validation,
        callbacks=[stop, *options.callbacks],
        verbose=options.verbose,
    )
    served = build_detector(input_shape, num_classes, **builder_options)
    served.set_weights(model.get_weights())
    card = {**_card(input_shape, info.labels, hp), **stop.card_fields()}
    if validation is not None:
        detections, truths = predict(served, card, val_ds, forward_batch=hp["batch_size"])
        card["score_threshold"] = best_score_threshold(detections, truths, num_classes)
    return TrainedModel(
        model=served,
        history={k: [float(v) for v in values] for k, values in history.history.items()},
        card=card,
    )
