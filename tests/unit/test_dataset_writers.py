"""models.dataset_writers: synthetic datasets that models.dataset_layouts reads back."""

from __future__ import annotations

import io
import posixpath
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bucketvision.infra.errors import UserError
from bucketvision.infra.s3 import S3Store, parse_s3_uri
from bucketvision.models.dataset_layouts import DatasetLayout, read_layout
from bucketvision.models.dataset_writers import SynthesisPlan, png_bytes, synthesize_dataset
from bucketvision.models.digits import make_digits
from bucketvision.models.scenes import SHAPE_CLASSES, make_scenes

BUCKET = "unit-bucket"
URI = f"s3://{BUCKET}/synthetic/set/"
PREFIX = "synthetic/set/"
DIGITS = [str(digit) for digit in range(10)]


@pytest.fixture
def store(shared_store: S3Store) -> S3Store:
    """conftest's module-wide moto S3, emptied for this test."""
    return shared_store


def read_back(store: S3Store, task: str, uri: str = URI) -> DatasetLayout:
    return read_layout(store, parse_s3_uri(uri), task)


def all_records(layout: DatasetLayout, *splits: str) -> list[Any]:
    return [record for split in splits for record in layout.splits.get(split, [])]


def index_of(key: str) -> int:
    """``.../train-000012.png`` -> 12."""
    return int(posixpath.splitext(posixpath.basename(key))[0].rsplit("-", 1)[1])


def decode(store: S3Store, key: str) -> Image.Image:
    image = Image.open(io.BytesIO(store.get_bytes(BUCKET, key)))
    image.load()
    return image


# --- png_bytes ---------------------------------------------------------------------------------


def test_png_bytes_round_trips_grey() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, size=(9, 13), dtype=np.uint8)
    image = Image.open(io.BytesIO(png_bytes(pixels)))
    assert image.format == "PNG"
    assert image.mode == "L"
    np.testing.assert_array_equal(np.asarray(image), pixels)


def test_png_bytes_round_trips_grey_with_a_channel_axis() -> None:
    pixels = np.random.default_rng(1).integers(0, 256, size=(7, 5, 1), dtype=np.uint8)
    image = Image.open(io.BytesIO(png_bytes(pixels)))
    assert image.mode == "L"
    np.testing.assert_array_equal(np.asarray(image), pixels[..., 0])


def test_png_bytes_round_trips_rgb() -> None:
    pixels = np.random.default_rng(2).integers(0, 256, size=(6, 11, 3), dtype=np.uint8)
    image = Image.open(io.BytesIO(png_bytes(pixels)))
    assert image.mode == "RGB"
    assert image.size == (11, 6)
    np.testing.assert_array_equal(np.asarray(image), pixels)


def test_png_bytes_of_a_non_contiguous_view() -> None:
    pixels = np.random.default_rng(3).integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    view = pixels[:, ::2]
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png_bytes(view)))), view)


# --- synthesize_dataset ------------------------------------------------------------------------


def test_classify_dataset_reads_back(store: S3Store) -> None:
    written = synthesize_dataset(store, URI, SynthesisPlan("classify", count=20))
    assert written == {"train": 20}
    layout = read_back(store, "classify")
    assert layout.labels == DIGITS
    assert len(all_records(layout, "train", "val")) == 20
    assert layout.splits["test"] == []
    _, labels = make_digits(20, 1)
    for record in all_records(layout, "train", "val"):
        assert record.image_key.startswith(PREFIX + "train/")
        # the folder is the label, and it is the digit that was drawn
        folder = record.image_key.split("/")[-2]
        assert layout.labels[record.label] == folder
        assert int(folder) == labels[index_of(record.image_key)]
    assert sorted(r.label for r in all_records(layout, "train", "val")) == sorted(labels)


def test_classify_images_are_the_digits(store: S3Store) -> None:
    synthesize_dataset(store, URI, SynthesisPlan("classify", count=12, seed=4))
    images, labels = make_digits(12, 4)
    key = f"{PREFIX}train/{labels[3]}/train-000003.png"
    image = decode(store, key)
    assert image.mode == "L" and image.size == (28, 28)
    np.testing.assert_array_equal(np.asarray(image), images[3].reshape(28, 28))


def test_classify_dataset_with_a_test_split(store: S3Store) -> None:
    written = synthesize_dataset(store, URI, SynthesisPlan("classify", count=20, test_count=10))
    assert written == {"train": 20, "test": 10}
    layout = read_back(store, "classify")
    assert layout.counts()["train"] + layout.counts()["val"] == 20
    assert layout.counts()["test"] == 10
    assert layout.evaluation_split == "test"
    assert all(r.image_key.startswith(PREFIX + "test/") for r in layout.splits["test"])
    _, test_labels = make_digits(10, 2026)
    assert sorted(r.label for r in layout.splits["test"]) == sorted(test_labels)


