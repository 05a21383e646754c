"""What every model family (classify, detect, segment, generate) provides.

The training orchestrator (:mod:`models.training`) and the worker only talk to
a family through these types, so a family is free in how it builds, fits and
decodes its model. Nothing here imports TensorFlow.

Dataset elements (unbatched ``tf.data`` tuples, produced by :mod:`models.datasets`):

- classify: ``(image uint8 [H, W, C], label int32 [])``
- detect:   ``(image uint8 [S, S, 3], boxes float32 [N, 4], classes int32 [N])`` with boxes
  ``x_min, y_min, x_max, y_max`` in pixels of the (letterboxed) image and classes
  indexing ``DatasetInfo.labels``
- segment:  ``(image uint8 [S, S, 3], mask uint8 [S, S])``, mask values index
  ``DatasetInfo.labels`` (0 is the background class)
- generate: ``(image uint8 [H, W, C], label int32 [])``, label -1 when unlabelled
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class DatasetInfo:
    """What the loader learnt about a dataset."""

    task: str
    labels: list[str]  # class names; for segment labels[0] is the background
    input_shape: tuple[int, int, int]  # H, W, C of every image element
    train_count: int
    val_count: int
    uri: str = ""


@dataclass(frozen=True)
class TrainOptions:
    """Knobs a user may set; ``None`` means the family's tuned default."""

    epochs: int | None = None
    minibatch_size: int | None = None  # training examples per gradient step
    learning_rate: float | None = None
    seed: int = 0
    verbose: int = 2  # Keras fit verbosity: one line per epoch in worker logs
    callbacks: Sequence[Any] = ()  # extra keras.callbacks.Callback, passed to fit()
    steps_per_epoch: int | None = None  # cap for smoke tests; None = the whole split
    extra: dict[str, Any] = field(default_factory=dict)  # family-specific options

    def overrides(self) -> dict[str, Any]:
        """The generic knobs that are set, by their key in a card's ``hyperparameters``.

        Cards have always named the minibatch size ``batch_size``; the key is kept so that
        the cards of older versions read the same.
        """
        given = {
            "epochs": self.epochs,
            "batch_size": self.minibatch_size,
            "learning_rate": self.learning_rate,
        }
        return {key: value for key, value in given.items() if value is not None}


@dataclass
class TrainedModel:
    """A fitted model and what the registry stores beside it."""

    model: Any  # keras.Model: saved as model.keras and served by the family
    history: dict[str, list[float]]  # per-epoch values, e.g. loss, val_loss
    card: dict[str, Any]  # input_shape [H, W, C], labels, preprocess, serving params
    samples_png: bytes | None = None  # generate: a grid of samples

    def scoring_inputs(self) -> dict[str, Any]:
        """Keyword arguments of the family's ``score`` besides the model, card and dataset."""
        return {}


@dataclass(frozen=True)
class ItemFile:
    """A file written beside an item's JSON result (``<output>/<rel key><suffix>``)."""

    suffix: str  # ".mask.png", ".annotated.png"
    data: bytes
    field: str | None = None  # result field that receives the file's key
    content_type: str = "image/png"


@dataclass
class ItemResult:
    """One item's result (docs/schemas/result-<task>.schema.json) and its files."""

    result: dict[str, Any]
    files: list[ItemFile] = field(default_factory=list)


class Placement(Protocol):
    """How a served image was fitted into the model input (see models.imaging)."""

    original_width: int
    original_height: int


@runtime_checkable
class ServedModel(Protocol):
    """A loaded image model, as the worker pipeline uses it (classify, detect, segment).

    Everything the pipeline reads is spelled out here, so a family cannot leave a
    field out and get a silent default: the decoder's settings (``mode``, ``size``,
    ``resize``, ``preview_size``), the images per forward pass, and the calls.
    """

    task: str
    labels: list[str]  # class names, indexed by the model's outputs
    mode: str  # "L" or "RGB": what the decoder converts to
    size: tuple[int, int]  # (width, height) of the model input
    resize: str  # "stretch" or "letterbox"
    preview_size: int | None  # long side of the original's copy kept for results; None: none
    forward_batch: int  # images per compiled forward pass; a batch streams through in these

    def warm_up(self) -> None: ...

    def infer(self, pixels: np.ndarray) -> Sequence[Any]:
        """One raw output per image of ``pixels`` (N x H x W x C uint8)."""
        ...

    def result(self, output: Any, image: Any) -> ItemResult:
        """The item result for one raw output; ``image`` is the worker's DecodedImage."""
        ...


@runtime_checkable
class ServedGenerativeModel(Protocol):
    """A loaded generator, as the worker's generate batches use it: seeds in, images out.

    There is no input image, so nothing of the decoder's side of ``ServedModel`` applies.
    """

    task: str
    labels: list[str]  # class names of a conditional generator; empty otherwise
    forward_batch: int  # images per compiled forward pass

    def warm_up(self) -> None: ...

    def generate(
        self, seeds: Sequence[int], labels: Sequence[int | None] | None = None
    ) -> list[np.ndarray]:
        """One uint8 image (H x W x C) per seed; ``labels[i]`` picks the class."""
        ...

    def encode_png(self, image: np.ndarray) -> bytes:
        """A generated image as PNG bytes (what the worker uploads)."""
        ...
