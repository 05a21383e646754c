"""models.dataset_layouts over in-process moto: every task's layout, splits and errors."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bucketvision.infra.s3 import S3Store, parse_s3_uri
from bucketvision.models.dataset_layouts import (
    DatasetError,
    DatasetLayout,
    Record,
    held_out,
    read_layout,
)

BUCKET = "unit-bucket"
ROOT = f"s3://{BUCKET}/data/set/"
PREFIX = "data/set/"


@pytest.fixture
def store(shared_store: S3Store) -> S3Store:
    """conftest's module-wide moto S3, emptied for this test."""
    return shared_store


def put(store: S3Store, *keys: str, body: bytes = b"x") -> None:
    for key in keys:
        store.put_bytes(BUCKET, PREFIX + key, body)


def put_json(store: S3Store, key: str, document: Any) -> None:
    store.put_json(BUCKET, PREFIX + key, document)


def read(store: S3Store, task: str, uri: str = ROOT) -> DatasetLayout:
    return read_layout(store, parse_s3_uri(uri), task)


def keys_of(records: list[Record]) -> list[str]:
    return [record.image_key for record in records]


def labels_by_key(layout: DatasetLayout, split: str) -> dict[str, str]:
    return {
        record.image_key[len(PREFIX) :]: layout.labels[record.label]
        for record in layout.splits[split]
    }


# --- held_out ----------------------------------------------------------------------------------


def test_held_out_is_stable_and_about_ten_percent() -> None:
    keys = [f"train/{n % 10}/{n:05d}.png" for n in range(2000)]
    first = [held_out(key) for key in keys]
    assert first == [held_out(key) for key in keys]  # the same answer every time
    assert [held_out(key) for key in reversed(keys)] == first[::-1]  # whatever the order
    assert 150 <= sum(first) <= 250


def test_held_out_percent_bounds() -> None:
    keys = [f"images/{n}.png" for n in range(300)]
    assert not any(held_out(key, 0) for key in keys)
    assert all(held_out(key, 100) for key in keys)
    # a bigger percentage holds out a superset
    assert all(held_out(key, 30) for key in keys if held_out(key, 10))


# --- classify ----------------------------------------------------------------------------------


def test_classify_with_train_and_val(store: S3Store) -> None:
    put(
        store,
        "train/cat/1.png",
        "train/cat/2.JPG",
        "train/dog/3.jpeg",
        "val/cat/4.png",
        "val/dog/5.webp",
        "train/dog/notes.txt",  # not an image
        "train/loose.png",  # not in a label folder
        "README.md",
    )
    layout = read(store, "classify")
    assert layout.task == "classify"
    assert str(layout.uri) == ROOT
    assert layout.labels == ["cat", "dog"]
    assert labels_by_key(layout, "train") == {
        "train/cat/1.png": "cat",
        "train/cat/2.JPG": "cat",
        "train/dog/3.jpeg": "dog",
    }
    assert labels_by_key(layout, "val") == {"val/cat/4.png": "cat", "val/dog/5.webp": "dog"}
    assert layout.splits["test"] == []
    assert layout.counts() == {"train": 3, "val": 2, "test": 0}
    assert layout.evaluation_split == "val"
    # records are in key order and carry no detection or segmentation fields
    assert keys_of(layout.splits["train"]) == sorted(keys_of(layout.splits["train"]))
    assert all(r.boxes == () and r.mask_key is None for r in layout.splits["train"])


def test_classify_without_val_holds_out_ten_percent_of_train(store: S3Store) -> None:
    relative = [f"train/{label}/{n:03d}.png" for label in ("a", "b") for n in range(40)]
    put(store, *relative)
    layout = read(store, "classify")
    every = {PREFIX + key for key in relative}
    train, val = set(keys_of(layout.splits["train"])), set(keys_of(layout.splits["val"]))
    assert train | val == every
    assert not train & val
    assert val == {key for key in every if held_out(key)}
    assert 0 < len(val) < 20
    assert layout.evaluation_split == "val"
    # the labels of held-out records are kept
    assert set(labels_by_key(layout, "val").values()) <= {"a", "b"}
    for key, label in labels_by_key(layout, "val").items():
        assert key.split("/")[1] == label


def test_classify_hold_out_is_the_same_on_a_second_read(store: S3Store) -> None:
    put(store, *[f"train/x/{n}.png" for n in range(60)], "train/y/0.png")
    first, second = read(store, "classify"), read(store, "classify")
    assert keys_of(first.splits["val"]) == keys_of(second.splits["val"])


def test_classify_numeric_labels_sort_as_numbers(store: S3Store) -> None:
    put(store, "train/10/a.png", "train/2/b.png", "train/1/c.png", "val/2/d.png")
    layout = read(store, "classify")
    assert layout.labels == ["1", "2", "10"]
    assert labels_by_key(layout, "train") == {
        "train/10/a.png": "10",
        "train/2/b.png": "2",
        "train/1/c.png": "1",
    }
    assert [r.label for r in layout.splits["val"]] == [1]


