"""A ``keras.applications`` backbone with a new classification head.

Each application expects its own input range ("tf": x/127.5-1, "caffe": BGR
minus the ImageNet means, "torch": ImageNet mean/std, or its own built-in
preprocessing layers on 0-255). That preprocessing is rebuilt here from standard
layers at the front of the model, so the model takes raw 0-255 pixels like
every other model of the family and the card records ``"raw"``; no ``Lambda``
layer is needed, so the model loads in Keras safe mode.

Weights default to ``None`` (random init): nothing is downloaded unless the
caller explicitly asks for ``weights="imagenet"`` (or passes a weights file).
"""

from __future__ import annotations

from typing import Any

_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN_RGB = (0.485, 0.456, 0.406)
_TORCH_STD_RGB = (0.229, 0.224, 0.225)
_MIN_SIZE = 32  # the smallest input keras.applications accept
_BUILT_IN = ("EfficientNet", "ConvNeXt", "MobileNetV3", "RegNet", "ResNetRS")
_CAFFE = ("ResNet50", "ResNet101", "ResNet152", "VGG16", "VGG19")


def backbone_preprocessing(backbone: str) -> str:
    """How ``backbone`` expects its input: "tf", "caffe", "torch" or "builtin" (0-255)."""
    if backbone.startswith(_BUILT_IN):
        return "builtin"
    if backbone in _CAFFE:
        return "caffe"
    if backbone.startswith("DenseNet"):
        return "torch"
    return "tf"  # MobileNet, MobileNetV2, ResNet*V2, Xception, Inception*, NASNet*


def _preprocessing_layers(x: Any, mode: str) -> Any:
    """Map raw 0-255 RGB ``x`` to what a backbone of preprocessing ``mode`` expects."""
    import numpy as np
    from keras import layers

    if mode == "tf":
        return layers.Rescaling(1.0 / 127.5, offset=-1.0, name="backbone_scale")(x)
    if mode == "torch":
        mean = [255.0 * m for m in _TORCH_MEAN_RGB]
        variance = [(255.0 * s) ** 2 for s in _TORCH_STD_RGB]
        return layers.Normalization(mean=mean, variance=variance, name="backbone_scale")(x)
    if mode == "caffe":
        # A frozen 1x1 convolution swaps RGB to BGR and subtracts the means.
        convert = layers.Conv2D(3, 1, trainable=False, name="backbone_scale")
        y = convert(x)
        kernel = np.eye(3, dtype="float32")[::-1].reshape(1, 1, 3, 3)
        convert.set_weights([kernel, -np.asarray(_CAFFE_MEAN_BGR, dtype="float32")])
        return y
    return x  # built-in preprocessing takes 0-255


def build_backbone_classifier(
    input_shape: tuple[int, int, int] = (96, 96, 3),
    num_classes: int = 10,
    *,
    backbone: str = "MobileNetV2",
    weights: str | None = None,
    trainable_backbone: bool | None = None,
    dropout: float = 0.2,
    name: str | None = None,
) -> Any:
    """``backbone`` from ``keras.applications`` without its top, then GAP, dropout, softmax.

    The model takes raw 0-255 pixels; grey inputs are repeated to three channels and
    inputs smaller than 32 pixels are resized up, as the applications require.
    ``weights`` is passed to the application (``None`` by default; ``"imagenet"`` only
    when the user asks for it, which downloads or reads the Keras cache).
    ``trainable_backbone`` defaults to True for random weights and False for pretrained
    ones; a frozen backbone runs in inference mode so its batch norms stay fixed.
    """
    import keras
    from keras import layers

    factory = getattr(keras.applications, backbone, None)
    if factory is None or not callable(factory) or not backbone[:1].isupper():
        raise ValueError(f"unknown keras.applications backbone {backbone!r}")
    if trainable_backbone is None:
        trainable_backbone = weights is None
    height, width, channels = input_shape
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    if channels == 1:
        x = layers.Concatenate(name="grey_to_rgb")([x, x, x])
    elif channels != 3:
        raise ValueError(f"backbones take 1 or 3 channels, not {channels}")
    size = (max(height, _MIN_SIZE), max(width, _MIN_SIZE))
    if size != (height, width):
        x = layers.Resizing(*size, name="upsize")(x)
    mode = backbone_preprocessing(backbone)
    x = _preprocessing_layers(x, mode)
    options: dict[str, Any] = {
        "input_shape": (*size, 3),
        "include_top": False,
        "weights": weights,
        "pooling": "avg",
    }
    if mode == "builtin" and not backbone.startswith("EfficientNetB"):
        options["include_preprocessing"] = True
    base = factory(**options)
    base.trainable = trainable_backbone
    x = base(x, training=None if trainable_backbone else False)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=name or f"{backbone.lower()}_classifier")
