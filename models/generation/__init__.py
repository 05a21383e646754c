"""The generation family: a (class-conditional) DCGAN trained with the min-max game.

Modules:

- :mod:`~models.generation.builders` - pure Keras builders for generator and discriminator
- :mod:`~models.generation.gan` - the ``keras.Model`` whose ``train_step`` plays the game
- :mod:`~models.generation.train` - ``train_generator`` for the family contract
- :mod:`~models.generation.metrics` - the judge classifier and ``evaluate_generator``
- :mod:`~models.generation.serve` - ``ServedGenerator`` for the worker
- :mod:`~models.generation.imaging` - pixel conversions and the PNG sample grid

Nothing in this package imports TensorFlow or Keras at import time: the producer
imports ``models.*`` without TensorFlow installed.
"""

from __future__ import annotations

from bucketvision.models.generation.metrics import MAIN_METRIC, evaluate_generator, train_judge
from bucketvision.models.generation.serve import ServedGenerator, encode_png
from bucketvision.models.generation.train import TrainedGenerator, train_generator

__all__ = [
    "MAIN_METRIC",
    "ServedGenerator",
    "TrainedGenerator",
    "encode_png",
    "evaluate_generator",
    "train_generator",
    "train_judge",
]
