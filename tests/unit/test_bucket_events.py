"""Bucket events: every shape a store sends is read alike; anything else is ignored."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bucketvision.infra.settings import Settings
from bucketvision.producer.watch_events import (
    BucketEvent,
    EventSourceError,
    Received,
    RedisListEvents,
    open_event_source,
    parse_events,
)


def _record(key: str, name: str = "ObjectCreated:Put", etag: str = "abc") -> dict[str, Any]:
    return {
        "eventName": name,
        "eventTime": "2026-12-03T10:00:00.500Z",
        "s3": {"bucket": {"name": "drops"}, "object": {"key": key, "size": 7, "eTag": etag}},
    }


def test_aws_records_are_decoded_with_their_key_unescaped() -> None:
    events = parse_events({"Records": [_record("in/a+photo%2B1.png", etag='"e1"')]})
    assert events == [BucketEvent("drops", "in/a photo+1.png", "e1", 7, 1796292000.5)]


def test_minio_access_format_and_its_s3_prefixed_names() -> None:
    entry = [{"Event": [_record("in/x.png", name="s3:ObjectCreated:Put")], "EventTime": "t"}]
    assert [event.key for event in parse_events(entry)] == ["in/x.png"]


def test_sns_envelope_and_eventbridge_are_unwrapped() -> None:
    sns = {"Type": "Notification", "Message": json.dumps({"Records": [_record("in/s.png")]})}
    bridge = {
        "detail-type": "Object Created",
        "time": "2026-12-03T10:00:01Z",
        "detail": {"bucket": {"name": "drops"}, "object": {"key": "in/e b.png", "etag": "e2"}},
    }
    assert [event.key for event in parse_events(sns)] == ["in/s.png"]
    assert parse_events(bridge) == [BucketEvent("drops", "in/e b.png", "e2", 0, 1796292001.0)]


@pytest.mark.parametrize(
    "body",
    [
        {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "drops"},
        {"Records": [_record("in/gone.png", name="ObjectRemoved:Delete")]},
        {"Records": [{"eventName": "ObjectCreated:Put", "s3": {}}]},
        {"detail-type": "Object Deleted", "detail": {"object": {"key": "k"}}},
        {"Type": "Notification", "Message": "not json"},
        "a string",
        None,
    ],
)
def test_what_announces_no_new_object_is_ignored(body: Any) -> None:
    assert parse_events(body) == []


@pytest.mark.parametrize(
    "uri",
    ["sqs://", "sqs://host-only", "http://example.com/queue", "redis://h:6379/events", "kafka://x"],
)
def test_an_unknown_event_source_says_which_forms_exist(uri: str) -> None:
    with pytest.raises(EventSourceError, match=r"use sqs://HOST/ACCOUNT/QUEUE .* or redis://"):
        open_event_source(uri, Settings())


class _FakeRedis:
    def __init__(self, entries: list[bytes]) -> None:
        self.entries = entries

    def blpop(self, keys: list[str], timeout: float) -> tuple[bytes, bytes] | None:
        return (b"k", self.entries.pop(0)) if self.entries else None

    def lpop(self, key: str, count: int) -> list[bytes] | None:
        taken, self.entries = self.entries[:count], self.entries[count:]
        return taken or None


def test_a_minio_list_is_drained_in_one_read_and_bad_entries_are_skipped() -> None:
    entry = json.dumps([{"Event": [_record("in/1.png")]}]).encode()
    source = RedisListEvents(_FakeRedis([entry, b"{not json", entry]), "bucketevents")  # type: ignore[arg-type]
    received = source.receive(0.1)
    assert received.messages == 3 and [e.key for e in received.events] == ["in/1.png"] * 2
    assert source.receive(0.1) == Received()


class _FailingSqs:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def get_queue_attributes(self, **_arguments: Any) -> Any:
        raise self.error


def test_a_missing_queue_is_an_error_to_fix_and_a_network_cut_an_outage() -> None:
    from botocore.exceptions import ClientError, EndpointConnectionError

    from bucketvision.infra.s3 import StorageUnavailable
    from bucketvision.producer.watch_events import SqsEvents

    missing = ClientError(
        {"Error": {"Code": "AWS.SimpleQueueService.NonExistentQueue", "Message": "no queue"}},
        "GetQueueAttributes",
    )
    with pytest.raises(EventSourceError, match="check the queue URL, BV_SQS_ENDPOINT_URL"):
        SqsEvents(_FailingSqs(missing), "https://sqs.example/1/q").check()
    cut = EndpointConnectionError(endpoint_url="https://sqs.example")
    with pytest.raises(StorageUnavailable):
        SqsEvents(_FailingSqs(cut), "https://sqs.example/1/q").check()


def test_an_unreachable_events_redis_is_named_with_exit_3_and_no_password() -> None:
    from bucketvision.producer.watch_events import EventSourceUnavailable

    with pytest.raises(EventSourceUnavailable, match="cannot reach the Redis of") as raised:
        open_event_source("redis://:secret@127.0.0.1:1/0/drop-events", Settings())
    assert raised.value.exit_code == 3 and "secret" not in str(raised.value)
