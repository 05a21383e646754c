"""``watch --move-to``: an ended job's inputs moved out of the drop folder.

An input is moved only after its job recorded its result, so the manifest is
what says where it goes: ``<move_to>`` for an ok line, ``<move_to>failed/`` with
an ``.error.json`` beside it for an error line. Nothing is deleted before its
copy is written (:meth:`infra.s3.S3Store.move`).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from bucketvision.infra.outputs import MANIFEST_FILE, UnmappableKey, job_file_key, relative_key
from bucketvision.infra.s3 import ObjectMissing, S3Store, S3Uri
from bucketvision.infra.s3_streams import iter_json_lines


def move_job_inputs(
    store: S3Store,
    where: tuple[S3Uri, S3Uri, S3Uri],
    job_id: str,
    report: Callable[[str], None],
) -> list[str]:
    """Move the inputs of the ended job ``job_id``; the keys moved.

    ``where`` is the watched input prefix, the output prefix (where the job's
    manifest is) and the ``--move-to`` prefix.
    """
    input_prefix, output, move_to = where
    manifest = job_file_key(output, job_id, MANIFEST_FILE)
    try:
        lines = list(iter_json_lines(store, output.bucket, manifest))
    except ObjectMissing:  # it ended without one (abandoned): its claims were released
        report(f"{job_id}: no manifest, nothing to move")
        return []
    moved: list[str] = []
    for line in lines:
        key = line["key"]
        try:
            relative = relative_key(input_prefix, key)
        except UnmappableKey as error:  # no name of its own under --move-to either
            report(f"{key!r} stays where it is: {error}")
            continue
        if line["status"] == "ok":
            target = move_to.key(relative)
        else:
            target = move_to.key("failed", relative)
            error = {"key": key, "job_id": job_id, "error": line["error"]}
            store.put_bytes(
                move_to.bucket,
                target + ".error.json",
                json.dumps(error).encode(),
                "application/json",
            )
        if store.move(input_prefix.bucket, key, move_to.bucket, target):
            moved.append(key)
    return moved
