"""The card's ``preprocess`` modes: how uint8 pixels become the model's input.

Shared by every family's training, evaluation and serving, so a model sees
the same scaling everywhere: ``raw`` (the model scales inside itself),
``unit`` = x/255, ``symmetric`` = x/127.5 - 1.
"""

from __future__ import annotations

from typing import Any

PREPROCESS_MODES = ("raw", "unit", "symmetric")


def check_preprocess(mode: str) -> str:
    """``mode`` if it is a known preprocess mode; ValueError otherwise."""
    if mode not in PREPROCESS_MODES:
        raise ValueError(f"unknown preprocess {mode!r}; expected one of {PREPROCESS_MODES}")
    return mode


def scale_pixels(pixels: Any, mode: str) -> Any:
    """uint8 pixels as float32 tensors in the model's range: raw, unit = x/255, symmetric."""
    import tensorflow as tf

    x = tf.cast(pixels, tf.float32)
    if check_preprocess(mode) == "unit":
        return x / 255.0
    if mode == "symmetric":
        return x / 127.5 - 1.0
    return x
