"""Bucket events for the drop folder: how ``watch --events`` learns of a new object at once.

An S3-compatible store announces each new object: AWS S3 to an SQS queue (directly, or
through SNS or EventBridge), MinIO to a Redis list in its ``access`` format. A source
here reads those announcements and hands the watcher each object's key, ETag and event
time; the watcher claims key + ETag exactly as for a listing, so an event repeated
(SQS delivers at least once) is a no-op, and one dropped (MinIO drops events when its
queue is full) is found by the reconciliation listing that still runs on a slower clock.

- ``sqs://HOST/ACCOUNT/QUEUE``: the queue ``https://HOST/ACCOUNT/QUEUE``, long-polled;
  a message is deleted only once its objects are claimed and enqueued (or were claimed
  before), so a watcher that dies first leaves it to be delivered again.
  ``BV_SQS_ENDPOINT_URL`` replaces ``https://HOST`` (a local stack, moto, LocalStack).
- ``redis://[:PASSWORD@]HOST:PORT/DB/LIST`` (or ``rediss://``): MinIO's Redis target in
  the ``access`` format, one JSON entry per event pushed onto ``LIST``; the watcher pops
  them. An entry popped by a watcher that dies before enqueuing is found by reconciliation.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote_plus, urlsplit

import redis
from botocore.exceptions import BotoCoreError, ClientError

from bucketvision.infra.errors import EXIT_UNAVAILABLE, UserError
from bucketvision.infra.s3 import make_client
from bucketvision.infra.s3_errors import StorageUnavailable, is_transient
from bucketvision.infra.settings import Settings, redact_url

if TYPE_CHECKING:
    from bucketvision.infra.s3 import S3Store
    from bucketvision.producer.watch_claims import Claims

log = logging.getLogger("bucketvision.watch")

MAX_MESSAGES = 10  # SQS's most per ReceiveMessage
REDIS_BATCH = 500  # entries popped from a MinIO list at a time


class EventSourceError(UserError):
    """``--events`` names no source this watcher can read."""


class EventSourceUnavailable(UserError):
    """The event source did not answer at start: the same command may work later."""

    exit_code = EXIT_UNAVAILABLE


@dataclass(frozen=True)
class BucketEvent:
    """One object created, as announced: where, which version, when (seconds since epoch)."""

    bucket: str
    key: str
    etag: str
    size: int
    time: float | None = None


@dataclass
class Received:
    """What one read returned: the objects announced, and how to acknowledge them."""

    events: list[BucketEvent] = field(default_factory=list)
    receipts: list[str] = field(default_factory=list)  # SQS receipt handles
    messages: int = 0  # messages or list entries read, events or not


class EventSource(Protocol):
    """Where bucket events come from (``--events``)."""

    def receive(self, wait_seconds: float) -> Received:
        """The next events, waiting up to ``wait_seconds`` for the first."""
        ...

    def acknowledge(self, received: Received) -> None:
        """``received``'s objects are claimed and enqueued: do not deliver them again."""
        ...


def _event_time(text: Any) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _from_record(record: dict[str, Any]) -> BucketEvent | None:
    """An S3 event record (AWS and MinIO share the shape); None unless an object was created."""
    name = str(record.get("eventName", ""))
    if not name.removeprefix("s3:").startswith("ObjectCreated:"):
        return None
    s3 = record.get("s3") or {}
    found = s3.get("object") or {}
    if "key" not in found:
        return None
    return BucketEvent(
        bucket=str((s3.get("bucket") or {}).get("name", "")),
        key=unquote_plus(str(found["key"])),  # S3 events URL-encode the key
        etag=str(found.get("eTag") or found.get("etag") or "").strip('"'),
        size=int(found.get("size") or 0),
        time=_event_time(record.get("eventTime")),
    )


def _from_eventbridge(body: dict[str, Any]) -> BucketEvent | None:
    detail = body.get("detail") or {}
    found = detail.get("object") or {}
    if body.get("detail-type") != "Object Created" or "key" not in found:
        return None
    return BucketEvent(
        bucket=str((detail.get("bucket") or {}).get("name", "")),
        key=str(found["key"]),  # EventBridge does not URL-encode it
        etag=str(found.get("etag") or "").strip('"'),
        size=int(found.get("size") or 0),
        time=_event_time(body.get("time")),
    )


def parse_events(body: Any) -> list[BucketEvent]:
    """The objects created that a message announces, whatever wrapped it: S3's own
    ``{"Records": [...]}``, SNS's envelope around it, EventBridge's ``Object Created``, or a
    MinIO ``access`` entry ``[{"Event": [...], "EventTime": ...}]``. Anything else: none
    (S3's ``s3:TestEvent`` when a notification is configured, deletions, tagging)."""
    if isinstance(body, list):  # MinIO's access format
        return [
            event
            for entry in body
            if isinstance(entry, dict)
            for record in entry.get("Event") or []
            if isinstance(record, dict) and (event := _from_record(record)) is not None
        ]
    if not isinstance(body, dict):
        return []
    if body.get("Type") == "Notification" and isinstance(body.get("Message"), str):
        try:
            return parse_events(json.loads(body["Message"]))  # S3 -> SNS -> SQS
        except ValueError:
            return []
    if "detail-type" in body:
        event = _from_eventbridge(body)
        return [event] if event else []
    records = body.get("Records") or []
    return [
        event
        for record in records
        if isinstance(record, dict) and (event := _from_record(record)) is not None
    ]