def test_generate_dataset_reads_back(store: S3Store) -> None:
    written = synthesize_dataset(
        store, URI, SynthesisPlan("generate", count=20, test_count=10, seed=3)
    )
    assert written == {"train": 20, "test": 10}
    layout = read_back(store, "generate")
    assert layout.task == "generate"
    assert layout.labels == DIGITS
    assert len(all_records(layout, "train", "val")) == 20
    assert len(layout.splits["test"]) == 10
    _, labels = make_digits(20, 3)
    for record in all_records(layout, "train", "val"):
        assert record.image_key.startswith(PREFIX + "images/")
        assert int(layout.labels[record.label]) == labels[index_of(record.image_key)]
    assert all(r.image_key.startswith(PREFIX + "test/images/") for r in layout.splits["test"])


def test_detect_dataset_reads_back(store: S3Store) -> None:
    plan = SynthesisPlan("detect", count=20, test_count=6, size=64)
    assert synthesize_dataset(store, URI, plan) == {"train": 20, "test": 6}
    layout = read_back(store, "detect")
    assert layout.labels == list(SHAPE_CLASSES)
    assert len(all_records(layout, "train", "val")) == 20
    assert len(layout.splits["test"]) == 6
    scenes = make_scenes(20, 1, width=64, height=64)
    for record in all_records(layout, "train", "val"):
        index = index_of(record.image_key)
        assert record.image_key == f"{PREFIX}images/train-{index:06d}.png"
        np.testing.assert_allclose(np.array(record.boxes).reshape(-1, 4), scenes.boxes[index])
        assert list(record.classes) == scenes.classes[index].tolist()
    test_scenes = make_scenes(6, 2026, width=64, height=64)
    for record in layout.splits["test"]:
        index = index_of(record.image_key)
        assert record.image_key == f"{PREFIX}test/images/test-{index:06d}.png"
        assert len(record.boxes) == len(test_scenes.boxes[index])
    # every image the annotations name was uploaded, and it is the scene
    first = layout.splits["test"][0]
    image = decode(store, first.image_key)
    assert image.mode == "RGB" and image.size == (64, 64)
    np.testing.assert_array_equal(np.asarray(image), test_scenes.images[index_of(first.image_key)])


def test_segment_dataset_reads_back(store: S3Store) -> None:
    plan = SynthesisPlan("segment", count=20, test_count=4, size=48)
    assert synthesize_dataset(store, URI, plan) == {"train": 20, "test": 4}
    layout = read_back(store, "segment")
    assert layout.labels == ["background", *SHAPE_CLASSES]
    assert len(all_records(layout, "train", "val")) == 20
    assert len(layout.splits["test"]) == 4
    scenes = make_scenes(20, 1, width=48, height=48)
    for record in all_records(layout, "train", "val")[:5]:
        index = index_of(record.image_key)
        assert record.mask_key == f"{PREFIX}masks/train-{index:06d}.png"
        mask = decode(store, record.mask_key)
        assert mask.mode == "L"
        np.testing.assert_array_equal(np.asarray(mask), scenes.masks[index])
    for record in layout.splits["test"]:
        assert record.mask_key is not None
        assert record.mask_key.startswith(PREFIX + "test/masks/")


def test_synthesize_creates_the_bucket(store: S3Store) -> None:
    uri = "s3://fresh-bucket/digits"
    assert not store.bucket_exists("fresh-bucket")
    assert synthesize_dataset(store, uri, SynthesisPlan("classify", count=10)) == {"train": 10}
    assert store.bucket_exists("fresh-bucket")
    assert read_back(store, "classify", uri).labels == DIGITS


def test_synthesize_is_deterministic(store: S3Store) -> None:
    synthesize_dataset(store, URI, SynthesisPlan("detect", count=5, size=48))
    first = store.get_bytes(BUCKET, PREFIX + "annotations.json")
    image = store.get_bytes(BUCKET, PREFIX + "images/train-000002.png")
    synthesize_dataset(store, URI, SynthesisPlan("detect", count=5, size=48))
    assert store.get_bytes(BUCKET, PREFIX + "annotations.json") == first
    assert store.get_bytes(BUCKET, PREFIX + "images/train-000002.png") == image


def test_synthesize_refuses_an_unknown_task(store: S3Store) -> None:
    with pytest.raises(UserError, match="--task must be one of"):
        synthesize_dataset(store, URI, SynthesisPlan("translate", count=5))
