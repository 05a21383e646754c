"""Datasets the project did not generate, written to S3 in the dataset layouts.

- ``write_sklearn_digits``: scikit-learn's handwritten digits (``load_digits``: 1,797 real
  scans, 8x8, values 0..16, shipped with scikit-learn, nothing downloaded), scaled to
  0..255 and upsampled to 28x28 grey PNGs (bicubic), split 80/20 with a fixed seed,
  stratified by digit: ``train/<digit>/`` and ``test/<digit>/``.
- ``write_other_scenes``: scenes of :mod:`tests.perf.other_scenes` (a style
  ``models.scenes`` never draws) in the detect or segment layout: ``images/`` (+
  ``annotations.json`` or ``masks/`` + ``classes.json``) and a held-out ``test/`` split
  drawn from another seed.

Nothing here imports TensorFlow.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from bucketvision.infra.s3 import S3Store, parse_s3_uri
from bucketvision.models.dataset_writers import write_detection, write_digits, write_segmentation
from tests.perf.other_scenes import make_other_scenes

DIGITS_SPLIT_SEED = 20260
DIGITS_SIDE = 28
SCENES_TRAIN_SEED = 4242
SCENES_TEST_SEED = 97531  # the held-out scenes: a seed nothing was tuned on


def sklearn_digits(
    seed: int = DIGITS_SPLIT_SEED, test_fraction: float = 0.2
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train labels, test images, test labels): uint8 [N, 28, 28] and int."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    scans = np.asarray(digits.images, np.float64) * (255.0 / 16.0)
    images = np.stack(
        [
            np.asarray(
                Image.fromarray(scan.clip(0, 255).astype(np.uint8), "L").resize(
                    (DIGITS_SIDE, DIGITS_SIDE), Image.Resampling.BICUBIC
                )
            )
            for scan in scans
        ]
    )
    labels = np.asarray(digits.target, np.int64)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), bool)
    for digit in np.unique(labels):  # stratified: 20 % of every digit
        members = np.flatnonzero(labels == digit)
        chosen = rng.choice(members, size=round(len(members) * test_fraction), replace=False)
        test[chosen] = True
    return images[~test], labels[~test], images[test], labels[test]


def write_sklearn_digits(store: S3Store, uri_text: str) -> dict[str, int]:
    """The classify layout of :func:`sklearn_digits` under ``uri_text``; items per split."""
    uri = parse_s3_uri(uri_text)
    store.ensure_bucket(uri.bucket)
    train_images, train_labels, test_images, test_labels = sklearn_digits()
    return {
        "train": write_digits(store, uri, train_images, train_labels, "classify", "train"),
        "test": write_digits(store, uri, test_images, test_labels, "classify", "test"),
    }


def write_other_scenes(
    store: S3Store,
    uri_text: str,
    task: str,
    *,
    train_count: int = 600,
    test_count: int = 200,
) -> dict[str, int]:
    """Other-style scenes in the ``task`` ("detect" or "segment") layout; items per split."""
    uri = parse_s3_uri(uri_text)
    store.ensure_bucket(uri.bucket)
    writer = write_detection if task == "detect" else write_segmentation
    written = {}
    for split, count, seed in (
        ("train", train_count, SCENES_TRAIN_SEED),
        ("test", test_count, SCENES_TEST_SEED),
    ):
        written[split] = writer(store, uri, make_other_scenes(count, seed), split)
    return written