def _decoded(text: str | bytes) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        log.warning("ignored a bucket event that is not JSON: %.120r", text)
        return None


class SqsEvents:
    """An SQS queue that S3 (or SNS, or EventBridge) sends the bucket's events to."""

    def __init__(self, client: Any, queue_url: str) -> None:
        self.client, self.queue_url = client, queue_url

    def _call(self, operation: str, **arguments: Any) -> Any:
        """One SQS call: network trouble and throttling are an outage (the watcher retries),
        anything else (no such queue, access denied) an error the user must fix."""
        try:
            return getattr(self.client, operation)(QueueUrl=self.queue_url, **arguments)
        except (ClientError, BotoCoreError) as error:
            if is_transient(error):
                raise StorageUnavailable(f"SQS {self.queue_url}: {error}") from error
            raise EventSourceError(
                f"--events: SQS queue {self.queue_url} refused {operation} ({error}); check the "
                "queue URL, BV_SQS_ENDPOINT_URL and the credentials' sqs: permissions"
            ) from error

    def check(self) -> None:
        """Fail at start, not at the first event, when the queue cannot be read."""
        self._call("get_queue_attributes", AttributeNames=["QueueArn"])

    def receive(self, wait_seconds: float) -> Received:
        answer = self._call(
            "receive_message",
            MaxNumberOfMessages=MAX_MESSAGES,
            WaitTimeSeconds=max(0, min(20, round(wait_seconds))),
        )
        received = Received()
        for message in answer.get("Messages", []):
            received.messages += 1
            received.receipts.append(message["ReceiptHandle"])
            received.events += parse_events(_decoded(message.get("Body", "")))
        return received

    def acknowledge(self, received: Received) -> None:
        for start in range(0, len(received.receipts), MAX_MESSAGES):
            chunk = received.receipts[start : start + MAX_MESSAGES]
            entries = [{"Id": str(i), "ReceiptHandle": handle} for i, handle in enumerate(chunk)]
            self._call("delete_message_batch", Entries=entries)


class RedisListEvents:
    """A Redis list that MinIO pushes the bucket's events onto (its ``access`` format)."""

    def __init__(self, client: redis.Redis, key: str) -> None:
        self.client, self.key = client, key

    def receive(self, wait_seconds: float) -> Received:
        received = Received()
        first = self.client.blpop([self.key], timeout=max(wait_seconds, 0.01))
        if first is None:
            return received
        entries: Sequence[bytes] = [first[1], *(self.client.lpop(self.key, REDIS_BATCH) or [])]
        for entry in entries:
            received.messages += 1
            received.events += parse_events(_decoded(entry))
        return received

    def acknowledge(self, received: Received) -> None:
        """Nothing to do: entries leave the list when popped (reconciliation is the net)."""


def open_event_source(uri: str, settings: Settings) -> EventSource:
    """The source ``--events URI`` names; EventSourceError says which forms there are."""
    parts = urlsplit(uri)
    if parts.scheme == "sqs" and parts.netloc and parts.path.strip("/"):
        endpoint = settings.sqs_endpoint_url or f"https://{parts.netloc}"
        queue_url = endpoint.rstrip("/") + "/" + parts.path.strip("/")
        source = SqsEvents(make_client(settings, service="sqs", pool_size=4), queue_url)
        source.check()
        return source
    if parts.scheme in ("redis", "rediss"):
        database, _, key = parts.path.strip("/").partition("/")
        if database.isdigit() and key:
            base = parts._replace(path=f"/{database}").geturl()
            client = redis.Redis.from_url(base, socket_timeout=30, socket_connect_timeout=5)
            try:
                client.ping()  # unreachable: exit 3 now, not at the first cycle
            except redis.exceptions.AuthenticationError as error:
                raise EventSourceError(
                    f"--events: Redis refused the credentials ({error})"
                ) from None
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
                raise EventSourceUnavailable(
                    f"--events: cannot reach the Redis of {redact_url(uri)} ({error}); is it"
                    " running, and is the URI right? Run the command again once it answers"
                ) from error
            return RedisListEvents(client, key)
    raise EventSourceError(
        f"--events {uri!r}: use sqs://HOST/ACCOUNT/QUEUE (an SQS queue S3 notifies) or "
        "redis://HOST:PORT/DB/LIST (a MinIO Redis target in the access format)"
    )


def current_versions(
    store: S3Store, claims: Claims, events: Sequence[BucketEvent]
) -> list[BucketEvent]:
    """The events that may announce the object as it is now: a repeated event of a version
    overwritten since (its claim holds another ETag) is dropped once a HEAD shows it is not
    the current one, so an old event delivered late never runs the new bytes twice."""
    held = claims.etags([event.key for event in events])
    current = (
        event
        for event in events
        if held.get(event.key) in (None, event.etag)
        or store.etag(event.bucket, event.key) == event.etag
    )
    return list(current)


def acknowledge(source: EventSource, received: Received) -> None:
    """Acknowledge what was enqueued; a failure only means the events come again (no-ops)."""
    try:
        source.acknowledge(received)
    except (EventSourceError, StorageUnavailable) as error:
        log.warning("could not acknowledge %s bucket events: %s", received.messages, error)
