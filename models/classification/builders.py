"""Pure Keras 3 builders for the classification family.

Every builder returns an uncompiled functional ``keras.Model`` whose input is
the image as float32 in the raw 0-255 range (the worker's ``"raw"``
preprocess): the scaling is a layer inside the model, so a saved model carries
its own preprocessing and the card cannot disagree with it. Only standard Keras
layers are used (no ``Lambda``), so the models load in Keras safe mode.

- :func:`build_mnist_cnn` with ``rescale=True``: the seed MNIST CNN (:mod:`models.cnn`)
  behind a ``Rescaling(1/255)``; with augmentation it reaches the digit target, so no
  bigger digit model is needed.
- :func:`build_compact_classifier`: a small residual depthwise-separable network
  for larger RGB (or grey) images, trained from scratch.
- :func:`build_backbone_classifier` (in :mod:`models.classification.backbones`):
  a ``keras.applications`` backbone with a new head.

TensorFlow/Keras are imported inside the functions, never at module import.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bucketvision.models.classification.backbones import build_backbone_classifier
from bucketvision.models.cnn import build_mnist_cnn

# Faster-moving batch-norm statistics than Keras' 0.99: with the few hundred steps of a
# small dataset, 0.99 leaves the inference statistics lagging and validation erratic.
BN_MOMENTUM = 0.9

__all__ = [
    "build_backbone_classifier",
    "build_compact_classifier",
    "build_mnist_cnn",
]


def _conv_bn(x: Any, filters: int, kernel: int, strides: int, name: str) -> Any:
    """Convolution, batch norm, ReLU: the stem of the compact network."""
    from keras import layers

    x = layers.Conv2D(
        filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv"
    )(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _separable_block(x: Any, filters: int, strides: int, name: str) -> Any:
    """Depthwise 3x3 + pointwise 1x1 (each batch-normalised) with a residual shortcut.

    The shortcut is the identity when the shape is kept, otherwise a strided 1x1
    projection, so every block trains like a residual block.
    """
    from keras import layers

    shortcut = x
    y = layers.DepthwiseConv2D(
        3, strides=strides, padding="same", use_bias=False, name=f"{name}_dw"
    )(x)
    y = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_dw_bn")(y)
    y = layers.ReLU(name=f"{name}_dw_relu")(y)
    y = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_pw")(y)
    y = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_pw_bn")(y)
    if strides != 1 or int(shortcut.shape[-1]) != filters:
        shortcut = layers.Conv2D(filters, 1, strides=strides, use_bias=False, name=f"{name}_proj")(
            shortcut
        )
        shortcut = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_proj_bn")(shortcut)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_out")(y)


def build_compact_classifier(
    input_shape: tuple[int, int, int] = (96, 96, 3),
    num_classes: int = 10,
    *,
    width: int = 32,
    blocks: Sequence[int] = (1, 2, 2, 2),
    dropout: float = 0.2,
    name: str = "compact_classifier",
) -> Any:
    """A compact classifier for images larger than digits (RGB or grey).

    ``Rescaling`` to [-1, 1], a strided 3x3 stem of ``width`` filters, then one stage
    per entry of ``blocks`` (stage ``i`` has ``width * 2**i`` filters and halves the
    resolution, except the first), global average pooling, dropout and a softmax.
    With the defaults on 96x96x3 it has about 0.3 M parameters.
    """
    import keras
    from keras import layers

    if width < 1 or not blocks or any(count < 1 for count in blocks):
        raise ValueError(f"width must be >= 1 and blocks positive counts, got {width}, {blocks}")
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="symmetric_scale")(inputs)
    x = _conv_bn(x, width, 3, 2 if min(input_shape[:2]) >= 48 else 1, "stem")
    for stage, count in enumerate(blocks):
        filters = width * 2**stage
        for index in range(count):
            strides = 2 if stage > 0 and index == 0 else 1
            x = _separable_block(x, filters, strides, f"stage{stage + 1}_block{index + 1}")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=name)
