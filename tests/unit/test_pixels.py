"""The card's preprocess modes agree with keras.applications' own preprocess_input."""

from __future__ import annotations

import numpy as np
import pytest

from bucketvision.models.pixels import check_preprocess, scale_pixels

keras = pytest.importorskip("keras")

PIXELS = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3)).astype(np.uint8)


@pytest.mark.parametrize(
    ("mode", "keras_mode"), [("symmetric", "tf"), ("imagenet", "torch"), ("caffe", "caffe")]
)
def test_each_mode_matches_keras_applications(mode: str, keras_mode: str) -> None:
    from keras.applications import imagenet_utils

    expected = imagenet_utils.preprocess_input(PIXELS.astype(np.float32), mode=keras_mode)
    assert np.allclose(np.asarray(scale_pixels(PIXELS, mode)), expected, atol=1e-4)


def test_unit_and_raw() -> None:
    assert np.allclose(np.asarray(scale_pixels(PIXELS, "unit")), PIXELS / 255.0)
    assert np.array_equal(np.asarray(scale_pixels(PIXELS, "raw")), PIXELS.astype(np.float32))


def test_imagenet_and_caffe_need_rgb() -> None:
    with pytest.raises(ValueError, match="defined for RGB"):
        check_preprocess("caffe", channels=1)
    assert check_preprocess("unit", channels=1) == "unit"
    with pytest.raises(ValueError, match="unknown preprocess"):
        check_preprocess("torch")
