"""A pure Keras 3 functional U-Net for per-pixel classification.

Why a U-Net: the encoder sees enough context (a 128 px receptive field at depth 4)
to tell a circle from a triangle, while the skip connections bring back the
full-resolution edges that mean IoU rewards. Everything is standard Keras layers
(no ``Lambda``), so the model saves and reloads in Keras safe mode. Keras is
imported inside the function, so importing this module needs no TensorFlow.
"""

from __future__ import annotations

from typing import Any


def _conv_block(x: Any, filters: int, convs: int, name: str) -> Any:
    """``convs`` x (3x3 conv without bias -> batch norm -> ReLU)."""
    from keras import layers

    for index in range(convs):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv{index}")(x)
        x = layers.BatchNormalization(name=f"{name}_bn{index}")(x)
        x = layers.ReLU(name=f"{name}_relu{index}")(x)
    return x


def build_unet(
    input_shape: tuple[int, int, int] = (128, 128, 3),
    num_classes: int = 4,
    *,
    base_filters: int = 16,
    depth: int = 4,
    max_filters: int = 256,
    convs_per_block: int = 2,
    dropout: float = 0.0,
    name: str = "unet",
) -> Any:
    """Return an uncompiled U-Net: input scaled floats [H, W, C] -> softmax [H, W, classes].

    ``depth`` poolings halve the resolution each time (an input whose H or W is not a
    multiple of ``2**depth`` is zero-padded at the bottom and right and the output
    cropped back); level ``i`` has ``min(base_filters * 2**i, max_filters)`` filters.
    The decoder upsamples bilinearly, concatenates the encoder's skip and convolves.
    The input is expected already scaled (the card's ``preprocess``, "unit" = x/255).
    """
    import keras
    from keras import layers

    height, width = input_shape[0], input_shape[1]
    step = 2**depth
    pad_height, pad_width = -height % step, -width % step
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    if pad_height or pad_width:  # pad to a multiple of 2**depth, crop back at the end
        x = layers.ZeroPadding2D(((0, pad_height), (0, pad_width)), name="pad")(x)
    skips = []
    for level in range(depth):
        filters = min(base_filters * 2**level, max_filters)
        x = _conv_block(x, filters, convs_per_block, f"down{level}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
    x = _conv_block(x, min(base_filters * 2**depth, max_filters), convs_per_block, "bottom")
    if dropout:
        x = layers.Dropout(dropout, name="bottom_dropout")(x)
    for level in reversed(range(depth)):
        filters = min(base_filters * 2**level, max_filters)
        x = layers.UpSampling2D(2, interpolation="bilinear", name=f"up{level}")(x)
        x = layers.Concatenate(name=f"skip{level}")([x, skips[level]])
        x = _conv_block(x, filters, convs_per_block, f"dec{level}")
    if pad_height or pad_width:
        x = layers.Cropping2D(((0, pad_height), (0, pad_width)), name="crop")(x)
    outputs = layers.Conv2D(
        num_classes, 1, activation="softmax", dtype="float32", name="probabilities"
    )(x)
    return keras.Model(inputs, outputs, name=name)
