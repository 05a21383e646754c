"""Writing a job's review folder: the images, pre-filled labels and a Label Studio import.

``<output>/_review/<job_id>/`` is laid out as a dataset of the job's task
(docs/dataset-layouts.md), so the corrected folder is what ``bucketvision review
import`` reads:

- classify: ``train/<predicted label>/<name>``; a reviewer moves a file to the right
  label's folder, or to ``skip/`` to leave it out;
- detect: ``images/<name>`` and ``annotations.json`` (COCO, the predicted boxes);
- segment: ``images/<name>``, ``masks/<stem>.png`` (the predicted mask) and
  ``classes.json``.

Besides: ``tasks.json``, Label Studio tasks with ``predictions`` (choices for classify,
rectangle labels for detect; a segment task carries its mask's URI in ``data.mask``),
``label_config.xml`` for a project to import them into, and ``items.jsonl``, where each
file came from (input key, job, model, confidence). Images are server-side copies; a
file's name is a hash of its input key and the key's last segment, so a finaliser run
again writes the same keys.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from xml.sax.saxutils import quoteattr

from bucketvision.infra.outputs import jsonl
from bucketvision.infra.review import ReviewPolicy, review_prefix
from bucketvision.infra.s3 import S3Store, S3Uri, parse_s3_uri
from bucketvision.models.dataset_writers import coco_annotation
from bucketvision.worker.review_select import ReviewItem

COPY_THREADS = 8
CONFIG_TAGS = {"classify": "Choices", "detect": "RectangleLabels", "segment": "BrushLabels"}


def review_name(key: str) -> str:
    """``<10 hex of sha1(key)>-<last segment>``: unique per input key, stable across runs."""
    digest = hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest()[:10]
    return f"{digest}-{posixpath.basename(key)}"


def _item_paths(task: str, item: ReviewItem) -> dict[str, str]:
    """Where the item's files go in the review folder, relative to it."""
    name = review_name(item.key)
    if task == "classify":
        return {"image": f"train/{item.predicted}/{name}"}
    paths = {"image": f"images/{name}"}
    if task == "segment":
        paths["mask"] = f"masks/{posixpath.splitext(name)[0]}.png"
    return paths


def write_review(
    store: S3Store, record: dict[str, Any], policy: ReviewPolicy, items: Sequence[ReviewItem]
) -> dict[str, Any]:
    """Copy the items' images (and masks), write the label files; the summary's ``review``."""
    task, job_id = str(record["task"]), str(record["job_id"])
    output = parse_s3_uri(str(record["output"]))
    folder = review_prefix(output, job_id)
    input_bucket = parse_s3_uri(str(record["input"])).bucket
    placed = [(item, _item_paths(task, item)) for item in items]
    copies = [(input_bucket, item.key, folder.key(paths["image"])) for item, paths in placed]
    copies += [
        (output.bucket, str(item.result["mask"]), folder.key(paths["mask"]))
        for item, paths in placed
        if "mask" in paths
    ]
    with ThreadPoolExecutor(COPY_THREADS, thread_name_prefix="bv-review") as pool:
        for _ in pool.map(lambda copy: _copy(store, folder.bucket, copy), copies):
            pass
    labels = list(policy.labels) or sorted({item.predicted for item in items if item.predicted})
    if task == "detect":
        store.put_json(folder.bucket, folder.key("annotations.json"), coco_document(placed, labels))
    if task == "segment":
        store.put_json(folder.bucket, folder.key("classes.json"), labels)
    model = str(record.get("model", ""))
    tasks = [label_studio_task(task, folder, item, paths, model) for item, paths in placed]
    store.put_json(folder.bucket, folder.key("tasks.json"), tasks)
    config = label_config(task, labels).encode()
    store.put_bytes(folder.bucket, folder.key("label_config.xml"), config, "application/xml")
    provenance = [
        {
            "file": paths["image"],
            "task": task,
            "key": item.key,
            "input": f"s3://{input_bucket}/{item.key}",
            "job_id": job_id,
            "model": model,
            "confidence": item.confidence,
            "predicted": item.predicted,
            "image_size": item.result.get("image_size"),
        }
        for item, paths in placed
    ]
    data = jsonl(provenance).encode()
    store.put_bytes(folder.bucket, folder.key("items.jsonl"), data, "application/x-ndjson")
    return {"routed": len(items), "folder": str(folder)}


