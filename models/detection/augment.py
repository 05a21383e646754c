"""Training-time augmentation of detection scenes; boxes follow the pixels.

Why: a detector trained on a few hundred scenes memorises them (on 540 scenes the
training heatmap loss falls to a twentieth of the validation one within a few hundred
steps). Besides flips and colour jitter, :func:`random_zoom` shows every scene at a
random scale and place (:mod:`models.zoom`), so objects appear at sizes and positions
the dataset does not have. Everything runs in the ``tf.data`` map before the targets are encoded.
TensorFlow is imported inside the functions.
"""

from __future__ import annotations

from typing import Any

from bucketvision.models.zoom import random_view

MIN_VISIBLE = 0.5  # a box cut by the zoom is kept when at least this much of it is left
MIN_SIDE = 2.0  # pixels: narrower boxes left by the zoom are dropped


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


def random_zoom(image: Any, boxes: Any, classes: Any, jitter: float) -> tuple[Any, Any, Any]:
    """Zoom ``image`` in or out by a factor in ``[1 / (1 + jitter), 1 + jitter]``.

    The factor is log-uniform; the view moves to a random place (zoomed out, the image
    lands at a random place on black, the letterbox's fill). Boxes are scaled, moved and
    clipped to the image; a box with less than :data:`MIN_VISIBLE` of its area left, or
    thinner than :data:`MIN_SIDE` pixels, is dropped with its class.
    """
    import tensorflow as tf

    if jitter <= 0:
        return image, boxes, classes
    height = tf.cast(tf.shape(image)[0], tf.float32)
    width = tf.cast(tf.shape(image)[1], tf.float32)
    view, scale, top, left = random_view(jitter)
    zoomed = tf.image.crop_and_resize(
        image[tf.newaxis], view, [0], tf.shape(image)[:2], extrapolation_value=0.0
    )[0]
    moved = (boxes - tf.stack([left * width, top * height, left * width, top * height])) * scale
    clipped = tf.minimum(tf.maximum(moved, 0.0), tf.stack([width, height, width, height]))

    def area(b: Any) -> Any:
        return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])

    keep = (area(clipped) >= MIN_VISIBLE * area(moved)) & (
        tf.minimum(clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]) >= MIN_SIDE
    )
    return zoomed, tf.boolean_mask(clipped, keep), tf.boolean_mask(classes, keep)
