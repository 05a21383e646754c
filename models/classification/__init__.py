"""The classification family: builders, training, evaluation and serving.

Importing this package never imports TensorFlow or Keras (the producer imports
``models.*`` without them); every module imports them inside its functions.
"""

from __future__ import annotations

from bucketvision.models.classification.metrics import MAIN_METRIC, evaluate_classifier
from bucketvision.models.classification.serve import ServedClassifier
from bucketvision.models.classification.train import train_classifier

TASK = "classify"

__all__ = ["MAIN_METRIC", "TASK", "ServedClassifier", "evaluate_classifier", "train_classifier"]
