"""The four model families behind one small interface, imported lazily.

Each family lives in its own package (``models.classification``,
``models.detection``, ``models.segmentation``, ``models.generation``); this
module maps a task name to its fit, score and serve functions without
importing TensorFlow until one is used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from bucketvision.infra.errors import UserError

Role = Literal["fit", "score", "serve"]


@dataclass(frozen=True)
class FamilyEntry:
    """A family's task, main metric and functions, each named ``"module:attribute"``.

    A function is imported only when :meth:`resolve` is asked for it, so choosing a
    family never imports TensorFlow. What each role is called with:

    - ``fit(train, val, info: DatasetInfo, options: TrainOptions) -> TrainedModel``
    - ``score(model, card, dataset, **trained.scoring_inputs()) -> dict`` of metrics
    - ``serve(model, card, forward_batch) -> ServedModel`` (a generator's: a
      ``ServedGenerativeModel``)
    """

    task: str
    main_metric: str
    fit: str
    score: str
    serve: str

    def resolve(self, role: Role) -> Callable[..., Any]:
        """The function behind ``role``, imported now."""
        target = {"fit": self.fit, "score": self.score, "serve": self.serve}[role]
        module, _, attribute = target.partition(":")
        function: Callable[..., Any] = getattr(importlib.import_module(module), attribute)
        return function


# Each entry: task, main metric, then the fit, score and serve functions.
FAMILIES: dict[str, FamilyEntry] = {
    "classify": FamilyEntry(
        "classify",
        "accuracy",
        "bucketvision.models.classification.train:train_classifier",
        "bucketvision.models.classification.metrics:evaluate_classifier",
        "bucketvision.models.classification.serve:ServedClassifier",
    ),
    "detect": FamilyEntry(
        "detect",
        "map50",
        "bucketvision.models.detection.train:train_detector",
        "bucketvision.models.detection.metrics:evaluate_detector",
        "bucketvision.models.detection.serve:ServedDetector",
    ),
    "segment": FamilyEntry(
        "segment",
        "miou",
        "bucketvision.models.segmentation.train:train_segmenter",
        "bucketvision.models.segmentation.metrics:evaluate_segmenter",
        "bucketvision.models.segmentation.serve:ServedSegmenter",
    ),
    "generate": FamilyEntry(
        "generate",
        "mean_confidence",
        "bucketvision.models.generation.train:train_generator",
        "bucketvision.models.generation.metrics:evaluate_generator",
        "bucketvision.models.generation.serve:ServedGenerator",
    ),
}


def family(task: str) -> FamilyEntry:
    """The entry of ``task``; a UserError names the known tasks."""
    if task not in FAMILIES:
        raise UserError(f"task must be one of {', '.join(FAMILIES)}, not {task!r}")
    return FAMILIES[task]
