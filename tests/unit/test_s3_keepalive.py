"""The bench S3 server's quicker timestamps: the same instants and the same bytes as moto's."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import boto3
import moto.core.serialize
import pytest
from botocore.utils import parse_to_aware_datetime
from moto import mock_aws

from tests.perf.s3_keepalive import aware_datetime, quicker_timestamps

VALUES: list[Any] = [
    "2026-12-05T21:04:17.000Z",  # what moto stores as a key's LastModified
    "2026-12-05T21:04:17Z",
    "2026-12-05T21:04:17.123456Z",
    "2026-12-05T21:04:17+02:00",  # no Z: botocore's own parser
    "Sat, 05 Dec 2026 21:04:17 GMT",  # an RFC 822 header date
    "1796504657",  # epoch seconds
    datetime(2026, 12, 5, 21, 4, 17),  # naive: UTC, as botocore assumes
    datetime(2026, 12, 5, 21, 4, 17, 500000, tzinfo=UTC),
]
FORMATS = ("iso8601", "iso8601_zeroed", "rfc822", "unixtimestamp")


@pytest.mark.parametrize("value", VALUES, ids=str)
def test_the_same_instant_as_botocore_reads(value: Any) -> None:
    ours, theirs = aware_datetime(value), parse_to_aware_datetime(value)
    assert ours == theirs
    assert ours.utcoffset() == theirs.utcoffset()
    serializer = moto.core.serialize.TimestampSerializer("iso8601")
    for name in FORMATS:
        convert = getattr(serializer, f"_timestamp_{name}")
        assert convert(ours) == convert(theirs), name


def test_a_listing_says_the_same_with_either_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    def listed_and_head() -> list[Any]:
        client = boto3.client("s3", region_name="us-east-1")
        listing = client.list_objects_v2(Bucket="bench")["Contents"]
        head = client.head_object(Bucket="bench", Key="a/1.png")
        return [entry["LastModified"] for entry in listing] + [head["LastModified"]]

    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="bench")
        for key in ("a/1.png", "a/2.png"):
            client.put_object(Bucket="bench", Key=key, Body=b"png")
        before = listed_and_head()
        monkeypatch.setattr(moto.core.serialize, "parse_to_aware_datetime", aware_datetime)
        assert listed_and_head() == before


def test_the_server_reads_timestamps_the_quick_way(monkeypatch: pytest.MonkeyPatch) -> None:
    original = moto.core.serialize.parse_to_aware_datetime
    monkeypatch.setattr(moto.core.serialize, "parse_to_aware_datetime", original)
    quicker_timestamps()
    assert moto.core.serialize.parse_to_aware_datetime is aware_datetime
