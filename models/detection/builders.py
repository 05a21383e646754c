"""A pure Keras 3 functional CenterNet-style detector (anchor-free, one stage).

Why CenterNet: an object is the peak of a per-class heatmap at stride 4 plus a
box size and a sub-cell centre offset read at that peak. There are no anchors
to tune and decoding is a 3x3 max-pool plus top-K, which is cheap on a CPU.

The backbone is a small conv net (conv-BN-ReLU stages, each halving the
resolution, with residual blocks) down to stride 16; a light FPN upsamples
back to stride 4, adding 1x1 lateral projections of the backbone stages, so the
stride-4 features see the context of a whole 50 px shape. Everything is a
standard Keras layer (no ``Lambda``), so the model saves and reloads in Keras
safe mode. Keras is imported inside the functions: importing this module needs
no TensorFlow.

The single output ``detections`` is ``[H/stride, W/stride, C + 4]``:
channels ``0..C-1`` the per-class heatmap (sigmoid probabilities), ``C, C+1``
the box width and height in stride units, ``C+2, C+3`` the x, y offset of the
centre inside its cell (0..1). :mod:`models.detection.decode` reads it.
"""

from __future__ import annotations

from typing import Any

HEATMAP_PRIOR_BIAS = -2.19  # sigmoid(-2.19) = 0.1: the focal-loss prior, stable early training


def _conv_bn(x: Any, filters: int, name: str, *, strides: int = 1, relu: bool = True) -> Any:
    """3x3 conv without bias -> batch norm -> optional ReLU."""
    from keras import layers

    x = layers.Conv2D(
        filters, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_conv"
    )(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _residual(x: Any, filters: int, name: str) -> Any:
    """Two 3x3 conv-BN with an identity shortcut (ResNet basic block)."""
    from keras import layers

    y = _conv_bn(x, filters, f"{name}a")
    y = _conv_bn(y, filters, f"{name}b", relu=False)
    return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([x, y]))


def _head(x: Any, filters: int, outputs: int, name: str, **conv_options: Any) -> Any:
    """3x3 conv + ReLU, then a 1x1 conv to ``outputs`` channels."""
    from keras import layers

    x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"{name}_conv")(x)
    return layers.Conv2D(outputs, 1, name=f"{name}_out", **conv_options)(x)


def build_detector(
    input_shape: tuple[int, int, int] = (128, 128, 3),
    num_classes: int = 3,
    *,
    widths: tuple[int, ...] = (16, 32, 64, 128),
    blocks: tuple[int, ...] = (0, 1, 1, 1),
    neck_filters: int = 64,
    head_filters: int = 32,
    name: str = "centernet",
) -> Any:
    """Return an uncompiled detector: scaled floats [H, W, C] -> ``detections`` (module doc).

    ``widths[i]`` is the channel count of backbone stage ``i``; every stage starts
    with a stride-2 conv, so the last stage is at stride ``2**len(widths)``, and
    has ``blocks[i]`` residual blocks. The FPN brings it back to stride 4 with
    ``neck_filters`` channels; each head has a ``head_filters`` 3x3 conv. The input
    is expected already scaled (the card's ``preprocess``, "unit" = x/255).
    """
    import keras
    from keras import layers

    if len(widths) != len(blocks) or len(widths) < 2:
        raise ValueError("widths and blocks need one entry per stage, at least two stages")
    deepest = 2 ** len(widths)
    if input_shape[0] % deepest or input_shape[1] % deepest:
        raise ValueError(f"input {input_shape[:2]} is not divisible by {deepest}")
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    features = []
    for stage, (filters, count) in enumerate(zip(widths, blocks, strict=True)):
        x = _conv_bn(x, filters, f"stage{stage}_down", strides=2)
        for index in range(count):
            x = _residual(x, filters, f"stage{stage}_block{index}")
        features.append(x)
    # FPN from the deepest stage up to stride 4 (stage 1).
    x = layers.Conv2D(neck_filters, 1, name="fpn_top")(features[-1])
    for stage in range(len(features) - 2, 0, -1):
        x = layers.UpSampling2D(2, interpolation="bilinear", name=f"fpn_up{stage}")(x)
        lateral = layers.Conv2D(neck_filters, 1, name=f"fpn_lateral{stage}")(features[stage])
        x = layers.Add(name=f"fpn_add{stage}")([x, lateral])
        x = _conv_bn(x, neck_filters, f"fpn_smooth{stage}")
    heatmap = _head(
        x,
        head_filters,
        num_classes,
        "heatmap",
        activation="sigmoid",
        bias_initializer=keras.initializers.Constant(HEATMAP_PRIOR_BIAS),
    )
    size = _head(x, head_filters, 2, "size")
    offset = _head(x, head_filters, 2, "offset")
    outputs = layers.Concatenate(name="detections", dtype="float32")([heatmap, size, offset])
    return keras.Model(inputs, outputs, name=name)
