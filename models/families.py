"""The four model families behind one small interface, imported lazily.

Each family lives in its own package (``models.classification``,
``models.detection``, ``models.segmentation``, ``models.generation``); this
module maps a task name to its train, evaluate and serve entry points without
importing TensorFlow until one is used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bucketvision.infra.errors import UserError
from bucketvision.models.family import DatasetInfo, TrainedModel, TrainOptions


@dataclass(frozen=True)
class FamilyEntry:
    """Where a family's functions live (``module:attribute``)."""

    task: str
    train: str
    evaluate: str
    main_metric: str
    served: str

    def _resolve(self, target: str) -> Any:
        module, _, attribute = target.partition(":")
        return getattr(importlib.import_module(module), attribute)

    def fit(self, train: Any, val: Any, info: DatasetInfo, options: TrainOptions) -> TrainedModel:
        trained: TrainedModel = self._resolve(self.train)(train, val, info, options)
        return trained

    def score(self, trained: TrainedModel, dataset: Any) -> dict[str, Any]:
        """Evaluation metrics of a freshly trained model on ``dataset``."""
        evaluate: Callable[..., dict[str, Any]] = self._resolve(self.evaluate)
        extras = {}
        if getattr(trained, "judge", None) is not None:  # a generator's judge classifier
            extras["judge"] = trained.judge
        return evaluate(trained.model, trained.card, dataset, **extras)

    def serve(self, model: Any, card: dict[str, Any], batch_size: int) -> Any:
        return self._resolve(self.served)(model, card, batch_size)


FAMILIES: dict[str, FamilyEntry] = {
    "classify": FamilyEntry(
        "classify",
        "bucketvision.models.classification.train:train_classifier",
        "bucketvision.models.classification.metrics:evaluate_classifier",
        "accuracy",
        "bucketvision.models.classification.serve:ServedClassifier",
    ),
    "detect": FamilyEntry(
        "detect",
        "bucketvision.models.detection.train:train_detector",
        "bucketvision.models.detection.metrics:evaluate_detector",
        "map50",
        "bucketvision.models.detection.serve:ServedDetector",
    ),
    "segment": FamilyEntry(
        "segment",
        "bucketvision.models.segmentation.train:train_segmenter",
        "bucketvision.models.segmentation.metrics:evaluate_segmenter",
        "miou",
        "bucketvision.models.segmentation.serve:ServedSegmenter",
    ),
    "generate": FamilyEntry(
        "generate",
        "bucketvision.models.generation.train:train_generator",
        "bucketvision.models.generation.metrics:evaluate_generator",
        "mean_confidence",
        "bucketvision.models.generation.serve:ServedGenerator",
    ),
}


def family(task: str) -> FamilyEntry:
    if task not in FAMILIES:
        raise UserError(f"task must be one of {', '.join(FAMILIES)}, not {task!r}")
    return FAMILIES[task]
