"""Reading the TF Object Detection API's serving outputs as :class:`Detections`.

A TFOD export answers, per image, ``detection_boxes`` [N, 4] as normalised
``ymin, xmin, ymax, xmax``, ``detection_scores`` [N], ``detection_classes`` [N]
as 1-based class ids (floats) and ``num_detections`` (how many rows are real).
Boxes come back here in the model input's pixels, classes 0-based, so the
served detector maps them to the original image like its own model's boxes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bucketvision.models.detection.decode import Detections

REQUIRED = ("detection_boxes", "detection_scores", "detection_classes")


def check_tfod_output(output: Any) -> None:
    """Raise ValueError when one image's answer is not in the TFOD layout."""
    if not isinstance(output, dict) or any(name not in output for name in REQUIRED):
        raise ValueError(f"--outputs tfod needs the outputs {', '.join(REQUIRED)}")
    boxes = np.asarray(output["detection_boxes"])
    count = boxes.shape[0] if boxes.ndim == 2 else -1
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"detection_boxes of one image has shape {boxes.shape}; expected [N, 4]")
    for name in REQUIRED[1:]:
        shape = np.asarray(output[name]).shape
        if shape != (count,):
            raise ValueError(f"{name} of one image has shape {shape}; expected [{count}]")


def decode_tfod(
    output: dict[str, Any],
    input_size: tuple[int, int],
    *,
    score_threshold: float,
    max_detections: int,
) -> Detections:
    """One image's TFOD answer as detections in input pixels; ``input_size`` = (width, height)."""
    boxes = np.asarray(output["detection_boxes"], dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(output["detection_scores"], dtype=np.float32).reshape(-1)
    classes = np.rint(np.asarray(output["detection_classes"], dtype=np.float64)).reshape(-1)
    if "num_detections" in output:
        count = int(np.asarray(output["num_detections"]).reshape(-1)[0])
        boxes, scores, classes = boxes[:count], scores[:count], classes[:count]
    keep = np.flatnonzero(scores >= score_threshold)
    keep = keep[np.argsort(-scores[keep], kind="stable")][:max_detections]
    width, height = input_size
    y_min, x_min, y_max, x_max = (np.clip(boxes[keep, i], 0.0, 1.0) for i in range(4))
    pixels = np.stack([x_min * width, y_min * height, x_max * width, y_max * height], axis=1)
    return Detections(pixels.astype(np.float32), scores[keep], (classes[keep] - 1).astype(np.int32))
