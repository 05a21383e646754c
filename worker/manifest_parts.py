"""A job's manifest in S3: a part per recorded batch, composed into one file at the end.

A batch's manifest lines are written to ``<output>/_jobs/<id>/parts/<batch>.jsonl``
just before the batch is recorded in Redis, so a recorded batch always has its
part. Writing a part again (a redelivered batch) replaces it with lines for the
same keys. The finaliser streams the parts of the recorded batches, in batch
order, into ``manifest.jsonl`` with a multipart upload and tallies the summary
as they pass (:class:`worker.summary.SummaryTally`): it holds a few parts and one
upload part at a time, whatever the size of the job. Once the job has ended, its
parts and its plan are deleted.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from bucketvision.infra.job_plans import plan_key
from bucketvision.infra.outputs import (
    MANIFEST_FILE,
    job_file_key,
    jsonl,
    manifest_part_key,
    shadow_part_key,
)
from bucketvision.infra.s3 import ObjectMissing, S3Store, S3Uri, StorageError
from bucketvision.infra.s3_streams import MultipartWriter, delete_keys

log = logging.getLogger("bucketvision.worker")

READ_AHEAD = 16  # parts fetched ahead of the one being appended
READ_THREADS = 8


def write_part(
    store: S3Store, output: S3Uri, job_id: str, batch: int, lines: Iterable[dict[str, Any]]
) -> None:
    """PUT one batch's manifest lines as its part (before the batch is recorded)."""
    key = manifest_part_key(output, job_id, batch)
    store.put_bytes(output.bucket, key, jsonl(lines).encode(), "application/x-ndjson")


def _parts_in_order(
    store: S3Store, output: S3Uri, job_id: str, batches: Sequence[int]
) -> Iterator[bytes]:
    """The parts of ``batches`` in order, ``READ_AHEAD`` of them in flight at a time."""

    def fetch(batch: int) -> bytes:
        try:
            return store.get_bytes(output.bucket, manifest_part_key(output, job_id, batch))
        except ObjectMissing as error:
            raise StorageError(
                f"the manifest part of batch {batch} of job {job_id} is missing although the "
                f"batch is recorded ({error}; deleted by hand, or by a bucket lifecycle rule?)"
            ) from None

    with ThreadPoolExecutor(READ_THREADS, thread_name_prefix="bv-parts") as pool:
        pending: deque[Future[bytes]] = deque()
        upcoming = iter(batches)
        for batch in upcoming:
            pending.append(pool.submit(fetch, int(batch)))
            if len(pending) >= READ_AHEAD:
                break
        while pending:
            data = pending.popleft().result()
            for batch in upcoming:
                pending.append(pool.submit(fetch, int(batch)))
                break
            yield data


def compose_manifest(
    store: S3Store,
    output: S3Uri,
    job_id: str,
    batches: Sequence[int],
    observe: Callable[[dict[str, Any]], None],
) -> None:
    """Stream the parts of ``batches`` into ``manifest.jsonl``, handing each line to ``observe``.

    ``observe`` sees every line once, in manifest order (the summary's tally, review).
    """
    key = job_file_key(output, job_id, MANIFEST_FILE)
    with MultipartWriter(store, output.bucket, key, "application/x-ndjson") as writer:
        for data in _parts_in_order(store, output, job_id, batches):
            writer.write(data)
            for row in data.split(b"\n"):
                if row.strip():
                    observe(json.loads(row))


def delete_parts(
    store: S3Store, output: S3Uri, job_id: str, batches: Iterable[int], *, shadowed: bool = False
) -> None:
    """Delete an ended job's parts (``shadowed``: its shadow parts too) and plan; a failure is
    logged (they are only litter)."""
    names = [manifest_part_key(output, job_id, int(batch)) for batch in batches]
    if shadowed:
        names += [shadow_part_key(output, job_id, int(batch)) for batch in batches]
    try:
        delete_keys(store, output.bucket, [plan_key(output, job_id), *names])
    except StorageError as error:
        log.warning("job %s: its manifest parts and plan were not deleted: %s", job_id, error)