def test_classify_mixed_labels_sort_as_text(store: S3Store) -> None:
    put(store, "train/10/a.png", "train/2/b.png", "train/cat/c.png", "val/2/d.png")
    assert read(store, "classify").labels == ["10", "2", "cat"]


def test_classify_labels_come_from_every_split(store: S3Store) -> None:
    put(store, "train/a/1.png", "val/a/2.png", "test/b/3.png")
    layout = read(store, "classify")
    assert layout.labels == ["a", "b"]
    assert [r.label for r in layout.splits["test"]] == [1]


def test_classify_test_split_is_the_evaluation_split(store: S3Store) -> None:
    put(store, "train/a/1.png", "train/b/2.png", "val/a/3.png", "test/a/4.png", "test/b/5.png")
    layout = read(store, "classify")
    assert layout.counts() == {"train": 2, "val": 1, "test": 2}
    assert labels_by_key(layout, "test") == {"test/a/4.png": "a", "test/b/5.png": "b"}
    assert layout.evaluation_split == "test"


def test_classify_at_the_bucket_root(store: S3Store) -> None:
    store.put_bytes(BUCKET, "train/a/1.png", b"x")
    store.put_bytes(BUCKET, "val/b/2.png", b"x")
    layout = read(store, "classify", f"s3://{BUCKET}")
    assert layout.labels == ["a", "b"]
    assert keys_of(layout.splits["train"]) == ["train/a/1.png"]


def test_classify_without_train_images(store: S3Store) -> None:
    put(store, "val/a/1.png", "train/a/notes.txt")
    with pytest.raises(DatasetError, match=r"no images under .*train/<label>/"):
        read(store, "classify")


def test_an_empty_prefix_is_an_error(store: S3Store) -> None:
    for task in ("classify", "detect", "segment", "generate"):
        with pytest.raises(DatasetError):
            read(store, task)


# --- generate ----------------------------------------------------------------------------------


def test_generate_with_class_folders(store: S3Store) -> None:
    put(store, "images/7/a.png", "images/3/b.png", "images/3/c.png", "val/images/7/d.png")
    layout = read(store, "generate")
    assert layout.task == "generate"
    assert layout.labels == ["3", "7"]
    assert labels_by_key(layout, "train") == {
        "images/7/a.png": "7",
        "images/3/b.png": "3",
        "images/3/c.png": "3",
    }
    assert labels_by_key(layout, "val") == {"val/images/7/d.png": "7"}


def test_generate_with_loose_images(store: S3Store) -> None:
    put(store, "images/a.png", "images/b.jpg", "test/images/c.png", "images/notes.txt")
    layout = read(store, "generate")
    assert layout.labels == []
    trained = keys_of(layout.splits["train"]) + keys_of(layout.splits["val"])
    assert sorted(trained) == [PREFIX + "images/a.png", PREFIX + "images/b.jpg"]
    assert keys_of(layout.splits["test"]) == [PREFIX + "test/images/c.png"]
    assert all(record.label == -1 for records in layout.splits.values() for record in records)
    assert layout.evaluation_split == "test"


def test_generate_refuses_a_mix_of_class_folders_and_loose_images(store: S3Store) -> None:
    put(store, "images/a.png", "images/cat/b.png")
    with pytest.raises(DatasetError, match="mixes images in class folders with loose images"):
        read(store, "generate")


def test_generate_refuses_a_mix_across_splits(store: S3Store) -> None:
    put(store, "images/cat/a.png", "val/images/b.png")
    with pytest.raises(DatasetError, match="mixes"):
        read(store, "generate")


def test_generate_without_images(store: S3Store) -> None:
    put(store, "pictures/a.png")
    with pytest.raises(DatasetError, match=r"no images under .*images/"):
        read(store, "generate")


# --- detect ------------------------------------------------------------------------------------

COCO: dict[str, Any] = {
    "images": [
        {"id": 10, "file_name": "a.png"},
        {"id": 11, "file_name": "b.png"},
        {"id": 12, "file_name": "empty.png"},
    ],
    "annotations": [
        {"id": 1, "image_id": 10, "category_id": 7, "bbox": [1, 2, 10, 20]},
        {"id": 2, "image_id": 10, "category_id": 3, "bbox": [5.5, 6, 4, 3], "iscrowd": 0},
        {"id": 3, "image_id": 11, "category_id": 5, "bbox": [0, 0, 8, 8]},
        {"id": 4, "image_id": 11, "category_id": 3, "bbox": [1, 1, 9, 9], "iscrowd": 1},
        {"id": 5, "image_id": 11, "category_id": 7, "bbox": [3, 3, 0, 5]},
        {"id": 6, "image_id": 11, "category_id": 7, "bbox": [3, 3, 5, 0]},
    ],
    # ids not contiguous and not in id order
    "categories": [
        {"id": 7, "name": "square"},
        {"id": 3, "name": "circle"},
        {"id": 5, "name": "triangle"},
    ],
}


