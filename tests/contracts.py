"""The published output contracts (docs/schemas/*.schema.json) as validators for the tests.

``check_job_outputs`` reads a finished job's files from S3 and checks every
manifest line, the summary and each ok item's result (the manifest line's
``result`` and, where the task writes one, the item's ``.json`` object) against
the JSON Schemas users and tools rely on.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from tests.helpers import read_job

SCHEMAS = Path(__file__).resolve().parents[1] / "docs" / "schemas"
RESULT_SCHEMAS = {
    task: f"result-{task}.schema.json" for task in ("classify", "detect", "segment", "generate")
}


@cache
def validator(name: str) -> Draft202012Validator:
    """A draft 2020-12 validator of ``docs/schemas/<name>``."""
    schema = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def problems(name: str, document: Any) -> list[str]:
    """What is wrong with ``document`` under schema ``name``; empty when it conforms."""
    return [
        f"{'/'.join(str(part) for part in error.absolute_path) or '(root)'}: {error.message}"
        for error in validator(name).iter_errors(document)
    ]


def assert_conforms(name: str, document: Any, what: str = "") -> None:
    found = problems(name, document)
    assert not found, f"{what or name} breaks {name}: {found}\n{json.dumps(document)[:2000]}"


def check_job_outputs(
    s3_client: Any, bucket: str, output: str, job_id: str, task: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Check a finished job's manifest, summary and item results; returns (lines, summary).

    ``output`` is the output prefix inside ``bucket`` (``"detected/"``).
    """
    lines, summary = read_job(s3_client, bucket, output, job_id)
    assert_conforms("summary.schema.json", summary, f"summary of {job_id}")
    assert summary["task"] == task and summary["job_id"] == job_id
    assert summary["total"] == len(lines) == summary["ok"] + summary["error"] + summary["skipped"]
    for line in lines:
        assert_conforms("manifest-line.schema.json", line, f"manifest line {line.get('key')}")
        if line["status"] != "ok":
            continue
        assert_conforms(RESULT_SCHEMAS[task], line["result"], f"result of {line['key']}")
        if task == "generate":
            # No per-item JSON: the output is the generated image itself.
            assert line["output"] == f"s3://{bucket}/{line['result']['image']}"
            continue
        if line["output"] is None:  # --no-item-outputs
            continue
        item_bucket, item_key = line["output"][len("s3://") :].split("/", 1)
        item = json.loads(s3_client.get_object(Bucket=item_bucket, Key=item_key)["Body"].read())
        assert_conforms(RESULT_SCHEMAS[task], item, f"item file {line['output']}")
        assert item == {
            "key": line["key"],
            "model": line["model"],
            "task": task,
            **line["result"],
        }
    return lines, summary
