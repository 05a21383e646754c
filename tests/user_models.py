"""Models "a user brings", built by the tests: SavedModels of all four families.

Each is saved the way users' tools write them (``keras.Model.export`` or
``tf.saved_model.save`` of a ``tf.Module``), and each answer depends on the
image (or the latent vector), so a job that fed the model the wrong pixels
could not match a direct call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

CLASSIFIER_LABELS = ["red", "green", "blue", "bright", "dark"]
DETECTOR_LABELS = ["bright", "corner"]
SEGMENTER_LABELS = ["background", "red", "green"]
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def imagenet_scaled(pixels: np.ndarray) -> np.ndarray:
    """keras.applications' ``torch`` mode, written out independently of the service's."""
    return (pixels.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD


def classifier(seed: int = 0) -> Any:
    """A 96x96 RGB classifier (5 classes, softmax) with random but fixed weights."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((96, 96, 3), name="image")
    x = keras.layers.Conv2D(8, 5, strides=4, activation="relu")(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(len(CLASSIFIER_LABELS), activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs)


def segmenter(seed: int = 0) -> Any:
    """A 64x64 RGB segmenter whose output is per-pixel logits over SEGMENTER_LABELS."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((64, 64, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    outputs = keras.layers.Conv2D(len(SEGMENTER_LABELS), 3, padding="same")(x)
    return keras.Model(inputs, outputs)


def export_keras(model: Any, directory: Path) -> Path:
    """``model.export(directory)``: a SavedModel with a ``serving_default`` signature."""
    model.export(str(directory), verbose=False)
    return directory


def tfod_detector(directory: Path) -> Path:
    """A SavedModel with the TF Object Detection API's signature (uint8 [1, H, W, 3] in).

    It reports the bounding box of the bright pixels (class 1, score 0.9) and a box in
    the top-left corner whose score follows the image's mean (class 2); then two
    padding rows below ``num_detections``, as TFOD exports have.
    """
    import tensorflow as tf

    class Detector(tf.Module):
        @tf.function(
            input_signature=[tf.TensorSpec([1, None, None, 3], tf.uint8, name="input_tensor")]
        )
        def detect(self, images: Any) -> dict[str, Any]:
            grey = tf.reduce_mean(tf.cast(images[0], tf.float32), axis=-1)
            height = tf.cast(tf.shape(grey)[0], tf.float32)
            width = tf.cast(tf.shape(grey)[1], tf.float32)
            bright = tf.cast(grey > 128.0, tf.float32)
            rows = tf.where(tf.reduce_max(bright, axis=1) > 0)[:, 0]
            cols = tf.where(tf.reduce_max(bright, axis=0) > 0)[:, 0]
            found = tf.size(rows) > 0
            y0 = tf.cond(found, lambda: tf.cast(rows[0], tf.float32) / height, lambda: 0.0)
            y1 = tf.cond(found, lambda: tf.cast(rows[-1] + 1, tf.float32) / height, lambda: 1.0)
            x0 = tf.cond(found, lambda: tf.cast(cols[0], tf.float32) / width, lambda: 0.0)
            x1 = tf.cond(found, lambda: tf.cast(cols[-1] + 1, tf.float32) / width, lambda: 1.0)
            corner_score = 0.35 + 0.6 * tf.reduce_mean(grey) / 255.0
            boxes = tf.stack(
                [
                    [y0, x0, y1, x1],
                    [0.05, 0.1, 0.3, 0.45],
                    [0.0, 0.0, 1.0, 1.0],
                    [0.0, 0.0, 1.0, 1.0],
                ]
            )
            return {
                "detection_boxes": boxes[tf.newaxis],
                "detection_scores": tf.stack([0.9, corner_score, 0.99, 0.99])[tf.newaxis],
                "detection_classes": tf.constant([[1.0, 2.0, 1.0, 1.0]]),
                "num_detections": tf.constant([2.0]),
            }

    module = Detector()
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.detect})
    return directory


def generator(directory: Path, latent_dim: int = 16) -> Any:
    """A SavedModel generator: latent [N, latent_dim] in, 16x16 RGB in 0..1 out (sigmoid)."""
    import tensorflow as tf

    rng = np.random.default_rng(3)
    weights = tf.constant(rng.standard_normal((latent_dim, 16 * 16 * 3)).astype(np.float32))

    class Generator(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, latent_dim], tf.float32, name="z")])
        def sample(self, z: Any) -> dict[str, Any]:
            images = tf.sigmoid(tf.reshape(tf.matmul(z, weights), [-1, 16, 16, 3]))
            return {"image": images}

    module = Generator()
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.sample})
    return module


def conditional_generator(directory: Path, latent_dim: int = 8, classes: int = 3) -> Any:
    """A class-conditional SavedModel generator: (z, label) in, 8x8 grey in -1..1 out."""
    import tensorflow as tf

    rng = np.random.default_rng(5)
    weights = tf.constant(rng.standard_normal((latent_dim, 64)).astype(np.float32))
    offsets = tf.constant(np.linspace(-2.0, 2.0, classes, dtype=np.float32))

    class Generator(tf.Module):
        @tf.function(
            input_signature=[
                tf.TensorSpec([None, latent_dim], tf.float32, name="noise"),
                tf.TensorSpec([None], tf.int32, name="class_id"),
            ]
        )
        def sample(self, noise: Any, class_id: Any) -> dict[str, Any]:
            shift = tf.gather(offsets, class_id)[:, tf.newaxis]
            return {"images": tf.reshape(tf.tanh(tf.matmul(noise, weights) + shift), [-1, 8, 8, 1])}

    module = Generator()
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.sample})
    return module
