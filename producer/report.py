"""``bucketvision report JOB_ID``: one self-contained HTML page about a finished job.

The job's output prefix comes from its Redis record, or from ``--output`` when
the record has expired. The report reads ``summary.json`` and
``manifest.jsonl`` from ``<output>/_jobs/<job_id>/``, fetches up to ``--limit``
images concurrently for the thumbnail grid, renders the page
(:mod:`producer.report_html`) and writes it beside them as ``report.html``.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bucketvision.infra.jobs import JobNotFound
from bucketvision.infra.outputs import (
    MANIFEST_FILE,
    REPORT_FILE,
    SUMMARY_FILE,
    job_file_key,
    job_file_uri,
    job_folder_uri,
    parse_jsonl,
)
from bucketvision.infra.s3 import ObjectMissing, S3Store, S3Uri, parse_s3_uri
from bucketvision.infra.settings import Settings
from bucketvision.infra.vocabulary import FINAL_STATES
from bucketvision.producer.cli_support import CommandError
from bucketvision.producer.report_data import ErrorGroup, ReportData
from bucketvision.producer.report_thumbs import Tile, label_colours, make_tile

DEFAULT_LIMIT = 48
EXAMPLES_PER_ERROR = 3
MAX_THREADS = 8  # each may hold one decoded image of up to BV_MAX_IMAGE_PIXELS


def locate_output(job_id: str, *, jobs: Any | None, output: str | None) -> S3Uri:
    """The job's output prefix: ``output`` when given, else the job record in Redis."""
    if output:
        return parse_s3_uri(output)
    if jobs is None:
        raise CommandError("give --output s3://BUCKET/PREFIX/ or a reachable BV_BROKER_URL")
    try:
        record = jobs.get(job_id)
    except JobNotFound:
        raise CommandError(
            f"no job {job_id!r} in Redis: check the id, or, if its record expired (30 days), "
            "pass --output s3://BUCKET/PREFIX/ (the job's output prefix)"
        ) from None
    if record.get("state") not in FINAL_STATES:
        raise CommandError(
            f"job {job_id} is {record.get('state')} ({record.get('done_batches', 0)}/"
            f"{record.get('batches', '?')} batches): the report needs the summary written "
            "when it finishes; wait for it (`bucketvision status`) and run report again"
        )
    return parse_s3_uri(str(record["output"]))


def load_job_files(
    store: S3Store, output: S3Uri, job_id: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``summary.json`` and the manifest lines under ``<output>/_jobs/<job_id>/``."""
    try:
        summary = store.get_json(output.bucket, job_file_key(output, job_id, SUMMARY_FILE))
        manifest = store.get_text(output.bucket, job_file_key(output, job_id, MANIFEST_FILE))
    except ObjectMissing as error:
        raise CommandError(
            f"no job files for {job_id} under {job_folder_uri(output, job_id)} ({error}); "
            "is the job finished, and is the output prefix right?"
        ) from None
    lines = parse_jsonl(manifest)
    return summary, lines


def group_errors(lines: list[dict[str, Any]]) -> list[ErrorGroup]:
    """Error lines grouped by type, the most frequent first."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for line in lines:
        if line.get("status") == "error":
            error = line.get("error") or {}
            entry = (str(line.get("key")), str(error.get("message", "")))
            groups.setdefault(str(error.get("type") or "Unknown"), []).append(entry)
    ranked = sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))
    return [ErrorGroup(kind, len(rows), rows[:EXAMPLES_PER_ERROR]) for kind, rows in ranked]


def pick_items(lines: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` lines for the grid, in manifest order: errors fill at most a quarter."""
    errors = [i for i, line in enumerate(lines) if line.get("status") == "error"]
    others = [i for i, line in enumerate(lines) if line.get("status") != "error"]
    chosen_errors = errors[: max(limit // 4, limit - len(others))]
    chosen = set(chosen_errors + others[: limit - len(chosen_errors)])
    return [line for i, line in enumerate(lines) if i in chosen]


def job_colours(task: str, lines: list[dict[str, Any]]) -> dict[str, tuple[int, int, int]]:
    """One colour per detected label over the whole job, so tiles agree."""
    if task != "detect":
        return {}
    labels = {
        str(found.get("label"))
        for line in lines
        for found in ((line.get("result") or {}).get("detections") or [])
    }
    return label_colours(sorted(labels))


def gather(
    job_id: str,
    *,
    store: S3Store,
    jobs: Any | None,
    output: str | None,
    settings: Settings,
    limit: int = DEFAULT_LIMIT,
) -> ReportData:
    """Read the job files and make the tiles (images fetched on a thread pool)."""
    prefix = locate_output(job_id, jobs=jobs, output=output)
    summary, lines = load_job_files(store, prefix, job_id)
    task = str(summary.get("task"))
    source = str(summary.get("input") or "")
    input_bucket = parse_s3_uri(source).bucket if source.startswith("s3://") else prefix.bucket
    colours = job_colours(task, lines)

    def fetch(bucket: str, key: str) -> bytes:
        return store.get_bytes(bucket, key, max_bytes=settings.max_object_bytes)

    def tile(line: dict[str, Any]) -> Tile:
        return make_tile(
            line,
            task=task,
            input_bucket=input_bucket,
            output_bucket=prefix.bucket,
            fetch=fetch,
            max_pixels=settings.max_image_pixels,
            colours=colours,
        )

    with ThreadPoolExecutor(max_workers=max(1, min(settings.io_threads, MAX_THREADS))) as pool:
        tiles = list(pool.map(tile, pick_items(lines, max(limit, 0))))
    uri = job_file_uri(prefix, job_id, REPORT_FILE)
    return ReportData(summary, lines, group_errors(lines), tiles, colours, uri)


def publish(store: S3Store, data: ReportData, html: str, save: str | None = None) -> str:
    """Write the page to S3 (and to ``save``); returns its ``s3://`` URI."""
    body = html.encode("utf-8")
    target = parse_s3_uri(data.uri, directory=False)
    store.put_bytes(target.bucket, target.prefix, body, "text/html; charset=utf-8")
    if save:
        Path(save).expanduser().parent.mkdir(parents=True, exist_ok=True)
        Path(save).expanduser().write_bytes(body)
    return data.uri


def run_report(args: argparse.Namespace, settings: Settings) -> int:
    """``bucketvision report``: write the page, print its S3 URI on stdout."""
    from bucketvision.infra.jobs import JobStore
    from bucketvision.producer.report_html import render_report

    store = S3Store.from_settings(settings)
    jobs = None if args.output else JobStore.from_url(settings.broker_url)
    data = gather(
        args.job_id, store=store, jobs=jobs, output=args.output, settings=settings, limit=args.limit
    )
    uri = publish(store, data, render_report(data), args.save)
    print(uri, flush=True)
    shown = sum(tile.image is not None for tile in data.tiles)
    saved = f"; saved {args.save}" if args.save else ""
    print(f"report of {len(data.lines)} items, {shown} thumbnails{saved}", file=sys.stderr)
    return 0
