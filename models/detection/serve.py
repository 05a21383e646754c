"""Serving a detector in the worker: a compiled forward pass and item results.

One ``tf.function`` traced once with a uint8 input signature open in its batch
dimension runs chunks of at most ``forward_batch`` images (pixels are scaled inside
it, by the card's ``preprocess``; :mod:`models.forward`) and never retraces; a
signature that takes one batch size gets its chunks zero-padded to it. The raw
stride-4 output of each image is decoded in NumPy
(:mod:`models.detection.decode`) with the card's serving parameters, boxes go
back to the original image through the decoded image's letterbox ``placement``,
and the annotated PNG is drawn on the original image: the decoder keeps a copy
of it (``preview``, long side at most ``preview_size``) because the model input
is letterboxed and small.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bucketvision.models.detection.annotate import draw_detections, png_bytes
from bucketvision.models.detection.decode import Detections, decode_output
from bucketvision.models.detection.tfod import check_tfod_output, decode_tfod
from bucketvision.models.family import ItemFile, ItemResult
from bucketvision.models.serving import ServedImageModel

DEFAULT_SCORE_THRESHOLD = 0.3
DEFAULT_NMS_IOU = 0.5
DEFAULT_MAX_DETECTIONS = 100
PREVIEW_SIZE = 640  # long side of the annotated PNG (the original's, when it is smaller)


class ServedDetector(ServedImageModel):
    """A loaded detection model with its card, ready for batches of uint8 pixels.

    ``infer`` gives the raw ``[H/stride, W/stride, C + 4]`` output of each image (the
    project's own ``native`` outputs), or a dict in the TF Object Detection API's layout
    (``outputs: tfod``).
    """

    task = "detect"
    default_resize = "letterbox"
    output_kinds = ("native", "tfod")
    preview_size = PREVIEW_SIZE

    def __init__(self, model: Any, card: dict[str, Any], forward_batch: int = 32) -> None:
        super().__init__(model, card, forward_batch)
        self.stride = int(card.get("stride", 4))
        self.score_threshold = float(card.get("score_threshold", DEFAULT_SCORE_THRESHOLD))
        self.nms_iou = float(card.get("nms_iou", DEFAULT_NMS_IOU))
        self.max_detections = int(card.get("max_detections", DEFAULT_MAX_DETECTIONS))

    def check_input(self, channels: int, labels: list[str]) -> None:
        """Only RGB: the detectors here are trained on colour scenes."""
        if channels != 3:
            raise ValueError(f"a detector takes RGB input, the card says {channels} channels")

    def check_output(self, output: Any) -> None:
        """The TFOD layout, or the native ``[h, w, classes + 4]`` one."""
        if self.outputs == "tfod":
            check_tfod_output(output)
            return
        shape = np.asarray(output).shape
        if len(shape) != 3 or shape[-1] != len(self.labels) + 4:
            raise ValueError(
                f"the model's output per image is {shape}; the native layout is [h, w,"
                f" classes + 4] = [h, w, {len(self.labels) + 4}] for {len(self.labels)} labels"
                " (for a TF Object Detection API export use --outputs tfod)"
            )

    def label(self, index: int) -> str:
        """The label of a 0-based class; an id beyond the labels keeps its number."""
        return self.labels[index] if 0 <= index < len(self.labels) else f"class_{index + 1}"

    def detect(self, output: Any, *, score_threshold: float | None = None) -> Detections:
        """Decode one raw output with the card's parameters (boxes in input pixels)."""
        if self.outputs == "tfod":
            return decode_tfod(
                output,
                self.size,
                score_threshold=self.score_threshold
                if score_threshold is None
                else score_threshold,
                max_detections=self.max_detections,
            )
        return decode_output(
            output,
            len(self.labels),
            stride=self.stride,
            score_threshold=self.score_threshold if score_threshold is None else score_threshold,
            nms_iou=self.nms_iou,
            max_detections=self.max_detections,
            top_k=max(self.max_detections, 100),
        )

    def result(self, output: np.ndarray, image: Any) -> ItemResult:
        """The item result: detections in original pixels and an annotated PNG."""
        found = self.detect(output)
        placement = image.placement
        boxes = np.round(placement.boxes_to_original(found.boxes).astype(np.float64), 1)
        names = [self.label(int(c)) for c in found.classes]
        scores = [round(float(s), 4) for s in found.scores]
        detections = [
            {"label": name, "score": score, "box": [float(v) for v in box]}
            for name, score, box in zip(names, scores, boxes, strict=True)
        ]
        canvas = image.preview
        if canvas is None:
            canvas = placement.crop_content(image.pixels)
        scale = np.array(
            [
                canvas.shape[1] / placement.original_width,
                canvas.shape[0] / placement.original_height,
            ]
            * 2
        )
        drawn = draw_detections(canvas, boxes * scale, names, scores, found.classes.tolist())
        return ItemResult(
            result={"detections": detections},
            files=[ItemFile(".annotated.png", png_bytes(drawn), field="annotated")],
        )
