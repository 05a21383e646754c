"""DCGAN generator and discriminator as pure Keras 3 functional builders.

Both networks scale with the image: the generator starts from a small square
(``H / 2**n`` with ``n`` stride-2 steps, e.g. 7x7 for 28x28, 4x4 for 32x32 and
64x64) and doubles it with transposed convolutions; the discriminator mirrors it
with strided convolutions. Only standard layers are used, so a saved generator
loads in Keras safe mode.

Class-conditional variants (``num_classes`` given):

- generator inputs ``[z (latent_dim,), label int32 (1,)]``: a learnt label
  embedding is concatenated to ``z`` before the first dense layer;
- discriminator inputs ``[image, label int32 (1,)]``: a projection discriminator
  (Miyato & Koyama, 2018) - the logit is ``dense(h) + <embed(label), h>`` over the
  flattened features ``h``, which conditions much more strongly than
  concatenating the label to the input.

The discriminator returns a raw logit (no sigmoid): the losses use
``sigmoid_cross_entropy_with_logits`` for numerical stability.
Only its first convolution has a bias (it lets D see the brightness offset of a
grey background; without it samples came out grey). On the deeper ones a bias
makes TensorFlow's grappler "remapper" fail on the Conv2D + BiasAdd + LeakyReLU
gradient and log an error at every trace (harmless but alarming in worker logs).
"""

from __future__ import annotations

from typing import Any


def upsampling_steps(image_shape: tuple[int, int, int], smallest: int = 7) -> int:
    """How many stride-2 steps take the image down to a square of at most ``smallest`` (>= 3)."""
    height, width = int(image_shape[0]), int(image_shape[1])
    steps, side = 0, min(height, width)
    while side % 2 == 0 and side > smallest and side // 2 >= 3:
        side //= 2
        steps += 1
    if steps == 0 or height % (2**steps) or width % (2**steps):
        raise ValueError(
            f"image shape {image_shape}: height and width must both be divisible by 2**n"
            " down to a small square (e.g. 28, 32, 64)"
        )
    return steps


def build_generator(
    latent_dim: int = 64,
    image_shape: tuple[int, int, int] = (28, 28, 1),
    num_classes: int | None = None,
    *,
    base_filters: int = 64,
    max_filters: int = 512,
    kernel_size: int = 4,
    embedding_dim: int = 16,
    name: str = "generator",
) -> Any:
    """Return the DCGAN generator: ``z`` (and a label) -> image in ``[-1, 1]`` (tanh).

    Filters halve at every upsampling step and end at ``base_filters`` before the
    last (tanh) layer; the first block has ``base_filters * 2**(n-1)``, capped at
    ``max_filters``.
    """
    import keras
    from keras import layers

    height, width, channels = (int(v) for v in image_shape)
    steps = upsampling_steps(image_shape)
    start_h, start_w = height // 2**steps, width // 2**steps
    filters = [min(max_filters, base_filters * 2 ** (steps - 1 - i)) for i in range(steps)]

    z = keras.Input(shape=(latent_dim,), name="z")
    inputs: list[Any] = [z]
    x = z
    if num_classes is not None:
        label = keras.Input(shape=(1,), dtype="int32", name="label")
        inputs.append(label)
        embedded = layers.Flatten(name="label_flat")(
            layers.Embedding(num_classes, embedding_dim, name="label_embedding")(label)
        )
        x = layers.Concatenate(name="z_label")([z, embedded])

    x = layers.Dense(start_h * start_w * filters[0], use_bias=False, name="project")(x)
    x = layers.BatchNormalization(name="project_bn")(x)
    x = layers.ReLU(name="project_relu")(x)
    x = layers.Reshape((start_h, start_w, filters[0]), name="project_reshape")(x)
    for i in range(1, steps):
        x = layers.Conv2DTranspose(
            filters[i], kernel_size, strides=2, padding="same", use_bias=False, name=f"up{i}"
        )(x)
        x = layers.BatchNormalization(name=f"up{i}_bn")(x)
        x = layers.ReLU(name=f"up{i}_relu")(x)
    outputs = layers.Conv2DTranspose(
        channels, kernel_size, strides=2, padding="same", activation="tanh", name="image"
    )(x)
    return keras.Model(inputs if len(inputs) > 1 else z, outputs, name=name)


def build_discriminator(
    image_shape: tuple[int, int, int] = (28, 28, 1),
    num_classes: int | None = None,
    *,
    base_filters: int = 64,
    max_filters: int = 512,
    kernel_size: int = 4,
    dropout: float = 0.0,
    name: str = "discriminator",
) -> Any:
    """Return the DCGAN discriminator: image in ``[-1, 1]`` (and a label) -> one logit.

    ``n`` strided convolutions (LeakyReLU 0.2, no batch norm: real and fake batches
    are fed separately, and batch statistics would leak which is which), filters
    doubling from ``base_filters``; optional dropout after each block.
    """
    import keras
    from keras import layers

    steps = upsampling_steps(image_shape)
    image = keras.Input(shape=tuple(int(v) for v in image_shape), name="image")
    inputs: list[Any] = [image]
    x = image
    for i in range(steps):
        x = layers.Conv2D(
            min(max_filters, base_filters * 2**i),
            kernel_size,
            strides=2,
            padding="same",
            activation="leaky_relu",  # negative slope 0.2
            use_bias=i == 0,  # see the module doc
            name=f"down{i + 1}",
        )(x)
        if dropout:
            x = layers.Dropout(dropout, name=f"down{i + 1}_dropout")(x)
    features = layers.Flatten(name="features")(x)
    logit = layers.Dense(1, name="logit")(features)
    if num_classes is not None:
        label = keras.Input(shape=(1,), dtype="int32", name="label")
        inputs.append(label)
        embedded = layers.Flatten(name="label_flat")(
            layers.Embedding(num_classes, int(features.shape[-1]), name="projection")(label)
        )
        projected = layers.Dot(axes=1, name="project")([embedded, features])
        logit = layers.Add(name="conditional_logit")([logit, projected])
    return keras.Model(inputs if len(inputs) > 1 else image, logit, name=name)
