"""What a reviewer hands back: a corrected review folder, or a Label Studio export.

A review folder (``<output>/_review/<job_id>/``, written by :mod:`worker.review_files`)
is a dataset of its task, so after correction it is read with the dataset readers
(:mod:`models.dataset_layouts`): for classify, a file moved to another label's folder
has that label and one moved out of ``train/`` (to ``skip/``, say) or deleted is left
out. A Label Studio export (``--labels-from``, the JSON export of a project made from
the folder's ``tasks.json``) gives each task's last annotation that was not cancelled;
a task without one was skipped. ``items.jsonl`` says where each file came from.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, field
from typing import Any

from bucketvision.infra.errors import UserError
from bucketvision.infra.review import parse_review_items
from bucketvision.infra.s3 import ObjectMissing, S3Store, S3Uri, parse_s3_uri
from bucketvision.models.dataset_layouts import DatasetError, read_layout

ITEMS_FILE = "items.jsonl"


class ReviewImportError(UserError):
    """The review folder or export cannot be imported as given; the message says why."""


@dataclass(frozen=True)
class CorrectedItem:
    """One reviewed item: its image, its corrected label(s), where it came from."""

    bucket: str
    image_key: str
    label: str | None = None  # classify
    mask_key: str | None = None  # segment
    boxes: tuple[tuple[float, float, float, float, str], ...] = ()  # detect, pixels
    source: dict[str, Any] = field(default_factory=dict)


@dataclass
class Corrections:
    task: str
    items: list[CorrectedItem]
    skipped: int  # routed items the reviewer left out
    classes: list[str]  # segment: the class names by id


def read_corrections(store: S3Store, folder: S3Uri, export: str | None) -> Corrections:
    """The corrected items of the review ``folder`` (or of its Label Studio ``export``)."""
    try:
        routed = parse_review_items(store.get_text(folder.bucket, folder.key(ITEMS_FILE)))
    except ObjectMissing:
        raise ReviewImportError(
            f"{folder} has no {ITEMS_FILE}: --from takes a job's review folder, "
            "s3://BUCKET/<output>/_review/<job_id>/ (the job's summary.json names it)"
        ) from None
    tasks = {str(row.get("task")) for row in routed.values()}
    if len(tasks) != 1:
        raise ReviewImportError(f"{folder}{ITEMS_FILE} names no single task: {sorted(tasks)}")
    task = tasks.pop()
    if export is not None:
        items = _from_export(store, task, _read_export(store, export), routed)
        return Corrections(task, items, len(routed) - len(items), [])
    try:
        layout = read_layout(store, folder, task, hold_out=False)
    except DatasetError as error:
        if task == "classify" and "no images under" in str(error):
            return Corrections(task, [], len(routed), [])  # every item skipped
        raise ReviewImportError(
            f"the review folder is not a {task} dataset any more: {error}"
        ) from None
    records = [record for split in layout.splits.values() for record in split]
    items = [
        CorrectedItem(
            folder.bucket,
            record.image_key,
            label=layout.labels[record.label] if task == "classify" else None,
            mask_key=record.mask_key,
            boxes=tuple(
                (*box, layout.labels[number])
                for box, number in zip(record.boxes, record.classes, strict=True)
            ),
            source=routed.get(posixpath.basename(record.image_key), {}),
        )
        for record in records
    ]
    classes = layout.labels if task == "segment" else []
    return Corrections(task, items, max(0, len(routed) - len(items)), classes)


def _read_export(store: S3Store, source: str) -> list[dict[str, Any]]:
    try:
        if source.startswith("s3://"):
            where = parse_s3_uri(source, directory=False)
            document = json.loads(store.get_text(where.bucket, where.prefix))
        else:
            with open(source, encoding="utf-8") as handle:
                document = json.load(handle)
    except OSError as error:
        raise ReviewImportError(f"--labels-from {source}: {error.strerror or error}") from None
    except ValueError as error:
        raise ReviewImportError(f"--labels-from {source} is not JSON: {error}") from None
    if not isinstance(document, list):
        raise ReviewImportError(
            f"--labels-from {source} is not a Label Studio JSON export (a list of tasks)"
        )
    return document


def _from_export(
    store: S3Store, task: str, tasks: list[dict[str, Any]], routed: dict[str, dict[str, Any]]
) -> list[CorrectedItem]:
    """The tasks with a kept annotation, as corrected items of ``task``."""
    if task == "segment":
        raise ReviewImportError(
            "--labels-from reads classify and detect exports; for segmentation, save the "
            "corrected masks as masks/<name>.png in the review folder and import the folder"
        )
    items = []
    for entry in tasks:
        kept = [a for a in entry.get("annotations", []) if not a.get("was_cancelled")]
        image = str(entry.get("data", {}).get("image", ""))
        if not kept or not image.startswith("s3://"):
            continue
        where = parse_s3_uri(image, directory=False)
        source = routed.get(posixpath.basename(where.prefix), {})
        results = kept[-1].get("result", [])
        if task == "classify":
            chosen = (r["value"]["choices"] for r in results if r.get("type") == "choices")
            choices = [choice for group in chosen for choice in group]
            if choices:
                items.append(CorrectedItem(where.bucket, where.prefix, choices[0], source=source))
            continue
        boxes = tuple(_box(result) for result in results if result.get("type") == "rectanglelabels")
        items.append(CorrectedItem(where.bucket, where.prefix, boxes=boxes, source=source))
    return items


def _box(result: dict[str, Any]) -> tuple[float, float, float, float, str]:
    """A Label Studio rectangle (percent of the image) in pixels of the original."""
    value, width, height = result["value"], result["original_width"], result["original_height"]
    x_min, y_min = value["x"] * width / 100.0, value["y"] * height / 100.0
    x_max = x_min + value["width"] * width / 100.0
    y_max = y_min + value["height"] * height / 100.0
    return (x_min, y_min, x_max, y_max, str(value["rectanglelabels"][0]))
