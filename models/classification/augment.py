"""Training-time augmentation, applied in the ``tf.data`` pipeline (not saved in the model).

Keeping augmentation out of the model keeps the saved graph a pure inference
graph. Digits get small shifts, rotations and zooms (a mirrored digit is
another symbol, so never flips); photos additionally get horizontal flips,
unless the caller says flips change the meaning (text, arrows, ...).
"""

from __future__ import annotations

from typing import Any

# Digits: about +-2 px shift, +-10 degrees, +-10 % zoom, as is usual for MNIST.
DIGIT_SHIFT = 0.08
DIGIT_ROTATION = 10.0 / 360.0
DIGIT_ZOOM = 0.1
# Photos: milder geometry plus horizontal flips.
PHOTO_SHIFT = 0.1
PHOTO_ROTATION = 0.0
PHOTO_ZOOM = 0.15


def make_augmenter(*, digits: bool, flip: bool, seed: int = 0) -> Any:
    """A ``keras.Sequential`` of random layers for float 0-255 batches (call with training=True).

    ``digits`` picks the digit recipe (never flipped, whatever ``flip`` says); otherwise
    the photo recipe, with a horizontal flip when ``flip``. Empty space is filled black.
    """
    import keras
    from keras import layers

    fill = {"fill_mode": "constant", "fill_value": 0.0}
    steps: list[Any] = []
    if digits:
        steps += [
            layers.RandomRotation(DIGIT_ROTATION, seed=seed, **fill),
            layers.RandomZoom(DIGIT_ZOOM, seed=seed + 1, **fill),
            layers.RandomTranslation(DIGIT_SHIFT, DIGIT_SHIFT, seed=seed + 2, **fill),
        ]
    else:
        if flip:
            steps.append(layers.RandomFlip("horizontal", seed=seed))
        if PHOTO_ROTATION:
            steps.append(layers.RandomRotation(PHOTO_ROTATION, seed=seed + 1, **fill))
        steps += [
            layers.RandomZoom(PHOTO_ZOOM, seed=seed + 2, fill_mode="reflect"),
            layers.RandomTranslation(PHOTO_SHIFT, PHOTO_SHIFT, seed=seed + 3, fill_mode="reflect"),
        ]
    return keras.Sequential(steps, name="augment")
