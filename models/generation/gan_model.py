"""The ``GAN`` keras.Model: generator and discriminator, ``train_step`` the min-max game.

Importing this module imports Keras and TensorFlow; the rest of the project reaches
the class through :func:`bucketvision.models.generation.gan.gan_class`, which imports
it on first use. The objective is described in :mod:`bucketvision.models.generation.gan`.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="bucketvision")
class GAN(keras.Model):  # type: ignore[misc]
    """Generator + discriminator trained with the BCE min-max game (see module doc)."""

    def __init__(
        self,
        generator: Any,
        discriminator: Any,
        latent_dim: int,
        *,
        conditional: bool = False,
        real_label: float = 0.9,
        ema_decay: float | None = None,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.generator = generator
        self.discriminator = discriminator
        self.latent_dim = int(latent_dim)
        self.conditional = bool(conditional)
        self.real_label = float(real_label)
        self.ema_decay = ema_decay
        self.seed = int(seed)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.ema_generator = None
        if ema_decay is not None:
            self.ema_generator = keras.models.clone_model(generator)
            for average, weight in zip(self.ema_generator.weights, generator.weights, strict=True):
                average.assign(weight)
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")
        self.d_real_tracker = keras.metrics.Mean(name="d_real")
        self.d_fake_tracker = keras.metrics.Mean(name="d_fake")

    def compile(self, d_optimizer: Any, g_optimizer: Any, **kwargs: Any) -> None:
        """Two optimizers, built here; never XLA (``jit_compile=False``, slow on CPU)."""
        kwargs["jit_compile"] = False
        super().compile(**kwargs)
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer
        d_optimizer.build(self.discriminator.trainable_variables)
        g_optimizer.build(self.generator.trainable_variables)

    @property
    def metrics(self) -> list[Any]:
        return [
            self.d_loss_tracker,
            self.g_loss_tracker,
            self.d_real_tracker,
            self.d_fake_tracker,
        ]

    @property
    def sampler(self) -> Any:
        """The generator to sample from: the EMA copy when kept, else the raw one."""
        return self.ema_generator if self.ema_generator is not None else self.generator

    def call(self, inputs: Any, training: bool = False) -> Any:
        return self.generator(inputs, training=training)

    def _noise(self, batch: Any) -> Any:
        return keras.random.normal((batch, self.latent_dim), seed=self.seed_generator)

    def _pair(self, x: Any, labels: Any) -> Any:
        return [x, labels] if self.conditional else x

    def train_step(self, data: Any) -> dict[str, Any]:
        images, labels = data
        labels = tf.reshape(tf.cast(labels, tf.int32), (-1, 1))
        batch = tf.shape(images)[0]
        bce = tf.nn.sigmoid_cross_entropy_with_logits

        # Discriminator: maximise log D(x) + log(1 - D(G(z))).
        fakes = self.generator(self._pair(self._noise(batch), labels), training=True)
        with tf.GradientTape() as tape:
            real_logits = self.discriminator(self._pair(images, labels), training=True)
            fake_logits = self.discriminator(self._pair(fakes, labels), training=True)
            d_loss = tf.reduce_mean(
                bce(tf.fill(tf.shape(real_logits), self.real_label), real_logits)
            ) + tf.reduce_mean(bce(tf.zeros_like(fake_logits), fake_logits))
        d_vars = self.discriminator.trainable_variables
        self.d_optimizer.apply_gradients(zip(tape.gradient(d_loss, d_vars), d_vars, strict=True))

        # Generator: non-saturating, minimise -log D(G(z)).
        with tf.GradientTape() as tape:
            fakes = self.generator(self._pair(self._noise(batch), labels), training=True)
            logits = self.discriminator(self._pair(fakes, labels), training=True)
            g_loss = tf.reduce_mean(bce(tf.ones_like(logits), logits))
        g_vars = self.generator.trainable_variables
        self.g_optimizer.apply_gradients(zip(tape.gradient(g_loss, g_vars), g_vars, strict=True))

        if self.ema_generator is not None:
            # Warm-up (1 + t) / (10 + t): early on the average follows the generator
            # closely instead of remembering its random initial weights.
            step = tf.cast(self.g_optimizer.iterations, tf.float32)
            decay = tf.minimum(float(self.ema_decay), (1.0 + step) / (10.0 + step))
            for average, weight in zip(
                self.ema_generator.weights, self.generator.weights, strict=True
            ):
                average.assign(decay * average + (1.0 - decay) * weight)

        self.d_loss_tracker.update_state(d_loss)
        self.g_loss_tracker.update_state(g_loss)
        self.d_real_tracker.update_state(tf.reduce_mean(tf.sigmoid(real_logits)))
        self.d_fake_tracker.update_state(tf.reduce_mean(tf.sigmoid(fake_logits)))
        return {metric.name: metric.result() for metric in self.metrics}

    def get_config(self) -> dict[str, Any]:
        return {
            "generator": keras.saving.serialize_keras_object(self.generator),
            "discriminator": keras.saving.serialize_keras_object(self.discriminator),
            "latent_dim": self.latent_dim,
            "conditional": self.conditional,
            "real_label": self.real_label,
            "ema_decay": self.ema_decay,
            "seed": self.seed,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Any:
        config = dict(config)
        for key in ("generator", "discriminator"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)
