"""Reading training datasets from S3 in their layouts (docs/dataset-layouts.md); no TensorFlow.

- classify: ``train/<label>/*`` with optional ``val/<label>/*`` and ``test/<label>/*``
- detect:   ``images/*`` + ``annotations.json`` (COCO: images, annotations with ``bbox``
  ``[x, y, w, h]``, categories)
- segment:  ``images/<n>.png`` + ``masks/<n>.png`` (8-bit class ids) + ``classes.json``
- generate: ``images/*``, or ``images/<label>/*`` for a class-conditional model

For detect, segment and generate, ``val/`` and ``test/`` sub-folders with the same
layout are optional splits. Without a validation split, a deterministic 10% of
the training items (by a hash of the key) is held out. Metrics are computed on
``test`` when there is one, else on ``val``.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bucketvision.infra.errors import UserError
from bucketvision.infra.s3 import ObjectMissing, S3Store, S3Uri
from bucketvision.infra.vocabulary import IMAGE_SUFFIXES

SPLITS = ("train", "val", "test")


class DatasetError(UserError):
    """The dataset does not follow its task's layout; the message says what is expected."""


@dataclass(frozen=True)
class Record:
    """One training item: its image key and its annotation."""

    image_key: str
    label: int = -1  # classify, generate
    boxes: tuple[tuple[float, float, float, float], ...] = ()  # detect, original pixels
    classes: tuple[int, ...] = ()  # detect
    mask_key: str | None = None  # segment


@dataclass
class DatasetLayout:
    """The records of every split and the class names."""

    task: str
    uri: S3Uri
    labels: list[str]
    splits: dict[str, list[Record]] = field(default_factory=dict)

    @property
    def evaluation_split(self) -> str:
        return "test" if self.splits.get("test") else "val"

    def counts(self) -> dict[str, int]:
        return {name: len(records) for name, records in self.splits.items()}


def held_out(key: str, percent: int = 10) -> bool:
    """Deterministic: the same key is always in or out, whatever the listing order."""
    return (
        int(hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest()[:8], 16) % 100 < percent
    )


def _sorted_labels(labels: Iterable[str]) -> list[str]:
    unique = set(labels)
    if unique and all(label.isdigit() for label in unique):
        return sorted(unique, key=int)
    return sorted(unique)


def _is_image(key: str) -> bool:
    return key.lower().endswith(IMAGE_SUFFIXES)


def _relative_keys(store: S3Store, uri: S3Uri) -> list[str]:
    return [info.key[len(uri.prefix) :] for info in store.list_objects(uri)]


def _split_root(relative: str) -> tuple[str, str]:
    """('val', rest) for 'val/...', ('test', rest) for 'test/...', else ('train', relative)."""
    head, _, rest = relative.partition("/")
    if head in ("val", "test") and rest:
        return head, rest
    return "train", relative


def _hold_out_validation(layout: DatasetLayout) -> DatasetLayout:
    if not layout.splits.get("val"):
        train = layout.splits.get("train", [])
        layout.splits["val"] = [record for record in train if held_out(record.image_key)]
        layout.splits["train"] = [record for record in train if not held_out(record.image_key)]
    if not layout.splits.get("train"):
        raise DatasetError(f"{layout.uri}: the training split is empty")
    return layout


def _labelled_layout(
    task: str, uri: S3Uri, items: dict[str, list[tuple[str, str | None]]]
) -> DatasetLayout:
    """Records from (key, label-or-None) pairs per split; labels sorted, numbers numerically."""
    names = [label for pairs in items.values() for _, label in pairs if label is not None]
    labels = _sorted_labels(names)
    index = {label: position for position, label in enumerate(labels)}
    layout = DatasetLayout(task, uri, labels)
    for split, pairs in items.items():
        layout.splits[split] = [
            Record(key, label=-1 if label is None else index[label]) for key, label in sorted(pairs)
        ]
    return layout


def read_classification(store: S3Store, uri: S3Uri) -> DatasetLayout:
    """``train/<label>/*`` with optional ``val/<label>/*`` and ``test/<label>/*``."""
    items: dict[str, list[tuple[str, str | None]]] = {name: [] for name in SPLITS}
    for relative in _relative_keys(store, uri):
        parts = relative.split("/")
        if len(parts) >= 3 and parts[0] in SPLITS and _is_image(relative):
            items[parts[0]].append((uri.prefix + relative, parts[1]))
    if not items["train"]:
        raise DatasetError(
            f"no images under {uri}train/<label>/: a classification dataset is "
            "train/<label>/<image> with optional val/<label>/ and test/<label>/"
        )
    return _labelled_layout("classify", uri, items)


def read_generation(store: S3Store, uri: S3Uri) -> DatasetLayout:
    """``images/*`` (unlabelled) or ``images/<label>/*`` (class-conditional)."""
    items: dict[str, list[tuple[str, str | None]]] = {name: [] for name in SPLITS}
    for relative in _relative_keys(store, uri):
        split, rest = _split_root(relative)
        parts = rest.split("/")
        if parts[0] == "images" and len(parts) >= 2 and _is_image(rest):
            items[split].append((uri.prefix + relative, parts[1] if len(parts) > 2 else None))
    pairs = [label for split_items in items.values() for _, label in split_items]
    if not items["train"]:
        raise DatasetError(
            f"no images under {uri}images/: a generation dataset is images/<image>, or "
            "images/<label>/<image> for a class-conditional model"
        )
    if None in pairs and any(label is not None for label in pairs):
        raise DatasetError(
            f"{uri}images/ mixes images in class folders with loose images; "
            "put every image in a class folder, or none"
        )
    return _labelled_layout("generate", uri, items)