def test_detect_reads_coco(store: S3Store) -> None:
    put_json(store, "annotations.json", COCO)
    layout = read(store, "detect")
    assert layout.task == "detect"
    assert layout.labels == ["circle", "triangle", "square"]  # by category id
    records = {r.image_key: r for r in layout.splits["train"] + layout.splits["val"]}
    assert set(records) == {PREFIX + "images/" + n for n in ("a.png", "b.png", "empty.png")}
    a = records[PREFIX + "images/a.png"]
    assert a.boxes == ((1.0, 2.0, 11.0, 22.0), (5.5, 6.0, 9.5, 9.0))
    assert a.classes == (2, 0)  # square, circle
    b = records[PREFIX + "images/b.png"]
    assert b.boxes == ((0.0, 0.0, 8.0, 8.0),)  # crowd and zero-size boxes are skipped
    assert b.classes == (1,)
    empty = records[PREFIX + "images/empty.png"]
    assert (empty.boxes, empty.classes) == ((), ())
    assert all(r.label == -1 and r.mask_key is None for r in records.values())


def test_detect_val_and_test_splits(store: S3Store) -> None:
    put_json(store, "annotations.json", COCO)
    put_json(store, "val/annotations.json", {**COCO, "images": COCO["images"][:1]})
    put_json(store, "test/annotations.json", {**COCO, "images": COCO["images"][1:2]})
    layout = read(store, "detect")
    assert layout.counts() == {"train": 3, "val": 1, "test": 1}
    assert keys_of(layout.splits["val"]) == [PREFIX + "val/images/a.png"]
    assert keys_of(layout.splits["test"]) == [PREFIX + "test/images/b.png"]
    assert layout.splits["test"][0].classes == (1,)
    assert layout.evaluation_split == "test"


def test_detect_split_with_other_categories(store: S3Store) -> None:
    put_json(store, "annotations.json", COCO)
    other = {
        "images": [],
        "annotations": [],
        "categories": [{"id": 3, "name": "circle"}, {"id": 5, "name": "triangle"}],
    }
    put_json(store, "val/annotations.json", other)
    with pytest.raises(DatasetError, match="categories differ"):
        read(store, "detect")


def test_detect_without_annotations(store: S3Store) -> None:
    put(store, "images/a.png")
    with pytest.raises(DatasetError) as caught:
        read(store, "detect")
    message = str(caught.value)
    assert f"s3://{BUCKET}/{PREFIX}annotations.json is missing" in message
    assert "COCO" in message


@pytest.mark.parametrize(
    "document",
    [
        [],
        {"images": [], "annotations": []},  # no categories
        {"categories": [], "annotations": []},  # no images
        {**COCO, "images": [{"id": 10}]},  # no file_name
        {**COCO, "annotations": [{"image_id": 10, "category_id": 99, "bbox": [0, 0, 1, 1]}]},
        {**COCO, "annotations": [{"image_id": 10, "category_id": 3, "bbox": [0, 0, 1]}]},
        {**COCO, "annotations": [{"image_id": 10, "category_id": 3, "bbox": ["a", 0, 1, 1]}]},
        {**COCO, "categories": [{"name": "circle"}]},
        "not a document",
    ],
)
def test_detect_malformed_coco(store: S3Store, document: Any) -> None:
    put_json(store, "annotations.json", document)
    with pytest.raises(DatasetError, match=r"annotations.json is not COCO detection JSON"):
        read(store, "detect")


def test_detect_annotations_that_are_not_json(store: S3Store) -> None:
    put(store, "annotations.json", body=b"{'images': [")
    with pytest.raises(DatasetError, match=r"annotations\.json"):
        read(store, "detect")


def test_detect_with_no_training_images(store: S3Store) -> None:
    put_json(store, "annotations.json", {"images": [], "annotations": [], "categories": []})
    with pytest.raises(DatasetError, match="the training split is empty"):
        read(store, "detect")


def test_detect_holds_out_without_val(store: S3Store) -> None:
    images = [{"id": n, "file_name": f"{n:03d}.png"} for n in range(60)]
    put_json(store, "annotations.json", {**COCO, "images": images, "annotations": []})
    layout = read(store, "detect")
    val = keys_of(layout.splits["val"])
    assert val and len(val) < 20
    assert all(held_out(key) for key in val)
    assert not any(held_out(key) for key in keys_of(layout.splits["train"]))


