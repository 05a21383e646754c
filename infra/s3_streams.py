"""Objects too large to hold: byte ranges, streamed multipart uploads, bulk deletes.

A job's plan and its manifest grow with its items (a line per batch, a line per
item), so they are never built in memory: :class:`MultipartWriter` uploads what
it is given in parts of ``part_bytes`` (a single PUT when everything fits in one
part), and :func:`get_range` reads the slice a batch needs. They go through the
same boto3 client and the same error vocabulary as :class:`infra.s3.S3Store`, but for
:func:`get_range`: every batch sent reads its slice of the plan, so that GET goes
through :meth:`S3Store.get_range`, on the store's data plane (obstore) when it has one.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any

from botocore.exceptions import BotoCoreError

from bucketvision.infra.s3 import S3Store, StorageError

PART_BYTES = 8 << 20  # S3 wants every part but the last to be at least 5 MiB
_DELETE_GROUP = 1000  # the most keys one DeleteObjects call takes


def get_range(store: S3Store, bucket: str, key: str, start: int, end: int) -> bytes:
    """Bytes ``[start, end)`` of an object (an empty range reads nothing)."""
    if end <= start:
        return b""
    what = f"s3://{bucket}/{key} bytes {start}-{end - 1}"
    data = store.get_range(bucket, key, start, end)  # a batch's slice of its plan: hot path
    if len(data) != end - start:
        raise store.explain(
            ValueError(f"{len(data)} bytes came back for a range of {end - start}"), what
        )
    return data


def iter_json_lines(store: S3Store, bucket: str, key: str) -> Iterator[dict[str, Any]]:
    """The records of a JSON Lines object, read as a stream (a manifest of any size)."""
    what = f"s3://{bucket}/{key}"
    try:
        response = store.client.get_object(Bucket=bucket, Key=key)
    except Exception as error:
        raise store.explain(error, what) from error
    with contextlib.closing(response["Body"]) as stream:
        try:
            for row in stream.iter_lines(chunk_size=1 << 16):
                if row.strip():
                    yield json.loads(row)
        except (BotoCoreError, OSError) as error:
            raise store.explain(error, f"reading {what}") from error


def delete_keys(store: S3Store, bucket: str, keys: Iterable[str]) -> int:
    """Delete ``keys`` in groups of 1,000; returns how many were asked for."""
    group: list[str] = []
    count = 0

    def flush() -> None:
        what = f"deleting {len(group)} objects in s3://{bucket}"
        try:
            answer = store.client.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": key} for key in group], "Quiet": True}
            )
        except Exception as error:
            raise store.explain(error, what) from error
        if refused := answer.get("Errors"):
            first = refused[0]
            raise StorageError(
                f"{what}: {len(refused)} refused, e.g. {first.get('Key')}: "
                f"{first.get('Code')} {first.get('Message', '')}".rstrip()
            )
        group.clear()

    for key in keys:
        group.append(key)
        count += 1
        if len(group) == _DELETE_GROUP:
            flush()
    if group:
        flush()
    return count


class MultipartWriter:
    """Writes one object from chunks, holding at most about ``part_bytes`` at a time.

    Use as a context manager: the object exists once the block ends without an
    error; on an error the multipart upload is aborted and nothing is written.
    ``size`` counts the bytes written so far (the offset of the next write).
    """

    def __init__(
        self,
        store: S3Store,
        bucket: str,
        key: str,
        content_type: str = "application/octet-stream",
        part_bytes: int = PART_BYTES,
    ) -> None:
        self.store, self.bucket, self.key = store, bucket, key
        self.content_type, self.part_bytes = content_type, part_bytes
        self.size = 0
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []

    def __enter__(self) -> MultipartWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if error is None:
            self.close()
        else:
            self.abort()

    def write(self, data: bytes) -> None:
        self._buffer += data
        self.size += len(data)
        if len(self._buffer) >= self.part_bytes:
            self._upload_part()

    def close(self) -> None:
        """Finish the object: one PUT if it never filled a part, else the last part."""
        what = f"writing s3://{self.bucket}/{self.key}"
        if self._upload_id is None:
            self.store.put_bytes(self.bucket, self.key, bytes(self._buffer), self.content_type)
            self._buffer.clear()
            return
        if self._buffer or not self._parts:
            self._upload_part()
        try:
            self.store.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},
            )
        except Exception as error:
            self.abort()
            raise self.store.explain(error, what) from error
        self._upload_id = None

    def abort(self) -> None:
        """Drop what was uploaded so far (best effort: S3 lifecycle rules clean the rest)."""
        upload_id, self._upload_id = self._upload_id, None
        self._buffer.clear()
        if upload_id is None:
            return
        try:
            self.store.client.abort_multipart_upload(
                Bucket=self.bucket, Key=self.key, UploadId=upload_id
            )
        except Exception:  # the error being raised already says what went wrong
            return

    def _upload_part(self) -> None:
        what = f"writing s3://{self.bucket}/{self.key}"
        try:
            if self._upload_id is None:
                started = self.store.client.create_multipart_upload(
                    Bucket=self.bucket, Key=self.key, ContentType=self.content_type
                )
                self._upload_id = str(started["UploadId"])
            number = len(self._parts) + 1
            answer = self.store.client.upload_part(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=bytes(self._buffer),
            )
        except Exception as error:
            self.abort()
            raise self.store.explain(error, what) from error
        self._parts.append({"PartNumber": number, "ETag": answer["ETag"]})
        self._buffer.clear()
