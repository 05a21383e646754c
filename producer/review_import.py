"""``bucketvision review import``: reviewed items into a dataset's ``train/``, each once.

Each corrected item (:mod:`producer.review_sources`) is added to the dataset in its
task's layout under a name made of the SHA-256 of its bytes, and a marker
``_imported/<sha256>.json`` records where it came from (input key, job, model, review
folder, label, time). An item whose marker exists is a duplicate and is not added
again, however many times a folder is imported or however many jobs routed the same
image. Only ``train/`` grows (the classify layout's ``train/<label>/``; for detect and
segment the top-level ``images/``): the ``test/`` split the promotion gate scores on
never receives reviewed items.

A step with several writes, and who finishes it: the image (and mask) is written
before the marker, so an import that dies in between leaves an item without a marker,
which the next import of the folder writes again to the same key and then marks. For
detect, the dataset's ``annotations.json`` is written once, after the images and
before the markers, and an image already in it counts as a duplicate: an import cut
between the two adds no box twice. Imports into one dataset run one at a time.
"""

from __future__ import annotations

import hashlib
import posixpath
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from bucketvision.infra.s3 import ObjectMissing, S3Store, S3Uri, parse_s3_uri
from bucketvision.models.dataset_writers import coco_annotation
from bucketvision.producer.review_sources import (
    CorrectedItem,
    ReviewImportError,
    read_corrections,
)

MARKERS = "_imported"


@dataclass
class ImportReport:
    """What an import added; ``describe()`` is the command's line."""

    dataset: str
    task: str
    added: int = 0
    duplicates: int = 0
    skipped: int = 0
    by_label: Counter[str] = field(default_factory=Counter)
    dry_run: bool = False

    def describe(self) -> str:
        verb = "would add" if self.dry_run else "added"
        labels = ", ".join(f"{label} {count}" for label, count in sorted(self.by_label.items()))
        return (
            f"{verb} {self.added} reviewed items to the training split of {self.dataset}"
            + (f" ({labels})" if labels else "")
            + f"; {self.duplicates} already there, {self.skipped} left out by the reviewer"
        )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "by_label": dict(self.by_label)}


def import_review(
    store: S3Store, source: str, dataset: str, *, export: str | None = None, dry_run: bool = False
) -> ImportReport:
    """Add the corrected items of the review folder ``source`` to ``dataset``'s train split."""
    folder, target = parse_s3_uri(source), parse_s3_uri(dataset)
    if not store.bucket_exists(target.bucket):
        raise ReviewImportError(f"bucket {target.bucket!r} of --dataset does not exist")
    corrections = read_corrections(store, folder, export)
    report = ImportReport(str(target), corrections.task, skipped=corrections.skipped)
    report.dry_run = dry_run
    if corrections.task == "segment":
        _check_classes(store, target, corrections.classes, dry_run)
    annotations = _Annotations(store, target) if corrections.task == "detect" else None
    pending: list[tuple[str, dict[str, Any]]] = []
    for item in corrections.items:
        data = store.get_bytes(item.bucket, item.image_key)
        digest = hashlib.sha256(data).hexdigest()
        name = digest[:32] + posixpath.splitext(item.image_key)[1].lower()
        if store.exists(target.bucket, target.key(MARKERS, f"{digest}.json")) or (
            annotations is not None and annotations.has(name)
        ):
            report.duplicates += 1
            continue
        report.added += 1
        report.by_label.update(_labels_of(item))
        if dry_run:
            continue
        image_key = _write_item(store, target, item, name, data, annotations)
        marker = {
            "sha256": digest,
            "file": image_key,
            "labels": sorted(set(_labels_of(item))),
            "source": item.source,
            "review_folder": str(folder),
            "imported_at": time.time(),
        }
        pending.append((digest, marker))
    if annotations is not None and pending:
        annotations.save()
    for digest, marker in pending:
        store.put_json(target.bucket, target.key(MARKERS, f"{digest}.json"), marker)
    return report


def _labels_of(item: CorrectedItem) -> list[str]:
    if item.label is not None:
        return [item.label]
    return [box[4] for box in item.boxes] if item.boxes else ["(mask)" if item.mask_key else ""]


def _write_item(
    store: S3Store,
    target: S3Uri,
    item: CorrectedItem,
    name: str,
    data: bytes,
    annotations: _Annotations | None,
) -> str:
    """Write the item's image (and mask) into the dataset; the image's key."""
    if item.label is not None:
        image_key = target.key("train", item.label, name)
    else:
        image_key = target.key("images", name)
    store.put_bytes(target.bucket, image_key, data)
    if item.mask_key is not None:
        mask = store.get_bytes(item.bucket, item.mask_key)
        stem = posixpath.splitext(name)[0]
        store.put_bytes(target.bucket, target.key("masks", f"{stem}.png"), mask, "image/png")
    if annotations is not None:
        annotations.add(name, item.boxes, _image_size(item))
    return image_key


def _image_size(item: CorrectedItem) -> tuple[int, int]:
    size = item.source.get("image_size") or (0, 0)
    return int(size[0]), int(size[1])


def _check_classes(store: S3Store, target: S3Uri, classes: list[str], dry_run: bool) -> None:
    """The dataset's classes.json must be the review's (written when the dataset has none)."""
    try:
        existing = store.get_json(target.bucket, target.key("classes.json"))
    except ObjectMissing:
        if not dry_run:
            store.put_json(target.bucket, target.key("classes.json"), classes)
        return
    names = existing.get("classes") if isinstance(existing, dict) else existing
    if list(names) != classes:
        raise ReviewImportError(
            f"the review's classes {classes} differ from {target}classes.json {names}: "
            "the mask ids would mean other classes; import into a dataset of this model's classes"
        )


class _Annotations:
    """The dataset's top-level COCO ``annotations.json``, grown in memory, saved once."""

    def __init__(self, store: S3Store, target: S3Uri) -> None:
        self.store, self.target = store, target
        try:
            self.document = store.get_json(target.bucket, target.key("annotations.json"))
        except ObjectMissing:
            self.document = {"images": [], "annotations": [], "categories": []}
        self.names = {str(image["file_name"]) for image in self.document["images"]}
        self.category = {c["name"]: c["id"] for c in self.document["categories"]}
        self.next_image = max((int(i["id"]) for i in self.document["images"]), default=0) + 1
        annotations = self.document["annotations"]
        self.next_box = max((int(a["id"]) for a in annotations), default=0) + 1

    def has(self, name: str) -> bool:
        return name in self.names

    def add(
        self,
        name: str,
        boxes: tuple[tuple[float, float, float, float, str], ...],
        size: tuple[int, int],
    ) -> None:
        image_id, self.next_image = self.next_image, self.next_image + 1
        self.document["images"].append(
            {"id": image_id, "file_name": name, "width": size[0], "height": size[1]}
        )
        self.names.add(name)
        for x_min, y_min, x_max, y_max, label in boxes:
            if label not in self.category:
                self.category[label] = max(self.category.values(), default=0) + 1
                self.document["categories"].append({"id": self.category[label], "name": label})
            box = (x_min, y_min, x_max, y_max)
            self.document["annotations"].append(
                coco_annotation(self.next_box, image_id, self.category[label], box, digits=1)
            )
            self.next_box += 1

    def save(self) -> None:
        self.store.put_json(self.target.bucket, self.target.key("annotations.json"), self.document)