# --- segment -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "classes",
    [["background", "cat", "dog"], {"classes": ["background", "cat", "dog"]}],
    ids=["list", "object"],
)
def test_segment_pairs_images_and_masks(store: S3Store, classes: Any) -> None:
    put_json(store, "classes.json", classes)
    put(
        store,
        "images/a.png",
        "masks/a.png",
        "images/b.jpg",
        "masks/b.png",
        "masks/orphan.png",  # a mask without an image is ignored
        "val/images/c.png",
        "val/masks/c.png",
        "test/images/d.png",
        "test/masks/d.png",
    )
    layout = read(store, "segment")
    assert layout.task == "segment"
    assert layout.labels == ["background", "cat", "dog"]
    assert [(r.image_key, r.mask_key) for r in layout.splits["train"]] == [
        (PREFIX + "images/a.png", PREFIX + "masks/a.png"),
        (PREFIX + "images/b.jpg", PREFIX + "masks/b.png"),
    ]
    assert [(r.image_key, r.mask_key) for r in layout.splits["val"]] == [
        (PREFIX + "val/images/c.png", PREFIX + "val/masks/c.png")
    ]
    assert [(r.image_key, r.mask_key) for r in layout.splits["test"]] == [
        (PREFIX + "test/images/d.png", PREFIX + "test/masks/d.png")
    ]
    assert layout.evaluation_split == "test"


def test_segment_class_names_become_strings(store: S3Store) -> None:
    put_json(store, "classes.json", ["background", 1, 2])
    put(store, "images/a.png", "masks/a.png")
    assert read(store, "segment").labels == ["background", "1", "2"]


def test_segment_missing_mask_names_the_file(store: S3Store) -> None:
    put_json(store, "classes.json", ["background", "cat"])
    put(store, "images/a.png", "masks/a.png", "images/b.png", "images/c.jpg")
    with pytest.raises(DatasetError) as caught:
        read(store, "segment")
    message = str(caught.value)
    assert "2 images" in message
    assert "masks/b.png" in message


def test_segment_a_jpeg_mask_does_not_count(store: S3Store) -> None:
    put_json(store, "classes.json", ["background", "cat"])
    put(store, "images/a.png", "masks/a.jpg")
    with pytest.raises(DatasetError, match=r"masks/a\.png"):
        read(store, "segment")


def test_segment_missing_mask_in_a_split_names_the_split(store: S3Store) -> None:
    put_json(store, "classes.json", ["background", "cat"])
    put(store, "images/a.png", "masks/a.png", "val/images/b.png")
    with pytest.raises(DatasetError, match=r"val/masks/b\.png"):
        read(store, "segment")


def test_segment_classes_that_are_not_json(store: S3Store) -> None:
    put(store, "classes.json", body=b"background, cat")
    put(store, "images/a.png", "masks/a.png")
    with pytest.raises(DatasetError, match=r"classes\.json"):
        read(store, "segment")


def test_segment_missing_classes(store: S3Store) -> None:
    put(store, "images/a.png", "masks/a.png")
    with pytest.raises(DatasetError) as caught:
        read(store, "segment")
    assert f"{ROOT}classes.json is missing" in str(caught.value)


@pytest.mark.parametrize(
    "classes",
    [["background"], [], {"names": ["background", "cat"]}, "background,cat", {"classes": "x"}],
)
def test_segment_unusable_classes(store: S3Store, classes: Any) -> None:
    put_json(store, "classes.json", classes)
    put(store, "images/a.png", "masks/a.png")
    with pytest.raises(DatasetError, match="must be a list of at least two class names"):
        read(store, "segment")


def test_segment_without_images(store: S3Store) -> None:
    put_json(store, "classes.json", ["background", "cat"])
    put(store, "masks/a.png")
    with pytest.raises(DatasetError, match=r"no images under .*images/"):
        read(store, "segment")


# --- read_layout -------------------------------------------------------------------------------


def test_a_missing_bucket(store: S3Store) -> None:
    with pytest.raises(DatasetError, match=r"bucket 'no-such-bucket' does not exist"):
        read(store, "classify", "s3://no-such-bucket/data/")


def test_an_unknown_task(store: S3Store) -> None:
    with pytest.raises(DatasetError, match="--task must be one of"):
        read(store, "translate")


def test_layout_counts_follow_the_splits() -> None:
    layout = DatasetLayout("classify", parse_s3_uri(ROOT), ["a"])
    assert layout.counts() == {}
    assert layout.evaluation_split == "val"
    layout.splits = {"train": [Record("k")], "val": [], "test": []}
    assert layout.counts() == {"train": 1, "val": 0, "test": 0}
    assert layout.evaluation_split == "val"
    layout.splits["test"] = [Record("t")]
    assert layout.evaluation_split == "test"
    assert json.dumps(layout.counts())  # plain ints, ready for a run record
