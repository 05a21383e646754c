"""The semantic segmentation family: a U-Net that labels every pixel.

- :mod:`.builders` builds the Keras model (``build_unet``),
- :mod:`.train` fits it on ``(image uint8 [S,S,3], mask uint8 [S,S])`` data
  (``train_segmenter``),
- :mod:`.metrics` scores it with a whole-set confusion matrix
  (``evaluate_segmenter``, ``MAIN_METRIC`` = "miou"),
- :mod:`.serve` serves it in the worker (``ServedSegmenter``): a class-id mask PNG
  at the original image size and the fraction of pixels per class.

Importing the package (or any module of it) does not import TensorFlow or Keras.
"""

from bucketvision.models.segmentation.builders import build_unet
from bucketvision.models.segmentation.metrics import MAIN_METRIC, evaluate_segmenter
from bucketvision.models.segmentation.serve import ServedSegmenter
from bucketvision.models.segmentation.train import train_segmenter

__all__ = ["MAIN_METRIC", "ServedSegmenter", "build_unet", "evaluate_segmenter", "train_segmenter"]
