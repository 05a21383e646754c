"""What the served image families (classify, detect, segment) share: set-up and forward pass.

Each of them reads the same card fields (``input_shape``, ``labels``,
``preprocess``, ``resize``, ``outputs``), decodes images to the same ``mode`` and ``size``, and runs
``model(scale(x))`` through one compiled forward pass
(:class:`~models.forward.CompiledForward`) that is traced once at warm-up.
Only what a family does with the raw outputs differs, so that is all a family
class writes: :meth:`ServedImageModel.result` and, when needed, ``infer``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from bucketvision.models.family import ItemResult
from bucketvision.models.forward import CompiledForward, declared_batch
from bucketvision.models.pixels import check_preprocess


class ServedImageModel:
    """The shared part of every served image family (implements ``models.family.ServedModel``).

    A subclass sets ``task``, ``resize``, ``preview_size`` and ``default_preprocess``,
    may refuse an input in :meth:`check_input`, and writes :meth:`result`.
    """

    task: ClassVar[str]
    default_resize: ClassVar[str]  # how the decoder fits an image when the card names no way
    default_preprocess: ClassVar[str] = "unit"  # when the card names none
    output_kinds: ClassVar[tuple[str, ...]]  # the card's ``outputs``; the first is the default
    preview_size: int | None = None  # no copy of the original is needed to make a result

    def __init__(self, model: Any, card: dict[str, Any], forward_batch: int) -> None:
        height, width, channels = (int(v) for v in card["input_shape"])
        labels = [str(label) for label in card["labels"]]
        self.check_input(channels, labels)
        self.model = model
        self.card = card
        self.labels: list[str] = labels
        self.preprocess = check_preprocess(
            str(card.get("preprocess", self.default_preprocess)), channels
        )
        self.resize = str(card.get("resize") or self.default_resize)
        kind = card.get("outputs")  # a trained detector's card holds its channel layout here
        self.outputs = kind if isinstance(kind, str) and kind else self.output_kinds[0]
        if self.outputs not in self.output_kinds:
            raise ValueError(f"outputs {self.outputs!r}: expected one of {self.output_kinds}")
        self.mode = "L" if channels == 1 else "RGB"
        self.size = (width, height)
        # A model that insists on a batch size (TF Object Detection API exports: 1) gets it.
        fixed = declared_batch(model)
        self._forward = CompiledForward(
            model, (height, width, channels), forward_batch, self.preprocess, fixed_batch=fixed
        )
        self.forward_batch = self._forward.forward_batch

    def check_output(self, output: Any) -> None:
        """Raise ValueError when one image's raw output does not fit the card (at registration)."""

    def check_input(self, channels: int, labels: list[str]) -> None:
        """Raise ValueError when the card describes a model this family cannot serve."""

    def warm_up(self) -> None:
        """Trace and run once so the first real batch does not pay for it."""
        self._forward.warm_up()

    def infer(self, pixels: np.ndarray) -> Any:
        """One raw output per image of ``pixels`` (N x H x W x C uint8), in order."""
        return self._forward(pixels)

    def result(self, output: Any, image: Any) -> ItemResult:
        """The item result for one raw output; ``image`` is the worker's DecodedImage."""
        raise NotImplementedError
