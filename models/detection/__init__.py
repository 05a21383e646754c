"""The object detection family: a one-stage, anchor-free CenterNet-style detector.

- :mod:`.builders`: the pure Keras model (backbone, light FPN, heatmap/size/offset heads)
- :mod:`.targets`: ground truth boxes -> gaussian heatmaps and regression targets
- :mod:`.decode`: raw outputs -> boxes, scores, classes (peak NMS, top-K, box NMS)
- :mod:`.train`: ``train_detector`` (losses, augmentation, ``fit``)
- :mod:`.metrics`: ``evaluate_detector`` (COCO-style mAP, ``MAIN_METRIC = "map50"``)
- :mod:`.serve`: ``ServedDetector`` for the worker

Nothing here imports TensorFlow or Keras at module import time.
"""

from __future__ import annotations

MAIN_METRIC = "map50"
