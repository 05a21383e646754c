"""A job's plan: every batch message in S3, and where each one starts in Redis.

A job is fed to the broker in a window (``BV_JOB_WINDOW`` batches at a time): the
first batches are sent when it is submitted and each recorded batch sends the
next (:mod:`bucketvision.infra.jobs`), so the queue holds a window of a job, not
the job. The messages not yet sent, and the ones the lost-batch audit may have
to send again, are read back from the plan: ``<output>/_jobs/<id>/plan.jsonl``,
one message body a line, written once by the submitter in a streamed multipart
upload. Redis keeps only the byte offset where each batch's line starts
(``bv:job:<id>:offsets``, 8 bytes a batch), so reading batch ``b`` is one
GETRANGE and one ranged GET. The plan and the offsets are deleted when the job
ends.
"""

from __future__ import annotations

import json
import sys
from array import array
from collections.abc import Iterable, Iterator

import redis

from bucketvision.infra import keys
from bucketvision.infra.messages import JobMessage, MessageError, parse_job_message
from bucketvision.infra.outputs import PLAN_FILE, job_file_key
from bucketvision.infra.s3 import S3Store, S3Uri
from bucketvision.infra.s3_streams import MultipartWriter, get_range

OFFSET_BYTES = 8
_RUN_LIMIT = 1000  # batches read in one ranged GET at most


def plan_key(output: S3Uri, job_id: str) -> str:
    return job_file_key(output, job_id, PLAN_FILE)


def _big_endian(offsets: array) -> bytes:  # type: ignore[type-arg]
    if sys.byteorder == "little":
        offsets.byteswap()
    return offsets.tobytes()


def write_plan(
    store: S3Store,
    client: redis.Redis,
    job_id: str,
    output: S3Uri,
    messages: Iterable[JobMessage],
    *,
    ttl_seconds: int,
) -> int:
    """Write the messages to the job's plan in S3 and their offsets to Redis; how many.

    The offsets are written only once the plan object exists, so a job whose
    offsets are in Redis has a whole plan to read from.
    """
    offsets = array("Q", [0])
    with MultipartWriter(
        store, output.bucket, plan_key(output, job_id), "application/x-ndjson"
    ) as w:
        for message in messages:
            w.write(json.dumps(message.to_json(), separators=(",", ":")).encode() + b"\n")
            offsets.append(w.size)
    client.set(keys.job_plan_offsets(job_id), _big_endian(offsets), ex=ttl_seconds)
    return len(offsets) - 1


def _runs(batches: list[int]) -> Iterator[list[int]]:
    """Sorted batch indices grouped in runs of consecutive ones (at most ``_RUN_LIMIT``)."""
    run: list[int] = []
    for batch in batches:
        if run and (batch != run[-1] + 1 or len(run) >= _RUN_LIMIT):
            yield run
            run = []
        run.append(batch)
    if run:
        yield run


def read_plan(
    store: S3Store, client: redis.Redis, job_id: str, output: S3Uri, batches: Iterable[int]
) -> dict[int, JobMessage]:
    """The messages of ``batches`` from the job's plan, by batch index.

    Batches beyond the plan, or of a job whose offsets are gone (it ended), are left
    out; a plan that does not parse raises :class:`MessageError`.
    """
    wanted = sorted(set(batches))
    name = keys.job_plan_offsets(job_id)
    pipe = client.pipeline(transaction=False)
    for batch in wanted:
        pipe.getrange(name, batch * OFFSET_BYTES, (batch + 2) * OFFSET_BYTES - 1)
    bounds: dict[int, tuple[int, int]] = {}
    for batch, raw in zip(wanted, pipe.execute(), strict=True):
        if len(raw) == 2 * OFFSET_BYTES:
            bounds[batch] = (int.from_bytes(raw[:8], "big"), int.from_bytes(raw[8:], "big"))
    found: dict[int, JobMessage] = {}
    key = plan_key(output, job_id)
    for run in _runs(sorted(bounds)):
        start, end = bounds[run[0]][0], bounds[run[-1]][1]
        text = get_range(store, output.bucket, key, start, end)
        for batch in run:
            line = text[bounds[batch][0] - start : bounds[batch][1] - start]
            message = parse_job_message(json.loads(line))
            if message.batch != batch or message.job_id != job_id:
                raise MessageError(
                    f"the plan of job {job_id} holds batch {message.batch} of job "
                    f"{message.job_id} where batch {batch} should be; the plan is corrupt"
                )
            found[batch] = message
    return found
