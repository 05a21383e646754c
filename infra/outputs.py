"""The output layout, a contract of worker and producer: item keys, job files, manifest lines.

An item's outputs mirror its key relative to the input prefix under the output
prefix (``incoming/a/cat.jpg`` -> ``<output>/a/cat.jpg.json``), so re-running
an item overwrites the same keys. Keys are confined to the output prefix. A
job's own files live under ``<output>/_jobs/<job_id>/`` (docs/output-layout.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from bucketvision.infra.s3 import S3Uri


def relative_key(input_prefix: S3Uri, key: str) -> str:
    """``key`` relative to the input prefix, with no way to climb out of a prefix."""
    relative = key[len(input_prefix.prefix) :] if key.startswith(input_prefix.prefix) else key
    parts = [part for part in relative.split("/") if part not in ("", ".", "..")]
    return "/".join(parts) or "_"


def item_output_key(input_prefix: S3Uri, output_prefix: S3Uri, key: str, suffix: str) -> str:
    """The output key for ``key`` with ``suffix`` (e.g. ``.json``, ``.mask.png``)."""
    return output_prefix.key(relative_key(input_prefix, key) + suffix)


JOB_FILES_FOLDER = "_jobs"
MANIFEST_FILE = "manifest.jsonl"
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"


def job_file_key(output_prefix: S3Uri, job_id: str, filename: str) -> str:
    """The key of one of a job's files (``MANIFEST_FILE``, ``SUMMARY_FILE``, ...)."""
    return output_prefix.key(JOB_FILES_FOLDER, job_id, filename)


def generated_image_key(output_prefix: S3Uri, job_id: str, index: int, seed: int) -> str:
    """``<output>/generated/<job_id>/<index>-seed<seed>.png``: stable for a job and item."""
    return output_prefix.key("generated", job_id, f"{index:06d}-seed{seed}.png")


def job_folder_uri(output_prefix: S3Uri, job_id: str) -> str:
    """``s3://bucket/<output>/_jobs/<job_id>/``: where a job's files are."""
    return f"s3://{output_prefix.bucket}/{output_prefix.key(JOB_FILES_FOLDER, job_id)}/"


def job_file_uri(output_prefix: S3Uri, job_id: str, filename: str) -> str:
    """``s3://bucket/<output>/_jobs/<job_id>/<filename>``."""
    return f"s3://{output_prefix.bucket}/{job_file_key(output_prefix, job_id, filename)}"


def manifest_line(
    key: str,
    *,
    status: str,
    output: str | None,
    result: dict[str, Any] | None,
    error: tuple[str, str] | None,
    model: str,
    latency_ms: float,
    attempts: int,
) -> dict[str, Any]:
    """One line of ``manifest.jsonl`` (docs/schemas/manifest-line.schema.json)."""
    return {
        "key": key,
        "status": status,
        "output": output,
        "result": result,
        "error": {"type": error[0], "message": error[1]} if error else None,
        "model": model,
        "latency_ms": round(latency_ms, 3),
        "attempts": attempts,
    }


def jsonl(records: Iterable[dict[str, Any]]) -> str:
    """JSON Lines that any reader splits right: U+0085, U+2028 and U+2029 (line breaks
    to ``str.splitlines`` and others) are escaped; other characters stay as they are."""
    return "".join(
        json.dumps(record, ensure_ascii=False)
        .replace("\u0085", "\\u0085")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
        + "\n"
        for record in records
    )


def parse_jsonl(text: str) -> list[dict[str, Any]]:
    """The records of a JSON Lines text; only ``\\n`` separates records."""
    return [json.loads(row) for row in text.split("\n") if row.strip()]
