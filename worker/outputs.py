"""Where results go: mirrored output keys and manifest lines.

An item's outputs mirror its key relative to the input prefix under the output
prefix (``incoming/a/cat.jpg`` -> ``<output>/a/cat.jpg.json``), so re-running
an item overwrites the same keys. Keys are confined to the output prefix.
"""

from __future__ import annotations

from typing import Any

from infra.s3 import S3Uri


def relative_key(input_prefix: S3Uri, key: str) -> str:
    """``key`` relative to the input prefix, with no way to climb out of a prefix."""
    relative = key[len(input_prefix.prefix) :] if key.startswith(input_prefix.prefix) else key
    parts = [part for part in relative.split("/") if part not in ("", ".", "..")]
    return "/".join(parts) or "_"


def item_output_key(input_prefix: S3Uri, output_prefix: S3Uri, key: str, suffix: str) -> str:
    """The output key for ``key`` with ``suffix`` (e.g. ``.json``, ``.mask.png``)."""
    return output_prefix.key(relative_key(input_prefix, key) + suffix)


def job_file_key(output_prefix: S3Uri, job_id: str, filename: str) -> str:
    return output_prefix.key("_jobs", job_id, filename)


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
    """One line of ``manifest.jsonl``, with exactly the fields of DESIGN."""
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