def _coco_records(document: Any, prefix: str, where: str) -> tuple[list[str], list[Record]]:
    try:
        categories = sorted(document["categories"], key=lambda category: category["id"])
        category_index = {category["id"]: i for i, category in enumerate(categories)}
        labels = [str(category["name"]) for category in categories]
        annotations: dict[Any, list[dict[str, Any]]] = {}
        for annotation in document.get("annotations", []):
            annotations.setdefault(annotation["image_id"], []).append(annotation)
        records = []
        for image in document["images"]:
            boxes, classes = [], []
            for annotation in annotations.get(image["id"], []):
                x, y, width, height = (float(v) for v in annotation["bbox"])
                if width > 0 and height > 0 and not annotation.get("iscrowd", 0):
                    boxes.append((x, y, x + width, y + height))
                    classes.append(category_index[annotation["category_id"]])
            key = posixpath.join(prefix, "images", str(image["file_name"]))
            records.append(Record(key, boxes=tuple(boxes), classes=tuple(classes)))
    except (KeyError, TypeError, ValueError) as error:
        raise DatasetError(
            f"{where} is not COCO detection JSON ({type(error).__name__}: {error}); it needs "
            "images [{id, file_name}], annotations [{image_id, category_id, bbox [x,y,w,h]}], "
            "categories [{id, name}]"
        ) from None
    return labels, records


def read_detection(store: S3Store, uri: S3Uri) -> DatasetLayout:
    """``images/*`` + ``annotations.json`` per split."""
    layout = DatasetLayout("detect", uri, [])
    for split in SPLITS:
        prefix = uri.prefix if split == "train" else uri.key(split) + "/"
        where = f"s3://{uri.bucket}/{prefix}annotations.json"
        try:
            document = _read_json(store, uri.bucket, prefix + "annotations.json")
        except ObjectMissing:
            if split == "train":
                raise DatasetError(
                    f"{where} is missing: a detection dataset is images/* plus "
                    "annotations.json in COCO format"
                ) from None
            continue
        labels, records = _coco_records(document, prefix.rstrip("/"), where)
        if layout.labels and labels != layout.labels:
            raise DatasetError(f"{where}: its categories differ from the training split's")
        layout.labels = labels
        layout.splits[split] = records
    return layout


def _read_json(store: S3Store, bucket: str, key: str) -> Any:
    """A JSON document of the dataset; DatasetError when it is not JSON."""
    try:
        return store.get_json(bucket, key)
    except ValueError as error:  # json.JSONDecodeError, UnicodeDecodeError
        raise DatasetError(f"s3://{bucket}/{key} is not valid JSON: {error}") from None


def _read_classes(store: S3Store, uri: S3Uri) -> list[str]:
    where = f"{uri}classes.json"
    try:
        document = _read_json(store, uri.bucket, uri.key("classes.json"))
    except ObjectMissing:
        raise DatasetError(
            f"{where} is missing: a segmentation dataset has classes.json, a list of class "
            'names by id with the background first, e.g. ["background", "cat"]'
        ) from None
    if isinstance(document, dict):
        document = document.get("classes")
    if not isinstance(document, list) or len(document) < 2:
        raise DatasetError(f"{where} must be a list of at least two class names (background first)")
    return [str(name) for name in document]


def read_segmentation(store: S3Store, uri: S3Uri) -> DatasetLayout:
    """``images/<n>.*`` paired with ``masks/<n>.png`` per split, and ``classes.json``."""
    layout = DatasetLayout("segment", uri, _read_classes(store, uri))
    images: dict[tuple[str, str], str] = {}
    masks: dict[tuple[str, str], str] = {}
    for relative in _relative_keys(store, uri):
        split, rest = _split_root(relative)
        folder, _, name = rest.partition("/")
        stem = posixpath.splitext(name)[0]
        if folder == "images" and _is_image(name):
            images[(split, stem)] = uri.prefix + relative
        elif folder == "masks" and name.lower().endswith(".png"):
            masks[(split, stem)] = uri.prefix + relative
    unpaired = sorted(item for item in images if item not in masks)
    if unpaired:
        split, stem = unpaired[0]
        example = ("" if split == "train" else f"{split}/") + f"masks/{stem}.png"
        count = f"{len(unpaired)} image{'s' if len(unpaired) > 1 else ''}"
        raise DatasetError(
            f"{count} under {uri} have no mask (e.g. {example} is missing); "
            "every images/<n>.* needs masks/<n>.png"
        )
    if not images:
        raise DatasetError(f"no images under {uri}images/: a segmentation dataset is images/<n>.*")
    for split in SPLITS:
        layout.splits[split] = [
            Record(images[item], mask_key=masks[item])
            for item in sorted(images)
            if item[0] == split
        ]
    return layout


READERS = {
    "classify": read_classification,
    "detect": read_detection,
    "segment": read_segmentation,
    "generate": read_generation,
}


def read_layout(store: S3Store, uri: S3Uri, task: str, *, hold_out: bool = True) -> DatasetLayout:
    """The records of the dataset at ``uri`` for ``task``; DatasetError when it is unusable.

    With ``hold_out`` (training), a dataset without ``val/`` has a deterministic 10 % of
    its training items held out for validation; without it (a review folder read for
    import), the splits are as stored.
    """
    if task not in READERS:
        raise DatasetError(f"--task must be one of {', '.join(READERS)}")
    if not store.bucket_exists(uri.bucket):
        raise DatasetError(f"bucket {uri.bucket!r} does not exist (dataset {uri})")
    layout = READERS[task](store, uri)
    return _hold_out_validation(layout) if hold_out else layout
