"""docs/schemas: valid draft 2020-12 schemas that accept what the code writes and can fail.

The end-to-end check of real jobs is tests/e2e/test_model_families.py; here the
schemas meet the functions that build manifest lines and summaries, and
corrupted documents, so a schema that accepts anything would be caught.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from bucketvision.infra.outputs import manifest_line
from bucketvision.worker.summary import build_summary
from tests.contracts import RESULT_SCHEMAS, SCHEMAS, problems, validator

JOB_ID = "20261129T050102Z-1a2b3c4d"


def ok_line(**changes: Any) -> dict[str, Any]:
    line = manifest_line(
        "incoming/a/cat.png",
        status="ok",
        output="s3://photos/results/a/cat.png.json",
        result={"label": "7", "score": 0.98, "top_k": [{"label": "7", "score": 0.98}]},
        error=None,
        model="digits@v2",
        latency_ms=812.4049,
        attempts=1,
    )
    line.update(changes)
    return line


def error_line() -> dict[str, Any]:
    return manifest_line(
        "incoming/a/notes.jpg",
        status="error",
        output=None,
        result=None,
        error=("UnsupportedFormat", "not an image"),
        model="digits@v2",
        latency_ms=3.0,
        attempts=2,
    )


def summary(**record_changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "job_id": JOB_ID,
        "task": "classify",
        "model": "digits@v2",
        "input": "s3://photos/incoming/",
        "output": "s3://photos/results/",
        "total": 2,
        "submitted_at": 1000.0,
        "started_at": 1001.5,
        "stage_download": 0.5,
        "stage_infer": 1.0,
    }
    record.update(record_changes)
    return build_summary(record, [ok_line(), error_line()], finished_at=1003.0)


def test_every_schema_is_a_valid_draft_2020_12_schema() -> None:
    names = sorted(path.name for path in SCHEMAS.glob("*.schema.json"))
    assert names == sorted(
        ["manifest-line.schema.json", "summary.schema.json", *RESULT_SCHEMAS.values()]
    )
    for name in names:
        schema = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        validator(name)  # check_schema raises on an invalid schema


def test_the_lines_and_summaries_the_code_builds_conform() -> None:
    assert problems("manifest-line.schema.json", ok_line()) == []
    assert problems("manifest-line.schema.json", error_line()) == []
    assert problems("manifest-line.schema.json", ok_line(output=None)) == []  # no item outputs
    assert problems("summary.schema.json", summary()) == []
    failed = summary(failure="model digits@v2 could not be loaded")
    assert failed["state"] == "failed" and problems("summary.schema.json", failed) == []
    generate = summary(task="generate", input="seed 42", started_at=None)
    assert problems("summary.schema.json", generate) == []


def test_cancelled_and_retried_jobs_have_summaries_that_conform() -> None:
    """Issue 14: a cancelled job's summary says so and counts what never ran; a retry
    names its job; a job id chosen with ``submit --job-id`` is a valid id."""
    cancelled = summary(state="cancelling", total=5)
    assert (cancelled["state"], cancelled["not_run"]) == ("cancelled", 3)
    assert problems("summary.schema.json", cancelled) == []
    retried = summary(retry_of=JOB_ID, job_id="nightly-2026.12_03")
    assert retried["retry_of"] == JOB_ID and problems("summary.schema.json", retried) == []
    assert problems("summary.schema.json", summary() | {"not_run": 1})  # only when cancelled
    assert problems("summary.schema.json", cancelled | {"job_id": "../x"})
    no_count = {key: value for key, value in cancelled.items() if key != "not_run"}
    assert problems("summary.schema.json", no_count)


@pytest.mark.parametrize(
    ("corrupt", "why"),
    [
        (lambda line: line.pop("status"), "'status' is a required property"),
        (lambda line: line.update(status="done"), "status"),
        (lambda line: line.update(attempts="1"), "attempts"),
        (lambda line: line.update(attempts=0), "attempts"),
        (lambda line: line.update(model="digits"), "model"),
        (lambda line: line.update(extra=1), "Additional properties"),
        (lambda line: line.update(error={"type": "X", "message": "m"}), "error"),
        (lambda line: line.update(result=None), "result"),
        (lambda line: line.update(latency_ms=-1), "latency_ms"),
    ],
)
def test_a_corrupted_manifest_line_is_rejected(corrupt: Any, why: str) -> None:
    line = ok_line()
    corrupt(line)
    found = problems("manifest-line.schema.json", line)
    assert found and any(why in problem for problem in found), found


def test_an_error_line_must_say_why_and_carry_no_result() -> None:
    no_reason = error_line() | {"error": None}
    assert problems("manifest-line.schema.json", no_reason)
    with_result = error_line() | {"result": {"label": "7"}}
    assert problems("manifest-line.schema.json", with_result)
    loose_error = error_line() | {"error": {"type": "X", "message": "m", "trace": "..."}}
    assert problems("manifest-line.schema.json", loose_error)


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda document: document.pop("ok"),
        lambda document: document.update(state="running"),
        lambda document: document["latency_ms"].pop("p99"),
        lambda document: document["stage_seconds"].update(queue=1.0),
        lambda document: document.update(submitted_at="yesterday"),
        lambda document: document.update(failure="why"),  # a finished job has no failure
        lambda document: document.update(total=-1),
    ],
)
def test_a_corrupted_summary_is_rejected(corrupt: Any) -> None:
    document = summary()
    corrupt(document)
    assert problems("summary.schema.json", document)


RESULTS = {
    "classify": {
        "label": "cat",
        "score": 0.91,
        "top_k": [{"label": "cat", "score": 0.91}, {"label": "dog", "score": 0.09}],
        "image_size": [640, 480],
    },
    "detect": {
        "detections": [{"label": "circle", "score": 0.9731, "box": [412.5, 96.0, 530.1, 214.8]}],
        "annotated": "results/2026/street/a.jpg.annotated.png",
        "image_size": [640, 480],
    },
    "segment": {
        "mask": "results/2026/street/a.jpg.mask.png",
        "classes": ["background", "circle"],
        "pixel_fraction": {"background": 0.9, "circle": 0.1},
        "image_size": [640, 480],
    },
    "generate": {
        "image": f"samples/generated/{JOB_ID}/000003-seed45.png",
        "seed": 45,
        "label": "3",
    },
}
BROKEN = {
    "classify": lambda result: result.update(score=1.5),
    "detect": lambda result: result["detections"][0].update(box=[1.0, 2.0, 3.0]),
    "segment": lambda result: result.pop("mask"),
    "generate": lambda result: result.update(seed="45"),
}


@pytest.mark.parametrize("task", list(RESULT_SCHEMAS))
def test_result_schemas_accept_the_documented_shape_and_reject_a_broken_one(task: str) -> None:
    name = RESULT_SCHEMAS[task]
    assert problems(name, RESULTS[task]) == []
    broken = copy.deepcopy(RESULTS[task])
    BROKEN[task](broken)
    assert problems(name, broken)
    assert problems(name, {**RESULTS[task], "unexpected": True})
    if task != "generate":
        item_file = {"key": "2026/street/a.jpg", "model": "m@v1", "task": task, **RESULTS[task]}
        assert problems(name, item_file) == []
        assert problems(name, {**item_file, "task": "other"})
        assert problems(name, {**RESULTS[task], "key": "2026/street/a.jpg"})  # key alone
