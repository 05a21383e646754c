"""The output layout, a contract of worker and producer: item keys, job files, manifest lines.

An item's outputs mirror its key relative to the input prefix under the output
prefix (``incoming/a/cat.jpg`` -> ``<output>/a/cat.jpg.json``), so re-running
an item overwrites the same keys. The mapping is one-to-one: a relative key is
used as it is, and a key that could not be used as it is (an empty, ``.`` or
``..`` segment, the reserved ``_jobs`` folder, outside the input prefix) is
refused with :class:`UnmappableKey` rather than rewritten, since any rewriting
would give two inputs one output. A job's own files live under
``<output>/_jobs/<job_id>/`` (docs/output-layout.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from bucketvision.infra.errors import UserError
from bucketvision.infra.s3 import S3Uri

JOB_FILES_FOLDER = "_jobs"
REVIEW_FOLDER = "_review"  # <output>/_review/<job_id>/: items routed to review (infra/review.py)
RESERVED_FOLDERS = (JOB_FILES_FOLDER, REVIEW_FOLDER)
# Every suffix an item output may carry. None ends another, so outputs with different
# suffixes never share a key, and with one suffix they share one only for one input.
ITEM_SUFFIXES = (".json", ".mask.png", ".annotated.png")


class UnmappableKey(UserError):
    """An input key with no output key of its own; the item becomes an error line."""


def _refusal(input_prefix: S3Uri, key: str) -> str | None:
    """Why ``key`` has no output key of its own, or None when it maps as it is."""
    if not key.startswith(input_prefix.prefix):
        return f"it is not under the input prefix {input_prefix.prefix!r}"
    segments = key[len(input_prefix.prefix) :].split("/")
    if any(segment in ("", ".", "..") for segment in segments):
        return (
            "its path has an empty, '.' or '..' segment (a doubled, leading or trailing '/'), "
            "so its outputs would share a key with another input's or leave the output prefix"
        )
    if segments[0] == JOB_FILES_FOLDER:
        return f"the {JOB_FILES_FOLDER}/ folder is reserved for the job files of the output prefix"
    if segments[0] == REVIEW_FOLDER:
        return f"the {REVIEW_FOLDER}/ folder is reserved for the items jobs route to review"
    return None


def mapping_error(input_prefix: S3Uri, key: str) -> tuple[str, str] | None:
    """``("UnmappableKey", message)`` for a key :func:`relative_key` refuses, else None."""
    reason = _refusal(input_prefix, key)
    if reason is None:
        return None
    message = (
        f"key {key!r} has no output key of its own: {reason}; rename the object "
        "(single '/' between non-empty names, no '.' or '..' names, "
        f"not under {JOB_FILES_FOLDER}/ or {REVIEW_FOLDER}/) and submit it again"
    )
    return (UnmappableKey.__name__, message)


def relative_key(input_prefix: S3Uri, key: str) -> str:
    """``key`` relative to the input prefix, as it is; raises UnmappableKey when it cannot be."""
    error = mapping_error(input_prefix, key)
    if error is not None:
        raise UnmappableKey(error[1])
    return key[len(input_prefix.prefix) :]


def item_output_key(input_prefix: S3Uri, output_prefix: S3Uri, key: str, suffix: str) -> str:
    """The output key for ``key`` with ``suffix`` (one of ``ITEM_SUFFIXES``)."""
    if suffix not in ITEM_SUFFIXES:
        raise ValueError(f"{suffix!r} is not in ITEM_SUFFIXES (outputs could collide)")
    return output_prefix.key(relative_key(input_prefix, key) + suffix)


MANIFEST_FILE = "manifest.jsonl"
PLAN_FILE = "plan.jsonl"  # the job's batch messages, one a line, while it runs
PARTS_FOLDER = "parts"  # each recorded batch's manifest lines, while the job runs
SHADOW_PARTS_FOLDER = "shadow"  # each recorded batch's shadow comparison (models.shadow)
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"


def job_file_key(output_prefix: S3Uri, job_id: str, filename: str) -> str:
    """The key of one of a job's files (``MANIFEST_FILE``, ``SUMMARY_FILE``, ...)."""
    return output_prefix.key(JOB_FILES_FOLDER, job_id, filename)


def manifest_part_key(output_prefix: S3Uri, job_id: str, batch: int) -> str:
    """``<output>/_jobs/<job_id>/parts/<batch>.jsonl``: one batch's manifest lines."""
    return job_file_key(output_prefix, job_id, f"{PARTS_FOLDER}/{batch:08d}.jsonl")


def shadow_part_key(output_prefix: S3Uri, job_id: str, batch: int) -> str:
    """``<output>/_jobs/<job_id>/shadow/<batch>.json``: one batch's shadow comparison."""
    return job_file_key(output_prefix, job_id, f"{SHADOW_PARTS_FOLDER}/{batch:08d}.json")


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
