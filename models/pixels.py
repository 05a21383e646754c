"""The card's ``preprocess`` modes: how uint8 pixels become the model's input.

Shared by every family's training, evaluation and serving, so a model sees
the same scaling everywhere. The modes are keras.applications' own:

- ``raw``: the pixels as float32 0..255 (the model scales inside itself, or takes uint8);
- ``unit``: x / 255;
- ``symmetric``: x / 127.5 - 1 (``tf`` mode: MobileNet, Inception, EfficientNetV2 ...);
- ``imagenet``: x / 255, then the ImageNet mean and standard deviation per channel
  (``torch`` mode: DenseNet, models ported from PyTorch);
- ``caffe``: RGB to BGR, then the ImageNet mean subtracted (ResNet50, VGG16).

The last two are defined for RGB input only.
"""

from __future__ import annotations

from typing import Any

PREPROCESS_MODES = ("raw", "unit", "symmetric", "imagenet", "caffe")
RGB_ONLY_MODES = ("imagenet", "caffe")
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB, of x / 255
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def check_preprocess(mode: str, channels: int | None = None) -> str:
    """``mode`` if it is a known preprocess mode (for ``channels``); ValueError otherwise."""
    if mode not in PREPROCESS_MODES:
        raise ValueError(f"unknown preprocess {mode!r}; expected one of {PREPROCESS_MODES}")
    if channels is not None and channels != 3 and mode in RGB_ONLY_MODES:
        raise ValueError(f"preprocess {mode!r} is defined for RGB input, not {channels} channel(s)")
    return mode


def scale_pixels(pixels: Any, mode: str) -> Any:
    """uint8 pixels (N x H x W x C) as float32 tensors in the model's range (see above)."""
    import tensorflow as tf

    x = tf.cast(pixels, tf.float32)
    if check_preprocess(mode) == "unit":
        return x / 255.0
    if mode == "symmetric":
        return x / 127.5 - 1.0
    if mode == "imagenet":
        return (x / 255.0 - tf.constant(IMAGENET_MEAN)) / tf.constant(IMAGENET_STD)
    if mode == "caffe":
        return tf.reverse(x, axis=[-1]) - tf.constant(CAFFE_MEAN_BGR)
    return x