def _copy(store: S3Store, target_bucket: str, copy: tuple[str, str, str]) -> None:
    source_bucket, source_key, target_key = copy
    store.copy(source_bucket, source_key, target_bucket, target_key)


def coco_document(placed: Sequence[tuple[ReviewItem, dict[str, str]]], labels: list[str]) -> Any:
    """The detect review's ``annotations.json``: every predicted box of each routed image."""
    category = {label: number for number, label in enumerate(labels, start=1)}
    images, annotations = [], []
    for image_id, (item, paths) in enumerate(placed, start=1):
        width, height = item.result.get("image_size") or (0, 0)
        file_name = posixpath.basename(paths["image"])
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        for box in item.result.get("detections", []):
            number = category.setdefault(box["label"], len(category) + 1)
            annotations.append(
                coco_annotation(
                    len(annotations) + 1, image_id, number, box["box"], digits=1, score=box["score"]
                )
            )
    categories = [{"id": number, "name": name} for name, number in category.items()]
    return {"images": images, "annotations": annotations, "categories": categories}


def _rectangle(box: dict[str, Any], size: Sequence[int]) -> dict[str, Any]:
    """A detection as a Label Studio ``rectanglelabels`` result (percent of the image)."""
    width, height = size
    x_min, y_min, x_max, y_max = box["box"]
    return {
        "from_name": "label",
        "to_name": "image",
        "type": "rectanglelabels",
        "original_width": width,
        "original_height": height,
        "image_rotation": 0,
        "value": {
            "x": 100.0 * x_min / width,
            "y": 100.0 * y_min / height,
            "width": 100.0 * (x_max - x_min) / width,
            "height": 100.0 * (y_max - y_min) / height,
            "rotation": 0,
            "rectanglelabels": [box["label"]],
        },
        "score": box["score"],
    }


RESULTS: dict[str, Callable[[ReviewItem], list[dict[str, Any]]]] = {
    "classify": lambda item: [
        {
            "from_name": "label",
            "to_name": "image",
            "type": "choices",
            "value": {"choices": [item.predicted]},
        }
    ],
    "detect": lambda item: [
        _rectangle(box, item.result["image_size"]) for box in item.result.get("detections", [])
    ],
    "segment": lambda item: [],
}


def label_studio_task(
    task: str, folder: S3Uri, item: ReviewItem, paths: dict[str, str], model: str
) -> dict[str, Any]:
    """One Label Studio task (its basic JSON import format) with the model's prediction."""
    data = {f"{name}": f"s3://{folder.bucket}/{folder.key(path)}" for name, path in paths.items()}
    return {
        "data": {**data, "key": item.key, "confidence": item.confidence},
        "predictions": [
            {"model_version": model, "score": item.confidence, "result": RESULTS[task](item)}
        ],
    }


def label_config(task: str, labels: Sequence[str]) -> str:
    """A Label Studio labelling configuration whose names match ``tasks.json``."""
    tag = CONFIG_TAGS[task]
    child = "Choice" if tag == "Choices" else "Label"
    options = "".join(f"\n    <{child} value={quoteattr(label)}/>" for label in labels)
    mode = ' choice="single"' if tag == "Choices" else ""
    return (
        '<View>\n  <Image name="image" value="$image"/>\n'
        f'  <{tag} name="label" toName="image"{mode}>{options}\n  </{tag}>\n</View>\n'
    )
