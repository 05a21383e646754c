"""Objects too large to hold, on a real S3 endpoint (moto): streamed writes, ranges, deletes.

A job's plan and its manifest are written with :class:`MultipartWriter` (one PUT
when they fit in a part, a multipart upload beyond), read back a range at a time
(:func:`get_range`) or a line at a time (:func:`iter_json_lines`), and their
parts deleted a thousand keys a call (:func:`delete_keys`).
"""

from __future__ import annotations

import json
import secrets
from collections import Counter
from typing import Any

import numpy as np
import pytest
from botocore.exceptions import ClientError

from bucketvision.infra import s3_streams
from bucketvision.infra.s3 import ObjectMissing, S3Store, StorageError
from bucketvision.infra.s3_streams import (
    PART_BYTES,
    MultipartWriter,
    delete_keys,
    get_range,
    iter_json_lines,
)
from bucketvision.infra.settings import Settings

pytestmark = pytest.mark.integration

BUCKET = "it-streams"
MIB = 1 << 20


class _CountingClient:
    """A boto3 client that counts the calls made through it, by operation."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attribute(*args, **kwargs)

        return call


@pytest.fixture
def store(settings: Settings, s3_client: Any) -> S3Store:
    s3_client.create_bucket(Bucket=BUCKET)
    return S3Store(_CountingClient(S3Store.from_settings(settings).client))


def _calls(store: S3Store) -> Counter[str]:
    client: _CountingClient = store.client
    return client.calls


def _key(name: str) -> str:
    return f"{name}-{secrets.token_hex(4)}"


def _read(s3_client: Any, key: str) -> bytes:
    data: bytes = s3_client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return data


def _exists(s3_client: Any, key: str) -> bool:
    try:
        s3_client.head_object(Bucket=BUCKET, Key=key)
    except ClientError:
        return False
    return True


def test_a_small_object_is_one_put(store: S3Store, s3_client: Any) -> None:
    key = _key("small.jsonl")
    with MultipartWriter(store, BUCKET, key, "application/x-ndjson") as writer:
        for index in range(100):
            writer.write(b'{"batch":%d}\n' % index)
        assert writer.size == sum(len(b'{"batch":%d}\n' % i) for i in range(100))
    assert _calls(store) == Counter({"put_object": 1})
    assert _read(s3_client, key) == b"".join(b'{"batch":%d}\n' % i for i in range(100))
    head = s3_client.head_object(Bucket=BUCKET, Key=key)
    assert head["ContentType"] == "application/x-ndjson"


def test_an_empty_object_is_written_too(store: S3Store, s3_client: Any) -> None:
    key = _key("empty.jsonl")
    with MultipartWriter(store, BUCKET, key):
        pass
    assert _read(s3_client, key) == b""


def test_a_large_object_goes_up_in_parts_and_comes_back_whole(
    store: S3Store, s3_client: Any
) -> None:
    key = _key("large.bin")
    data = np.random.default_rng(7).integers(0, 256, 12 * MIB, dtype=np.uint8).tobytes()
    with MultipartWriter(store, BUCKET, key) as writer:
        for start in range(0, len(data), 3 * MIB // 2):  # chunks that straddle the parts
            writer.write(data[start : start + 3 * MIB // 2])
    assert writer.size == len(data) == 12 * MIB
    calls = _calls(store)
    assert calls["create_multipart_upload"] == 1 and calls["complete_multipart_upload"] == 1
    assert calls["upload_part"] == 2 and calls["put_object"] == 0, calls  # 9 MiB, then 3 MiB
    assert PART_BYTES == 8 * MIB  # S3's floor for all parts but the last is 5 MiB
    back = _read(s3_client, key)
    assert len(back) == len(data) and back == data
    boundary = 8 * MIB  # where the first part ends
    assert (
        get_range(store, BUCKET, key, boundary - 5, boundary + 5)
        == data[boundary - 5 : boundary + 5]
    )


@pytest.mark.parametrize("size", [10, 9 * MIB], ids=["one-put", "multipart"])
def test_an_error_inside_the_block_leaves_no_object(
    size: int, store: S3Store, s3_client: Any
) -> None:
    key = _key("aborted.bin")
    with (
        pytest.raises(RuntimeError, match="the producer failed"),
        MultipartWriter(store, BUCKET, key) as writer,
    ):
        writer.write(b"x" * size)
        raise RuntimeError("the producer failed")
    assert not _exists(s3_client, key)
    uploads = s3_client.list_multipart_uploads(Bucket=BUCKET, Prefix=key).get("Uploads", [])
    assert uploads == [], "the multipart upload was not aborted"
    calls = _calls(store)
    assert calls["put_object"] == 0 and calls["complete_multipart_upload"] == 0
    assert calls["abort_multipart_upload"] == (1 if size > PART_BYTES else 0)


def test_get_range_reads_exactly_the_bytes_asked_for(store: S3Store, s3_client: Any) -> None:
    key = _key("digits.txt")
    s3_client.put_object(Bucket=BUCKET, Key=key, Body=b"0123456789")
    assert get_range(store, BUCKET, key, 2, 5) == b"234"
    assert get_range(store, BUCKET, key, 0, 10) == b"0123456789"
    before = sum(_calls(store).values())
    assert get_range(store, BUCKET, key, 4, 4) == b"" and get_range(store, BUCKET, key, 5, 3) == b""
    assert sum(_calls(store).values()) == before  # an empty range asks S3 nothing
    with pytest.raises(StorageError, match="bytes 8-11"):
        get_range(store, BUCKET, key, 8, 12)  # past the end: fewer bytes than asked
    with pytest.raises(ObjectMissing):
        get_range(store, BUCKET, _key("absent"), 0, 3)


def test_delete_keys_deletes_in_groups(
    store: S3Store, s3_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(s3_streams, "_DELETE_GROUP", 3)
    prefix = _key("parts") + "/"
    names = [f"{prefix}{index:08d}.jsonl" for index in range(7)]
    for name in [*names, prefix + "keep.json"]:
        s3_client.put_object(Bucket=BUCKET, Key=name, Body=b"{}\n")
    assert delete_keys(store, BUCKET, iter(names)) == 7  # any iterable: a generator too
    assert _calls(store)["delete_objects"] == 3  # 3 + 3 + 1
    listed = s3_client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    assert [item["Key"] for item in listed] == [prefix + "keep.json"]
    assert delete_keys(store, BUCKET, []) == 0 and _calls(store)["delete_objects"] == 3


def test_iter_json_lines_streams_a_jsonl_object(store: S3Store, s3_client: Any) -> None:
    key = _key("manifest.jsonl")
    rows = [{"key": f"in/{i:05d}\u2028é.png", "pad": "x" * 300} for i in range(1000)]
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)  # > 64 KiB chunks
    s3_client.put_object(Bucket=BUCKET, Key=key, Body=("\n" + text + "\n").encode())
    assert list(iter_json_lines(store, BUCKET, key)) == rows  # blank lines skipped


def test_iter_json_lines_of_a_missing_object_says_so(store: S3Store) -> None:
    with pytest.raises(ObjectMissing, match="no such object"):
        next(iter_json_lines(store, BUCKET, _key("absent.jsonl")))
