"""Review folders on a real S3 endpoint (moto): per task, read back as datasets, imported once.

The finaliser writes ``_review/<job>/`` (:func:`worker.review_files.write_review`) in
the task's dataset layout; ``review import`` adds the corrected items to a dataset,
and importing again adds nothing. Detect and segment here (classify runs end to end in
tests/e2e/test_review_loop.py), plus a Label Studio export and the refusals.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bucketvision.infra.review import ReviewPolicy
from bucketvision.infra.s3 import S3Store, parse_s3_uri
from bucketvision.infra.settings import Settings
from bucketvision.models.dataset_layouts import read_layout
from bucketvision.producer.review_import import import_review
from bucketvision.producer.review_sources import ReviewImportError
from bucketvision.worker.review_files import write_review
from bucketvision.worker.review_select import ReviewItem

pytestmark = pytest.mark.integration

BUCKET = "it-review"


def _png(seed: int, mode: str = "RGB") -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    image = Image.fromarray(pixels) if mode == "RGB" else Image.fromarray(pixels[..., 0] % 3)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def store(settings: Settings, s3_client: Any) -> S3Store:
    s3_client.create_bucket(Bucket=BUCKET)
    return S3Store.from_settings(settings)


def _record(task: str, job_id: str) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "task": task,
        "input": f"s3://{BUCKET}/in/",
        "output": f"s3://{BUCKET}/out/",
        "model": "m@v3",
    }


def _detected(store: S3Store, index: int) -> ReviewItem:
    key = f"in/cam{index % 2}/shot-{index}.png"  # two folders: the names must still differ
    store.put_bytes(BUCKET, key, _png(index))
    boxes = [
        {"label": "cat", "score": 0.4, "box": [2.0, 3.0, 12.0, 15.5]},
        {"label": "dog", "score": 0.95, "box": [10.0, 1.0, 30.0, 20.0]},
    ]
    result = {"detections": boxes, "image_size": [32, 24]}
    return ReviewItem(0.4, key, "cat", result)


def test_a_detect_review_is_a_dataset_with_label_studio_tasks_and_imports_once(
    store: S3Store,
) -> None:
    items = [_detected(store, index) for index in range(4)]
    policy = ReviewPolicy(below=0.5, labels=("cat", "dog", "bird"))
    routed = write_review(store, _record("detect", "J1"), policy, items)
    folder = parse_s3_uri(routed["folder"])
    assert routed == {"routed": 4, "folder": f"s3://{BUCKET}/out/_review/J1/"}

    layout = read_layout(store, folder, "detect")
    records = [record for split in layout.splits.values() for record in split]
    assert len(records) == 4 and layout.labels == ["cat", "dog", "bird"]
    assert all(record.boxes[0] == (2.0, 3.0, 12.0, 15.5) for record in records)
    tasks = store.get_json(BUCKET, folder.key("tasks.json"))
    rectangle = tasks[0]["predictions"][0]["result"][0]
    assert rectangle["type"] == "rectanglelabels" and rectangle["original_width"] == 32
    assert rectangle["value"]["x"] == pytest.approx(100 * 2 / 32)
    assert rectangle["value"]["height"] == pytest.approx(100 * 12.5 / 24)
    assert '<RectangleLabels name="label" toName="image">' in store.get_text(
        BUCKET, folder.key("label_config.xml")
    )

    dataset = f"s3://{BUCKET}/datasets/boxes/"
    first = import_review(store, str(folder), dataset)
    assert (first.added, first.duplicates, first.skipped) == (4, 0, 0)
    again = import_review(store, str(folder), dataset)
    assert (again.added, again.duplicates) == (0, 4)
    grown = read_layout(store, parse_s3_uri(dataset), "detect")
    imported = [record for split in grown.splits.values() for record in split]
    assert len(imported) == 4 and sorted(grown.labels) == ["cat", "dog"]
    assert all(len(record.boxes) == 2 for record in imported)


def test_a_segment_review_copies_image_and_mask_and_checks_the_classes(store: S3Store) -> None:
    items = []
    for index in range(3):
        key, mask = f"in/field-{index}.png", f"out/field-{index}.png.mask.png"
        store.put_bytes(BUCKET, key, _png(10 + index))
        store.put_bytes(BUCKET, mask, _png(20 + index, mode="L"))
        result = {"mask": mask, "confidence": 0.5, "pixel_fraction": {"bg": 0.5, "crop": 0.5}}
        items.append(ReviewItem(0.5, key, "crop", {**result, "image_size": [32, 24]}))
    policy = ReviewPolicy(below=0.8, labels=("bg", "crop", "weed"))
    folder = parse_s3_uri(write_review(store, _record("segment", "J2"), policy, items)["folder"])
    layout = read_layout(store, folder, "segment")
    assert layout.labels == ["bg", "crop", "weed"]
    assert sum(len(split) for split in layout.splits.values()) == 3
    mask_key = layout.splits["train"][0].mask_key or layout.splits["val"][0].mask_key
    assert mask_key is not None and store.get_bytes(BUCKET, mask_key)[:4] == b"\x89PNG"

    dataset = f"s3://{BUCKET}/datasets/fields/"
    assert import_review(store, str(folder), dataset).added == 3
    assert import_review(store, str(folder), dataset).duplicates == 3
    store.put_json(BUCKET, "datasets/other/classes.json", ["bg", "tree"])
    with pytest.raises(ReviewImportError, match=r"differ from .*classes\.json"):
        import_review(store, str(folder), f"s3://{BUCKET}/datasets/other/")


def test_a_label_studio_export_decides_labels_and_skips(store: S3Store, tmp_path: Any) -> None:
    items = []
    for index in range(3):
        key = f"in/digit-{index}.png"
        store.put_bytes(BUCKET, key, _png(30 + index))
        result = {"label": "7", "score": 0.6, "top_k": [{"label": "7", "score": 0.6}]}
        items.append(ReviewItem(0.6, key, "7", result))
    folder = write_review(store, _record("classify", "J3"), ReviewPolicy(below=0.9), items)[
        "folder"
    ]
    tasks = store.get_json(BUCKET, parse_s3_uri(folder).key("tasks.json"))
    choices = ["1", None, "7"]  # the reviewer: relabel, skip, keep
    exported = []
    for number, (task, choice) in enumerate(zip(tasks, choices, strict=True)):
        annotation: dict[str, Any] = {"was_cancelled": choice is None, "result": []}
        if choice is not None:
            value = {"choices": [choice]}
            annotation["result"] = [{"type": "choices", "from_name": "label", "value": value}]
        exported.append({"id": number, "data": task["data"], "annotations": [annotation]})
    export = tmp_path / "export.json"
    export.write_text(json.dumps(exported))

    dataset = f"s3://{BUCKET}/datasets/digits/"
    report = import_review(store, folder, dataset, export=str(export))
    assert (report.added, report.skipped, dict(report.by_label)) == (2, 1, {"1": 1, "7": 1})
    layout = read_layout(store, parse_s3_uri(dataset), "classify")
    assert layout.labels == ["1", "7"]
    dry = import_review(
        store, folder, f"s3://{BUCKET}/datasets/empty/", export=str(export), dry_run=True
    )
    empty = parse_s3_uri(f"s3://{BUCKET}/datasets/empty/")
    assert dry.added == 2 and not list(store.list_objects(empty))
    with pytest.raises(ReviewImportError, match="not JSON"):
        export.write_text("{oops")
        import_review(store, folder, dataset, export=str(export))
